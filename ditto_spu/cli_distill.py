"""``ditto-spu distill`` and ``ditto-spu eval``: quantization-aware distillation from the CLI.

::

    ditto-spu distill --teacher minilm --mode ditto --policy configs/policy_minilm_ditto.json \\
        --data builtin --extra-text stdlib --out runs/minilm --stage1-steps 1250 --stage2-steps 0 \\
        --lr-stage1 3e-4 --time-budget 18 --seq-len 64 --batch-size 16 --checkpoint-every 500
    ditto-spu eval --teacher minilm --student runs/minilm --mode ditto \\
        --policy configs/policy_minilm_ditto.json --data builtin --secure 8

(docs/distillation.md: the method, this run's results, what did not work.)

``--teacher``: ``minilm`` (real weights), ``tiny`` (random 2-layer BERT), or a HF model
directory (BERT or GPT-2; a fine-tuned classifier for GLUE). ``--data``: ``builtin``
(``pydoc_data.topics`` sentences, split by topic), a text FILE (split by a hash of each
sentence), ``glue:TASK:DIR`` (a GLUE task directory: train.tsv to distill, dev.tsv to
evaluate). The run directory gets ``checkpoint.msgpack`` / ``checkpoint.json`` (resumed
automatically with the same settings), ``student/`` (a HF model directory that
``load_model`` and the secure path take unchanged) and ``distill.json`` (summary).

``eval`` compares on held-out data: sentence embeddings → mean cosine similarity of the
student vs the FP32 teacher, and the semantic-search metrics (top-1 neighbour agreement
among the held-out sentences, Spearman correlation of their pairwise similarities; see
``ditto_spu.metrics.embedding_task_metrics``), BEFORE (the teacher's weights under the
mode) and AFTER QAD (the student's), evaluated by the reference fixed-point emulator by
default; GLUE → the
task metric (accuracy / Matthews / F1) of teacher, before and after; a GPT-2 teacher →
next-token perplexity of teacher, before and after on the held-out text. With the
emulator, the report also gives the smallest FXP32 headroom the student's values reached
(negative: a value left its ring, and the secure run would not match the emulation).

Also runnable as ``python -m ditto_spu.cli_distill {distill,eval} ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path


def _parse_data(spec: str) -> dict:
    if spec == "builtin":
        return {"kind": "builtin"}
    if spec.startswith("glue:"):
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise argparse.ArgumentTypeError(f"--data {spec!r}: expected glue:TASK:DIR, e.g. glue:RTE:glue_data/RTE")
        return {"kind": "glue", "task": parts[1], "dir": parts[2]}
    if not Path(spec).is_file():
        raise argparse.ArgumentTypeError(f"--data {spec!r}: not 'builtin', 'glue:TASK:DIR' or an existing text file")
    return {"kind": "file", "path": spec}


def _load_teacher(teacher: str, data: dict, seed: int):
    from .data import glue_task
    from .models import load_model

    if data["kind"] == "glue":
        task = glue_task(data["task"])
        return load_model(teacher, task="sequence-classification", num_labels=task.num_labels, seed=seed)
    model = load_model(teacher, seed=seed)
    return model


def _kind(model, data: dict) -> str:
    from .models import model_family

    if model_family(model) == "gpt2":
        return "causal-lm"
    return "classification" if data["kind"] == "glue" else "embedding"


def _extra_sentences(spec: str, held_out) -> list[str]:
    """Training sentences of ``--extra-text``: ``stdlib`` (the standard library's
    docstrings) or a text FILE; never a held-out sentence."""
    from .data import docstring_sentences, read_text

    held = set(held_out)
    if spec == "stdlib":
        return docstring_sentences(exclude=held)
    if not Path(spec).is_file():
        raise SystemExit(f"--extra-text {spec!r}: not 'stdlib' or an existing text file")
    return [s for s in read_text(spec) if s not in held]


def _texts(data: dict, seq_len: int, tokenizer, max_train=None, max_held=None, windows: int = 0, seed: int = 0,
           extra_text=None):
    """(train Batches, held-out Batches, description). ``windows``: that many random word
    spans of the training documents are added to the training set (unlabeled text only);
    ``extra_text``: more training sentences (:func:`_extra_sentences`), after the data's own."""
    from .data import builtin_corpus, glue_task, load_glue, random_windows, read_text, train_held_out_split
    from .distill.student import encode_texts
    from .distill.trainer import Batches

    if data["kind"] == "glue":
        if windows or extra_text:
            raise SystemExit("--windows / --extra-text add unlabeled text spans: use it with --data builtin or a text file, not GLUE")
        task = glue_task(data["task"])
        train = load_glue(task, data["dir"], "train")[:max_train]
        dev = load_glue(task, data["dir"], "dev")[:max_held]

        def enc(examples):
            b = [e.text_b for e in examples] if task.is_pair else None
            return Batches.from_encoded(
                encode_texts(tokenizer, [e.text_a for e in examples], seq_len, b),
                labels=[e.label for e in examples],
            )

        return enc(train), enc(dev), f"GLUE {task.name}: {len(train)} train, {len(dev)} dev"
    if data["kind"] == "builtin":
        corpus = builtin_corpus()
        train, held, src = list(corpus.train), list(corpus.held_out), corpus.source
        documents = corpus.train_documents
    else:
        train, held = train_held_out_split(read_text(data["path"]))
        src = data["path"]
        documents = [" ".join(train)]
    train, held = train[:max_train], held[:max_held]
    desc = f"{src}: {len(train)} train, {len(held)} held-out sentences"
    if windows:
        train = train + random_windows(documents, windows, seed=seed, max_words=max(4, min(48, (seq_len * 3) // 4)))
        desc += f", +{windows} random spans of the training documents"
    if extra_text:
        extra = _extra_sentences(extra_text, held)
        train = train + extra
        desc += f", +{len(extra)} sentences of --extra-text {extra_text}"
    return (
        Batches.from_encoded(encode_texts(tokenizer, train, seq_len)),
        Batches.from_encoded(encode_texts(tokenizer, held, seq_len)),
        desc,
    )


def _task_metrics(ref, judged: dict, prefix: str = "") -> dict:
    """Semantic-search metrics of each judged set of embeddings vs the teacher's ``ref``:
    ``{prefix}neighbour_agreement_{key}`` and ``{prefix}similarity_spearman_{key}``
    (None, with a note on stderr, when they are undefined: fewer than 3 sentences,
    non-finite embeddings)."""
    from .metrics import embedding_task_metrics

    out = {}
    for key, emb in judged.items():
        try:
            m = embedding_task_metrics(emb, ref)
        except ValueError as e:
            print(f"neighbour metrics ({key}) not computed: {e}", file=sys.stderr)
            m = {"top1_neighbour_agreement": None, "similarity_spearman": None}
        out[f"{prefix}neighbour_agreement_{key}"] = m["top1_neighbour_agreement"]
        out[f"{prefix}similarity_spearman_{key}"] = m["similarity_spearman"]
    return out


def _print_embedding_summary(n: int, cosine: tuple, agreement: tuple, spearman: tuple) -> None:
    """One human-readable line (stderr; stdout stays JSON): before → after vs the FP32 teacher."""
    def f(pair, digits):
        return " → ".join("n/a" if v is None else f"{v:.{digits}f}" for v in pair)

    print(f"held-out embeddings vs FP32 teacher, {n} sentences, before → after QAD: "
          f"mean cosine {f(cosine, 4)}; top-1 neighbour agreement {f(agreement, 3)}; "
          f"pairwise-similarity Spearman {f(spearman, 4)}", file=sys.stderr)


def _split_steps(args) -> tuple[int, int]:
    s1 = args.stage1_steps
    s2 = args.stage2_steps
    if s1 is None and s2 is None:
        s1 = args.steps // 2
        s2 = args.steps - s1
    return (s1 if s1 is not None else 0), (s2 if s2 is not None else 0)


def cmd_distill(args) -> int:
    import numpy as np

    from .distill.student import tokenizer_for
    from .distill.trainer import DistillConfig, Distiller, save_student, summarize
    from .metrics import cosine_similarity
    from .models.saved import write_run_settings

    data = _parse_data(args.data)
    model = _load_teacher(args.teacher, data, args.seed)
    tokenizer = tokenizer_for(args.teacher, model)
    train, held, desc = _texts(data, args.seq_len, tokenizer, args.max_train, args.max_held_out,
                               windows=args.windows, seed=args.seed, extra_text=args.extra_text)
    s1, s2 = _split_steps(args)
    cfg = DistillConfig(
        kind=_kind(model, data),
        mode=args.mode,
        policy=args.policy,
        backend=args.backend,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        stage1_steps=s1,
        stage2_steps=s2,
        lr_stage1=args.lr_stage1,
        lr_stage2=args.lr_stage2,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        init=args.init,
        train_word_embeddings=not args.freeze_word_embeddings,
        stage2_hidden_weight=args.stage2_hidden_weight,
        range_weight=args.range_weight,
        range_margin_bits=args.range_margin_bits,
        cosine_weight=args.cosine_weight,
        warmup_fraction=args.warmup_fraction,
    )
    out = Path(args.out)
    print(f"QAD: teacher {args.teacher}, mode {args.mode}, {desc}; {s1}+{s2} steps of "
          f"{args.batch_size}×{args.seq_len}, backend {args.backend} → {out}", file=sys.stderr)
    distiller = Distiller(model, cfg, train, extra_ids=[held.input_ids])
    if distiller.init_report:
        print("quad-GeLU refit (RMS vs GeLU, before → after): " + ", ".join(
            f"L{r['layer']} {r['rms_gelu_vs_quad']:.3f}→{r['rms_gelu_vs_refit']:.3f}" for r in distiller.init_report),
            file=sys.stderr)
    budget = None if args.time_budget is None else args.time_budget * 60.0
    result = distiller.run(out, time_budget_s=budget, progress=not args.no_progress)
    summary = {"teacher": args.teacher, "data": args.data, "config": cfg.to_dict(), **summarize(result),
               "refit": distiller.init_report}
    if cfg.kind == "embedding" and not args.skip_eval:
        t = distiller.outputs(model.params, held, student=False)
        before = distiller.outputs(model.params, held, student=True)
        start = distiller.outputs(distiller.initial_params, held, student=True)
        after = distiller.outputs(result.params, held, student=True)
        summary["held_out_cosine_before"] = float(cosine_similarity(t, before).mean())
        summary["held_out_cosine_at_start"] = float(cosine_similarity(t, start).mean())
        summary["held_out_cosine_after"] = float(cosine_similarity(t, after).mean())
        summary.update(_task_metrics(t, {"before": before, "after": after}, prefix="held_out_"))
        summary["held_out_cosine_backend"] = args.backend
        _print_embedding_summary(len(held), (summary["held_out_cosine_before"], summary["held_out_cosine_after"]),
                                 (summary["held_out_neighbour_agreement_before"],
                                  summary["held_out_neighbour_agreement_after"]),
                                 (summary["held_out_similarity_spearman_before"],
                                  summary["held_out_similarity_spearman_after"]))
    if cfg.backend == "fast":
        # the secure run computes what the emulation does only while every value fits its ring
        head = distiller.range_headroom(result.params, held)
        sample = np.random.default_rng(args.seed).permutation(len(train))[:512]  # a sample: the check is a forward per batch
        head_train = distiller.range_headroom(result.params, train.subset(sample))
        summary["fxp32_headroom_bits_min"] = {
            "held_out": round(min(head.values(), default=math.inf), 2),
            f"train_sample_{len(sample)}": round(min(head_train.values(), default=math.inf), 2),
        }
        summary["fxp32_tightest"] = {k: round(v, 2) for k, v in list(head.items())[:5]}
        if min(head.values(), default=math.inf) < 0:
            print("WARNING: on held-out text some FXP32 values leave their ring under this policy "
                  f"({', '.join(k for k, v in head.items() if v < 0)}): the secure run will wrap there. "
                  "Raise --range-weight or re-calibrate the policy for the student.", file=sys.stderr)
    save_student(model, result.params, out / "student", tokenizer, extra=summary)
    write_run_settings(out / "student", cfg.mode, cfg.policy, teacher=args.teacher, seq_len=args.seq_len)
    (out / "distill.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(json.dumps(summary, indent=2, default=float))
    return 0


def _range_report(report: dict, ev, emulated) -> None:
    """Add the after-QAD FXP32 headroom the emulator saw (when it was the backend)."""
    if emulated is None:
        return
    # the emulator wraps a value that leaves its ring, as the secure run does, but SPU's
    # truncation then fails too: the secure run matches the emulation only when all fits
    records = [r for r in ev.student_fn.report.records if r.ring.field == "FM32"]
    report["after_fxp32_headroom_bits_min"] = round(min((r.headroom_bits for r in records), default=math.inf), 2)
    report["after_fxp32_overflowing_scopes"] = sorted({r.scope for r in records if r.headroom_bits < 0})


def _secure_check(args, student, teacher, data, kind) -> dict:
    """Run the student on the first ``args.secure`` held-out texts in the 3-party simulation:
    secure output vs its emulation (cosine and relative L2 per text) and vs the FP32 teacher."""
    import numpy as np

    from .data import builtin_corpus, read_text, train_held_out_split
    from .infer import secure_inference

    if kind != "embedding" or data["kind"] == "glue":
        raise SystemExit("--secure checks sentence-embedding students on unlabeled text (builtin or a file)")
    texts = builtin_corpus().held_out if data["kind"] == "builtin" else train_held_out_split(read_text(data["path"]))[1]
    emu, rel, fp32, walls = [], [], [], []
    for text in list(texts)[: args.secure]:
        r = secure_inference(student, args.mode, text, seq_len=args.seq_len, policy=args.policy,
                             model_name=args.teacher, reference_model=teacher)
        emu.append(r.cosine_emulation)
        rel.append(r.rel_l2_emulation)
        fp32.append(r.cosine_fp32)
        walls.append(r.wall_s)
        print(f"secure run {len(emu)}/{args.secure}: vs emulation cosine {emu[-1]:.6f} / relative L2 {rel[-1]:.2e}, "
              f"vs FP32 teacher {fp32[-1]:.4f}, "
              f"{walls[-1]:.1f} s", file=sys.stderr)
    return {
        "secure_examples": len(emu),
        "secure_vs_emulation_min": float(np.min(emu)),
        "secure_vs_emulation_mean": float(np.mean(emu)),
        "secure_vs_emulation_rel_l2_max": float(np.max(rel)),
        "secure_vs_emulation_rel_l2_mean": float(np.mean(rel)),
        "secure_vs_fp32_teacher_mean": float(np.mean(fp32)),
        "secure_wall_s_mean": float(np.mean(walls)),
    }


def cmd_eval(args) -> int:
    import numpy as np

    from .distill.student import tokenizer_for
    from .distill.trainer import DistillConfig, Distiller
    from .metrics import cosine_similarity, glue_metrics
    from .models import load_model
    from .models.saved import model_directory, read_run_settings

    data = _parse_data(args.data)
    teacher = _load_teacher(args.teacher, data, args.seed)
    kind = _kind(teacher, data)
    student_dir = model_directory(args.student)
    settings = read_run_settings(student_dir)
    if args.mode is None:
        args.mode = settings.mode if settings else "ditto"
    if args.policy is None and settings is not None:
        args.policy = settings.policy
    task = "sequence-classification" if data["kind"] == "glue" else None
    student = load_model(str(student_dir), task=task)
    tokenizer = tokenizer_for(args.teacher, teacher)
    _, held, desc = _texts(data, args.seq_len, tokenizer, max_train=0, max_held=args.num)
    cfg = DistillConfig(kind=kind, mode=args.mode, policy=args.policy, backend=args.backend, init="teacher",
                        seq_len=args.seq_len, batch_size=args.batch_size, stage1_steps=1, stage2_steps=0)
    ev = Distiller(teacher, cfg, held)
    t0 = time.time()
    # the student as the user named it (a run directory, or a model name whose resolved
    # path would be a machine path in a shared report)
    report = {"teacher": args.teacher, "student": args.student, "mode": args.mode, "backend": args.backend,
              "data": desc, "examples": len(held)}
    emulated = getattr(ev.student_fn, "reset_report", None)  # the emulator's range report, if it is the backend
    if kind == "causal-lm":
        from .metrics import perplexity

        for key, params, is_student in (("teacher", teacher.params, False), ("before", teacher.params, True),
                                        ("after", student.params, True)):
            if key == "after" and emulated is not None:
                emulated()
            nll, n = ev.next_token_nll(params, held, student=is_student, batch_size=min(args.batch_size, 8))
            report[f"perplexity_{key}"] = perplexity(nll, n)
        report["scored_tokens"] = n
        _range_report(report, ev, emulated)
        report["eval_seconds"] = round(time.time() - t0, 1)
        print(json.dumps(report, indent=2, default=float))
        return 0
    ref = ev.outputs(teacher.params, held, student=False, batch_size=args.batch_size)
    before = ev.outputs(teacher.params, held, student=True, batch_size=args.batch_size)
    if emulated is not None:
        emulated()
    after = ev.outputs(student.params, held, student=True, batch_size=args.batch_size)
    if kind == "embedding":
        cb, ca = cosine_similarity(ref, before), cosine_similarity(ref, after)
        report.update(cosine_before=float(cb.mean()), cosine_after=float(ca.mean()),
                      cosine_before_min=float(cb.min()), cosine_after_min=float(ca.min()))
        report.update(_task_metrics(ref, {"before": before, "after": after}))
        _print_embedding_summary(len(held), (report["cosine_before"], report["cosine_after"]),
                                 (report["neighbour_agreement_before"], report["neighbour_agreement_after"]),
                                 (report["similarity_spearman_before"], report["similarity_spearman_after"]))
    elif kind == "classification":
        from .data import glue_task

        name = glue_task(data["task"]).name
        labels = held.labels
        for key, logits in (("teacher", ref), ("before", before), ("after", after)):
            report[key] = glue_metrics(name, labels, np.argmax(logits, -1))
        report["agreement_with_teacher_after"] = float(np.mean(np.argmax(after, -1) == np.argmax(ref, -1)))
    _range_report(report, ev, emulated)
    if args.secure:
        report.update(_secure_check(args, student, teacher, data, kind))
    report["eval_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(report, indent=2, default=float))
    return 0


def add_parsers(subparsers) -> None:
    """Register ``distill`` and ``eval`` on the ``ditto-spu`` subparsers."""
    p = subparsers.add_parser("distill", help="quantization-aware distillation of a student under a mode")
    p.add_argument("--teacher", required=True, help="minilm, tiny, or a HF model directory")
    p.add_argument("--mode", default="ditto")
    p.add_argument("--policy", default=None, help="ring policy JSON (default: configs/policy_default.json)")
    p.add_argument("--data", required=True, help="builtin | FILE | glue:TASK:DIR")
    p.add_argument("--out", required=True, help="run directory (checkpoints, student/, distill.json)")
    p.add_argument("--steps", type=int, default=200, help="total steps, split evenly over the two stages")
    p.add_argument("--stage1-steps", type=int, default=None, help="layer-wise stage steps (overrides --steps)")
    p.add_argument("--stage2-steps", type=int, default=None, help="prediction-layer stage steps")
    p.add_argument("--lr-stage1", type=float, default=2e-4)
    p.add_argument("--lr-stage2", type=float, default=5e-5)
    p.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                   help="stop cleanly (and checkpoint) after this many minutes")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--backend", default="fast", choices=("fast", "emulator", "plaintext"),
                   help="student forward during training (fast: jit float32 ring model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--init", default="refit", choices=("refit", "teacher"),
                   help="student start: per-unit quadratic refit of the GeLU (default) or the teacher's weights")
    p.add_argument("--stage2-hidden-weight", type=float, default=0.0,
                   help="stage 2 also adds this times the layer-wise hidden-state loss (a regulariser; default 0)")
    p.add_argument("--freeze-word-embeddings", action="store_true",
                   help="keep the teacher's word-embedding table (rows of tokens the training text lacks "
                        "then stay consistent with the rest)")
    p.add_argument("--range-weight", type=float, default=1.0,
                   help="weight of the penalty on values near their FXP32 limits (keeps the student inside "
                        "the policy's rings, as the secure run needs; 0 = off; fast backend)")
    p.add_argument("--range-margin-bits", type=float, default=1.0,
                   help="headroom in bits the range penalty keeps below each FXP32 limit (default 1)")
    p.add_argument("--windows", type=int, default=0, metavar="N",
                   help="add N random word spans of the training documents to the training set "
                        "(unlabeled text: more contexts than the sentences alone; default 0)")
    p.add_argument("--extra-text", default=None, metavar="SOURCE",
                   help="more training sentences: 'stdlib' (prose of the standard library's docstrings, "
                        "~13k sentences) or a text FILE; held-out sentences are never added")
    p.add_argument("--cosine-weight", type=float, default=1.0,
                   help="stage 2 (embeddings): weight of (1 - cosine) next to the relative MSE (default 1)")
    p.add_argument("--warmup-fraction", type=float, default=0.1,
                   help="fraction of each stage's steps spent warming the learning rate up (default 0.1)")
    p.add_argument("--max-train", type=int, default=None, help="use at most this many training examples")
    p.add_argument("--max-held-out", type=int, default=None)
    p.add_argument("--skip-eval", action="store_true", help="no held-out cosine / neighbour metrics at the end")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_distill)

    p = subparsers.add_parser("eval", help="student vs FP32 teacher on held-out data, before and after QAD")
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True, help="a distill run directory or a model directory")
    p.add_argument("--mode", default=None, help="default: the mode the student records (ditto_spu.json), else ditto")
    p.add_argument("--policy", default=None, help="default: the policy the student records, else the default policy")
    p.add_argument("--data", required=True, help="builtin | FILE | glue:TASK:DIR")
    p.add_argument("--backend", default="emulator", choices=("emulator", "fast", "plaintext"),
                   help="how the student is evaluated (default: the reference emulator)")
    p.add_argument("--num", type=int, default=None, help="at most this many held-out examples")
    p.add_argument("--secure", type=int, default=0, metavar="N",
                   help="also run the student on the first N held-out texts in the 3-party simulation and "
                        "compare with its emulation and the FP32 teacher (sentence embeddings)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_eval)


add_parser = add_parsers  # the name ditto_spu.cli looks for


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(prog="ditto-spu", description="QAD: distill and eval")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    from .errors import DittoError

    try:
        return int(args.func(args) or 0)
    except DittoError as e:
        print(f"ditto-spu {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
