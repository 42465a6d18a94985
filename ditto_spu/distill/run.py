"""One QAD run and one evaluation, end to end: what ``ditto-spu distill`` / ``eval`` do.

* :func:`parse_data_spec` — ``builtin`` | a text FILE | ``glue:TASK:DIR`` → a data spec;
* :func:`training_data` — (train, held-out) :class:`~.trainer.Batches` of a data spec;
* :func:`distill` — teacher + data + :class:`~.trainer.DistillConfig` → a run directory
  (checkpoints, ``student/`` with the mode and policy it was trained for, ``distill.json``)
  and the summary dict;
* :func:`evaluate` — a student against its FP32 teacher on held-out data (before / after
  QAD; embeddings, GLUE metrics or perplexity), optionally with secure runs.

Progress and notes go to ``log`` (a callable taking one line; default: standard error).
Bad input raises :class:`~ditto_spu.errors.DittoError` naming the option and what to do.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import DittoError

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def parse_data_spec(spec: str) -> dict:
    """``builtin`` | ``glue:TASK:DIR`` | an existing text file → ``{"kind": ..., ...}``."""
    if spec == "builtin":
        return {"kind": "builtin"}
    if spec.startswith("glue:"):
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise DittoError(f"--data {spec!r}: expected glue:TASK:DIR, e.g. glue:RTE:glue_data/RTE")
        return {"kind": "glue", "task": parts[1], "dir": parts[2]}
    if not Path(spec).is_file():
        raise DittoError(f"--data {spec!r}: not 'builtin', 'glue:TASK:DIR' or an existing text file")
    return {"kind": "file", "path": spec}


def load_teacher(teacher: str, data: dict, seed: int = 0):
    """The FP32 teacher; a sequence classifier with the task's labels for GLUE data."""
    from ..data import glue_task
    from ..models import load_model

    if data["kind"] == "glue":
        task = glue_task(data["task"])
        return load_model(teacher, task="sequence-classification", num_labels=task.num_labels, seed=seed)
    return load_model(teacher, seed=seed)


def task_kind(model, data: dict) -> str:
    """``causal-lm`` (GPT-2), ``classification`` (GLUE) or ``embedding``."""
    from ..models import model_family

    if model_family(model) == "gpt2":
        return "causal-lm"
    return "classification" if data["kind"] == "glue" else "embedding"


def extra_sentences(spec: str, held_out) -> list[str]:
    """Training sentences of ``--extra-text``: ``stdlib`` (the standard library's
    docstrings) or a text FILE; never a held-out sentence."""
    from ..data import docstring_sentences, read_text

    held = set(held_out)
    if spec == "stdlib":
        return docstring_sentences(exclude=held)
    if not Path(spec).is_file():
        raise DittoError(f"--extra-text {spec!r}: not 'stdlib' or an existing text file")
    return [s for s in read_text(spec) if s not in held]


def held_out_texts(data: dict) -> list[str]:
    """The held-out sentences of unlabeled data (the fixed builtin set, or a file's split)."""
    from ..data import builtin_corpus, read_text, train_held_out_split

    if data["kind"] == "builtin":
        return list(builtin_corpus().held_out)
    if data["kind"] == "file":
        return list(train_held_out_split(read_text(data["path"]))[1])
    raise DittoError("held-out texts exist for unlabeled data (builtin or a text file), not GLUE")


def training_data(data: dict, seq_len: int, tokenizer, max_train=None, max_held=None, windows: int = 0,
                  seed: int = 0, extra_text=None):
    """(train Batches, held-out Batches, description). ``windows``: that many random word
    spans of the training documents are added to the training set (unlabeled text only);
    ``extra_text``: more training sentences (:func:`extra_sentences`), after the data's own."""
    from ..data import builtin_corpus, glue_task, load_glue, random_windows, read_text, train_held_out_split
    from .student import encode_texts
    from .trainer import Batches

    if data["kind"] == "glue":
        if windows or extra_text:
            raise DittoError("--windows / --extra-text add unlabeled text spans: use them with --data builtin "
                             "or a text file, not GLUE")
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
        extra = extra_sentences(extra_text, held)
        train = train + extra
        desc += f", +{len(extra)} sentences of --extra-text {extra_text}"
    return (
        Batches.from_encoded(encode_texts(tokenizer, train, seq_len)),
        Batches.from_encoded(encode_texts(tokenizer, held, seq_len)),
        desc,
    )


def task_metrics(ref, judged: dict, prefix: str = "", log: Log = _stderr) -> dict:
    """Semantic-search metrics of each judged set of embeddings vs the teacher's ``ref``:
    ``{prefix}neighbour_agreement_{key}`` and ``{prefix}similarity_spearman_{key}``
    (None, with a note to ``log``, when they are undefined: fewer than 3 sentences,
    non-finite embeddings)."""
    from ..metrics import embedding_task_metrics

    out = {}
    for key, emb in judged.items():
        try:
            m = embedding_task_metrics(emb, ref)
        except ValueError as e:
            log(f"neighbour metrics ({key}) not computed: {e}")
            m = {"top1_neighbour_agreement": None, "similarity_spearman": None}
        out[f"{prefix}neighbour_agreement_{key}"] = m["top1_neighbour_agreement"]
        out[f"{prefix}similarity_spearman_{key}"] = m["similarity_spearman"]
    return out


def embedding_summary_line(n: int, cosine: tuple, agreement: tuple, spearman: tuple) -> str:
    """One human-readable line: before → after vs the FP32 teacher."""
    def f(pair, digits):
        return " → ".join("n/a" if v is None else f"{v:.{digits}f}" for v in pair)

    return (f"held-out embeddings vs FP32 teacher, {n} sentences, before → after QAD: "
            f"mean cosine {f(cosine, 4)}; top-1 neighbour agreement {f(agreement, 3)}; "
            f"pairwise-similarity Spearman {f(spearman, 4)}")


@dataclasses.dataclass
class DataOptions:
    """Which text a run trains and evaluates on (``--data`` and its companions)."""

    spec: str = "builtin"
    max_train: Optional[int] = None
    max_held_out: Optional[int] = None
    windows: int = 0
    extra_text: Optional[str] = None


def distill(teacher_name: str, data: DataOptions, cfg, out, *, time_budget_min: Optional[float] = None,
            evaluate_held_out: bool = True, progress: bool = True, log: Log = _stderr) -> dict:
    """Distil a student of ``teacher_name`` under ``cfg`` (a DistillConfig whose ``kind``
    is set from the teacher and data) into the run directory ``out``; return the summary
    (also written to ``out/distill.json``)."""
    from ..metrics import cosine_similarity
    from ..models.saved import write_run_settings
    from .student import tokenizer_for
    from .trainer import Distiller, save_student, summarize

    spec = parse_data_spec(data.spec)
    model = load_teacher(teacher_name, spec, cfg.seed)
    tokenizer = tokenizer_for(teacher_name, model)
    train, held, desc = training_data(spec, cfg.seq_len, tokenizer, data.max_train, data.max_held_out,
                                      windows=data.windows, seed=cfg.seed, extra_text=data.extra_text)
    cfg = dataclasses.replace(cfg, kind=task_kind(model, spec))
    out = Path(out)
    log(f"QAD: teacher {teacher_name}, mode {cfg.mode}, {desc}; {cfg.stage1_steps}+{cfg.stage2_steps} steps of "
        f"{cfg.batch_size}×{cfg.seq_len}, backend {cfg.backend} → {out}")
    distiller = Distiller(model, cfg, train, extra_ids=[held.input_ids])
    if distiller.init_report:
        log("quad-GeLU refit (RMS vs GeLU, before → after): " + ", ".join(
            f"L{r['layer']} {r['rms_gelu_vs_quad']:.3f}→{r['rms_gelu_vs_refit']:.3f}" for r in distiller.init_report))
    budget = None if time_budget_min is None else time_budget_min * 60.0
    result = distiller.run(out, time_budget_s=budget, progress=progress)
    summary = {"teacher": teacher_name, "data": data.spec, "config": cfg.to_dict(), **summarize(result),
               "refit": distiller.init_report}
    if cfg.kind == "embedding" and evaluate_held_out:
        t = distiller.outputs(model.params, held, student=False)
        before = distiller.outputs(model.params, held, student=True)
        start = distiller.outputs(distiller.initial_params, held, student=True)
        after = distiller.outputs(result.params, held, student=True)
        summary["held_out_cosine_before"] = float(cosine_similarity(t, before).mean())
        summary["held_out_cosine_at_start"] = float(cosine_similarity(t, start).mean())
        summary["held_out_cosine_after"] = float(cosine_similarity(t, after).mean())
        summary.update(task_metrics(t, {"before": before, "after": after}, prefix="held_out_", log=log))
        summary["held_out_cosine_backend"] = cfg.backend
        log(embedding_summary_line(len(held), (summary["held_out_cosine_before"], summary["held_out_cosine_after"]),
                                   (summary["held_out_neighbour_agreement_before"],
                                    summary["held_out_neighbour_agreement_after"]),
                                   (summary["held_out_similarity_spearman_before"],
                                    summary["held_out_similarity_spearman_after"])))
    if cfg.backend == "fast":
        # the secure run computes what the emulation does only while every value fits its ring
        head = distiller.range_headroom(result.params, held)
        sample = np.random.default_rng(cfg.seed).permutation(len(train))[:512]  # a sample: a forward per batch
        head_train = distiller.range_headroom(result.params, train.subset(sample))
        summary["fxp32_headroom_bits_min"] = {
            "held_out": round(min(head.values(), default=math.inf), 2),
            f"train_sample_{len(sample)}": round(min(head_train.values(), default=math.inf), 2),
        }
        summary["fxp32_tightest"] = {k: round(v, 2) for k, v in list(head.items())[:5]}
        if min(head.values(), default=math.inf) < 0:
            log("WARNING: on held-out text some FXP32 values leave their ring under this policy "
                f"({', '.join(k for k, v in head.items() if v < 0)}): the secure run will wrap there. "
                "Raise --range-weight or re-calibrate the policy for the student.")
    save_student(model, result.params, out / "student", tokenizer, extra=summary)
    write_run_settings(out / "student", cfg.mode, cfg.policy, teacher=teacher_name, seq_len=cfg.seq_len)
    (out / "distill.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def _range_report(report: dict, ev, emulated) -> None:
    """Add the after-QAD FXP32 headroom the emulator saw (when it was the backend)."""
    if emulated is None:
        return
    # the emulator wraps a value that leaves its ring, as the secure run does, but SPU's
    # truncation then fails too: the secure run matches the emulation only when all fits
    records = [r for r in ev.student_fn.report.records if r.ring.field == "FM32"]
    report["after_fxp32_headroom_bits_min"] = round(min((r.headroom_bits for r in records), default=math.inf), 2)
    report["after_fxp32_overflowing_scopes"] = sorted({r.scope for r in records if r.headroom_bits < 0})


def secure_check(student, teacher, teacher_name: str, texts, *, mode: str, policy, seq_len: int,
                 log: Log = _stderr) -> dict:
    """Run the student on ``texts`` in the 3-party simulation: secure output vs its
    emulation (cosine and relative L2 per text) and vs the FP32 teacher."""
    from ..infer import secure_inference

    emu, rel, fp32, walls = [], [], [], []
    for text in texts:
        r = secure_inference(student, mode, text, seq_len=seq_len, policy=policy,
                             model_name=teacher_name, reference_model=teacher)
        emu.append(r.cosine_emulation)
        rel.append(r.rel_l2_emulation)
        fp32.append(r.cosine_fp32)
        walls.append(r.wall_s)
        log(f"secure run {len(emu)}/{len(texts)}: vs emulation cosine {emu[-1]:.6f} / relative L2 {rel[-1]:.2e}, "
            f"vs FP32 teacher {fp32[-1]:.4f}, {walls[-1]:.1f} s")
    return {
        "secure_examples": len(emu),
        "secure_vs_emulation_min": float(np.min(emu)),
        "secure_vs_emulation_mean": float(np.mean(emu)),
        "secure_vs_emulation_rel_l2_max": float(np.max(rel)),
        "secure_vs_emulation_rel_l2_mean": float(np.mean(rel)),
        "secure_vs_fp32_teacher_mean": float(np.mean(fp32)),
        "secure_wall_s_mean": float(np.mean(walls)),
    }


def evaluate(teacher_name: str, student_path: str, data_spec: str, *, mode: Optional[str] = None, policy=None,
             backend: str = "emulator", num: Optional[int] = None, secure: int = 0, seq_len: int = 64,
             batch_size: int = 32, seed: int = 0, log: Log = _stderr) -> dict:
    """The student vs its FP32 teacher on held-out data, before (teacher weights under the
    mode) and after QAD; ``mode`` / ``policy`` default to what the student records.
    ``secure``: also that many secure runs on held-out sentences (embedding students)."""
    from ..metrics import cosine_similarity, glue_metrics
    from ..models import load_model
    from ..models.saved import model_directory, read_run_settings
    from .student import tokenizer_for
    from .trainer import DistillConfig, Distiller

    data = parse_data_spec(data_spec)
    teacher = load_teacher(teacher_name, data, seed)
    kind = task_kind(teacher, data)
    if secure and kind != "embedding":
        raise DittoError("--secure checks sentence-embedding students on unlabeled text (builtin or a file)")
    student_dir = model_directory(student_path)
    settings = read_run_settings(student_dir)
    if mode is None:
        mode = settings.mode if settings else "ditto"
    if policy is None and settings is not None:
        policy = settings.policy
    task = "sequence-classification" if data["kind"] == "glue" else None
    student = load_model(str(student_dir), task=task)
    tokenizer = tokenizer_for(teacher_name, teacher)
    _, held, desc = training_data(data, seq_len, tokenizer, max_train=0, max_held=num)
    cfg = DistillConfig(kind=kind, mode=mode, policy=policy, backend=backend, init="teacher",
                        seq_len=seq_len, batch_size=batch_size, stage1_steps=1, stage2_steps=0)
    ev = Distiller(teacher, cfg, held)
    t0 = time.time()
    # the student as the user named it (a run directory, or a model name whose resolved
    # path would be a machine path in a shared report)
    report = {"teacher": teacher_name, "student": student_path, "mode": mode, "backend": backend,
              "data": desc, "examples": len(held)}
    emulated = getattr(ev.student_fn, "reset_report", None)  # the emulator's range report, if it is the backend
    if kind == "causal-lm":
        from ..metrics import perplexity

        n = 0
        for key, params, is_student in (("teacher", teacher.params, False), ("before", teacher.params, True),
                                        ("after", student.params, True)):
            if key == "after" and emulated is not None:
                emulated()
            nll, n = ev.next_token_nll(params, held, student=is_student, batch_size=min(batch_size, 8))
            report[f"perplexity_{key}"] = perplexity(nll, n)
        report["scored_tokens"] = n
        _range_report(report, ev, emulated)
        report["eval_seconds"] = round(time.time() - t0, 1)
        return report
    ref = ev.outputs(teacher.params, held, student=False, batch_size=batch_size)
    before = ev.outputs(teacher.params, held, student=True, batch_size=batch_size)
    if emulated is not None:
        emulated()
    after = ev.outputs(student.params, held, student=True, batch_size=batch_size)
    if kind == "embedding":
        cb, ca = cosine_similarity(ref, before), cosine_similarity(ref, after)
        report.update(cosine_before=float(cb.mean()), cosine_after=float(ca.mean()),
                      cosine_before_min=float(cb.min()), cosine_after_min=float(ca.min()))
        report.update(task_metrics(ref, {"before": before, "after": after}, log=log))
        log(embedding_summary_line(len(held), (report["cosine_before"], report["cosine_after"]),
                                   (report["neighbour_agreement_before"], report["neighbour_agreement_after"]),
                                   (report["similarity_spearman_before"], report["similarity_spearman_after"])))
    elif kind == "classification":
        from ..data import glue_task

        name = glue_task(data["task"]).name
        labels = held.labels
        for key, logits in (("teacher", ref), ("before", before), ("after", after)):
            report[key] = glue_metrics(name, labels, np.argmax(logits, -1))
        report["agreement_with_teacher_after"] = float(np.mean(np.argmax(after, -1) == np.argmax(ref, -1)))
    _range_report(report, ev, emulated)
    if secure:
        report.update(secure_check(student, teacher, teacher_name, held_out_texts(data)[:secure], mode=mode,
                                   policy=policy, seq_len=seq_len, log=log))
    report["eval_seconds"] = round(time.time() - t0, 1)
    return report
