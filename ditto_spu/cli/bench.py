"""``ditto-spu bench``: every mode on the same model and input, side by side.

    ditto-spu bench --model bert-base --seq-len 128 --modes puma,mpcformer,ditto \\
        --json out.json --markdown out.md --plot plots/

Each mode is compiled (segments split by cost category) and run once on the 3-party
simulator; per mode it records wall time (the run only; compile time separately), bytes
sent per party, rounds, the modelled LAN / WAN time (cost model:
time = measured compute + max_party(bytes) / bandwidth + rounds × RTT; LAN 5 Gbps /
0.4 ms, WAN 400 Mbps / 40 ms) and a breakdown by category (embedding, linear, softmax,
gelu, layernorm, casts, other). The summary gives the ratios ditto/puma and
ditto/mpcformer.

``--embedding none`` (default) measures the transformer body from the embedding output
on (the paper-comparable setting: the one-hot embedding matmul is left out);
``--embedding onehot`` the whole model from the client's one-hot token matrix.
Weights are random (MPC cost does not depend on them); ``max_abs_err`` compares the
MPC output with the plaintext forward of the same mode as a sanity check.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ..models import MODEL_NAMES

# The command recorded in the results (``python -m ditto_spu.cli bench`` runs the same).
_PROGRAM = ["ditto-spu", "bench"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="benchmark modes (puma, mpcformer, ditto) side by side on one model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help=f"one of {', '.join(MODEL_NAMES)}")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per input (default 128)")
    p.add_argument(
        "--modes", default="puma,mpcformer,ditto",
        help="comma-separated modes, run in this order (default puma,mpcformer,ditto)",
    )
    p.add_argument("--layers", type=int, default=None, help="bench only the first N layers (default: all)")
    p.add_argument(
        "--embedding", choices=("none", "onehot"), default="none",
        help="none: transformer body from the embedding output (default); onehot: whole "
        "model from the one-hot token matrix",
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", default=None, help="policy JSON / config name (default: policy_default)")
    p.add_argument(
        "--no-kernels", dest="kernels", action="store_false",
        help="keep every op in SPU (no ditto-spu FXP32 matmul kernel), e.g. for an ablation",
    )
    p.add_argument("--json", dest="json_path", default=None, help="write the results to this JSON file")
    p.add_argument("--markdown", default=None, help="write the markdown tables to this file")
    p.add_argument("--plot", default=None, help="write the plot (PNG) into this directory")
    p.add_argument("--quiet", action="store_true", help="no progress display and no table on stdout")
    p.set_defaults(func=run)
    return p


def _progress_display(modes, quiet: bool):
    """(callback(mode, phase), context manager) showing one rich progress row per mode."""
    import contextlib

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    phases = ("trace", "compile", "reference", "share", "run", "done")  # or "failed"
    if quiet:
        return (lambda mode, phase: None), contextlib.nullcontext()
    console = Console(stderr=True)
    if not console.is_terminal:  # a log file: one plain line per phase
        import time

        t0 = time.perf_counter()

        def log_line(mode, phase):
            print(f"[{time.perf_counter() - t0:8.1f} s] {mode}: {phase}", file=sys.stderr, flush=True)

        return log_line, contextlib.nullcontext()
    bar = Progress(
        TextColumn("{task.fields[mode]:>10}"),
        BarColumn(),
        TextColumn("{task.fields[phase]:<10}"),
        TimeElapsedColumn(),
        console=console,
    )
    tasks = {m: bar.add_task("", total=len(phases) - 1, mode=m, phase="waiting", start=False) for m in modes}

    def callback(mode, phase):
        task = tasks[mode]
        if phase == "trace":
            bar.start_task(task)
        done = phases.index(phase) if phase in phases else 0
        bar.update(task, completed=done, phase=phase)
        if phase in ("done", "failed"):
            bar.stop_task(task)

    return callback, bar


def canonical_command(args) -> str:
    """The ``ditto-spu bench`` command line that reproduces ``args`` (recorded in the JSON)."""
    parts = [*_PROGRAM, "--model", args.model, "--seq-len", str(args.seq_len), "--modes", args.modes]
    if args.layers is not None:
        parts += ["--layers", str(args.layers)]
    parts += ["--embedding", args.embedding]
    if args.batch != 1:
        parts += ["--batch", str(args.batch)]
    if args.seed != 0:
        parts += ["--seed", str(args.seed)]
    if args.policy:
        parts += ["--policy", args.policy]
    if not args.kernels:
        parts += ["--no-kernels"]
    for flag, value in (("--json", args.json_path), ("--markdown", args.markdown), ("--plot", args.plot)):
        if value:
            parts += [flag, value]
    return " ".join(shlex.quote(p) for p in parts)


def run(args) -> int:
    from ..bench.harness import BenchConfig, run_bench
    from ..bench.report import markdown, plot

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    config = BenchConfig(
        model=args.model,
        modes=modes,
        seq_len=args.seq_len,
        layers=args.layers,
        embedding=args.embedding,
        batch=args.batch,
        seed=args.seed,
        policy=args.policy,
        kernels=args.kernels,
    )
    command = canonical_command(args)
    callback, display = _progress_display(modes, args.quiet)
    def save(result):
        if args.json_path:
            with open(args.json_path, "w") as f:
                json.dump(result.as_dict(), f, indent=1)
                f.write("\n")

    with display:
        result = run_bench(config, command=command, progress=callback, checkpoint=save)
    save(result)
    data = result.as_dict()
    for failure in result.meta.get("failures", []):
        print(f"ditto-spu bench: mode {failure['mode']} failed: {failure['error']}", file=sys.stderr)
    if not result.records:
        return 2
    text = markdown([data])
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.plot:
        path = plot(data, args.plot)
        if not args.quiet:
            print(f"plot: {path}", file=sys.stderr)
    if not args.quiet:
        print(text)
    return 1 if result.meta.get("failures") else 0
