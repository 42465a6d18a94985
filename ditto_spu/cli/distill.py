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

The work is :mod:`ditto_spu.distill.run`; this module parses the arguments and prints.
"""

from __future__ import annotations

import json
import sys


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _split_steps(args) -> tuple[int, int]:
    s1 = args.stage1_steps
    s2 = args.stage2_steps
    if s1 is None and s2 is None:
        s1 = args.steps // 2
        s2 = args.steps - s1
    return (s1 if s1 is not None else 0), (s2 if s2 is not None else 0)


def run_distill(args) -> int:
    from ..distill import DistillConfig
    from ..distill.run import DataOptions, distill

    s1, s2 = _split_steps(args)
    cfg = DistillConfig(
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
        length_buckets=not args.no_length_buckets,
    )
    data = DataOptions(spec=args.data, max_train=args.max_train, max_held_out=args.max_held_out,
                       windows=args.windows, extra_text=args.extra_text)
    summary = distill(args.teacher, data, cfg, args.out, time_budget_min=args.time_budget,
                      evaluate_held_out=not args.skip_eval, progress=not args.no_progress, log=_log)
    print(json.dumps(summary, indent=2, default=float))
    return 0


def run_eval(args) -> int:
    from ..distill.run import evaluate

    report = evaluate(args.teacher, args.student, args.data, mode=args.mode, policy=args.policy,
                      backend=args.backend, num=args.num, secure=args.secure, seq_len=args.seq_len,
                      batch_size=args.batch_size, seed=args.seed, log=_log)
    print(json.dumps(report, indent=2, default=float))
    return 0


def add_parser(subparsers) -> None:
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
    p.add_argument("--no-length-buckets", action="store_true",
                   help="every batch at the full --seq-len (default: batches of similar lengths cut to "
                        "16, 32, 64, ... tokens; the same losses, about twice the steps per minute on short text)")
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
    p.set_defaults(func=run_distill)

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
    p.set_defaults(func=run_eval)
