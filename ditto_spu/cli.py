"""The ``ditto-spu`` command.

Every subcommand first makes sure the process runs under the aligned allocator that
FM32 rings need (re-executing itself once with LD_PRELOAD if necessary).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def _measure_and_print(args, label: str, total: int, measure, title: str, columns: tuple, row) -> int:
    """The kernel reports' shared frame: ``measure(progress)`` under a progress bar, then
    the results as JSON (``--json``) or as a table of ``row(result)`` cells."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    with Progress(console=Console(stderr=True), transient=True, disable=args.json and not sys.stderr.isatty()) as bar:
        task = bar.add_task(label, total=total)
        results = measure(lambda: bar.advance(task))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for r in results:
        table.add_row(*row(r))
    Console(width=max(130, Console().width)).print(table)
    return 0


def _cmd_casts(args) -> int:
    from rich.markup import escape

    from .cast_report import STANDARD_PAIRS, measure_all
    from .kernels.base import registered_cast_kernels

    total = sum(1 for k in registered_cast_kernels() for s, d in STANDARD_PAIRS if k.applies(s, d))
    return _measure_and_print(
        args,
        "measuring cast kernels",
        total,
        lambda progress: measure_all(n=args.n, seed=args.seed, progress=progress),
        f"cast kernels, {args.n} values each (3-party simulation)",
        ("kernel", "src", "dst", "max err (ulps)", "stated", "bits/elem", "rounds", "elem/s"),
        lambda r: (
            r.kernel,
            escape(r.src),
            escape(r.dst),
            f"{r.max_err_ulps:.3g}",
            f"{r.stated_max_err_ulps:.3g}",
            f"{r.bits_per_element:.1f}",
            str(r.rounds),
            f"{r.elements_per_second:,.0f}",
        ),
    )


def _cmd_kernels(args) -> int:
    from rich.markup import escape

    from .kernel_report import JOBS, measure_all

    return _measure_and_print(
        args,
        "measuring call kernels",
        JOBS,
        lambda progress: measure_all(scale=args.scale, seed=args.seed, progress=progress),
        f"call kernels at {args.scale:g} × one BERT-base layer's sizes (3-party simulation)",
        ("kernel", "ring", "input shape", "max error", "stated", "bits/output", "rounds", "outputs/s"),
        lambda r: (
            r.kernel,
            escape(r.ring),
            escape(r.shape),
            f"{r.max_error:.3g} {r.error_unit}",
            "—" if r.stated_max_error is None else f"{r.stated_max_error:.3g}",
            f"{r.bits_per_output:.1f}",
            str(r.rounds),
            f"{r.outputs_per_second:,.0f}",
        ),
    )


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def _cmd_infer(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from .infer import secure_inference
    from .models.saved import model_directory, read_run_settings

    # a distilled student runs in the mode and policy it was trained for, against its teacher
    settings = None
    if args.model and os.path.isdir(args.model):
        args.model = str(model_directory(args.model))
        settings = read_run_settings(args.model)
    mode = args.mode or (settings.mode if settings else "ditto")
    policy = args.policy or (settings.policy if settings else None)
    console = Console(stderr=True)
    if settings:
        console.print(f"{args.model}: mode {mode}, policy {'given' if args.policy else 'recorded'} "
                      f"({settings.source}), compared with teacher {settings.teacher}")
    with console.status("starting") as status:
        result = secure_inference(
            args.model,
            mode,
            args.text,
            seq_len=args.seq_len,
            policy=policy,
            emulate=not args.no_emulation,
            progress=lambda message: status.update(message),
            reference_model=settings.teacher if settings and settings.teacher else None,
            model_name=settings.teacher if settings and settings.teacher else None,
        )
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    out = Console()
    out.print(f"[bold]{result.model}[/bold] in mode [bold]{result.mode}[/bold], "
              f"{result.tokens} tokens (seq {result.seq_len}), output {result.output_kind} {list(result.output.shape)}")
    out.print(f"  cosine to plaintext FP32:      {result.cosine_fp32:.6f}")
    if result.cosine_emulation is not None:
        out.print(f"  cosine to plaintext emulation: {result.cosine_emulation:.6f} "
                  f"(relative L2 {result.rel_l2_emulation:.2e})")
    out.print(f"  wall {result.wall_s:.1f} s (compile {result.compile_s:.1f} s); bytes sent per party "
              f"{[f'{b / 1e6:.1f} MB' for b in result.bytes_sent]}; rounds <= {result.rounds}")
    out.print(f"  plan: {result.segments} SPU segments in {escape(', '.join(result.rings))}, {result.casts} ring casts")
    return 0


def _cmd_node(args) -> int:
    from .distributed.config import load_config
    from .distributed.node import serve

    return serve(load_config(args.config), args.rank, max_jobs=args.max_jobs)


def _cmd_run(args) -> int:
    from .distributed.config import load_config
    from .distributed.driver import run_plan

    config = load_config(args.config)
    if args.demo_plan:
        from .demo_plan import build_mixed_ring_plan, demo_inputs, plaintext_reference

        plan = build_mixed_ring_plan(low=config.low, high=config.high)
        inputs = demo_inputs()
        outputs, stats = run_plan(config, plan, inputs)
        expected = plaintext_reference(inputs)
        err = float(np.linalg.norm(outputs["y"] - expected) / np.linalg.norm(expected))
        report = {"relative_l2_error": err, **stats.summary()}
    else:
        from .deploy_models import run_model_on_nodes

        report = run_model_on_nodes(config, args)
    print(json.dumps(report, indent=2, default=float))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ditto-spu",
        description="Quantization-aware secure Transformer inference on SPU with mixed rings.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("casts", help="measure every registered ring-cast kernel")
    p.add_argument("--n", type=int, default=100_000, help="values per kernel (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_casts)

    p = sub.add_parser("kernels", help="measure the call kernels (matmul, multiply, max, cut-off, exp, division, rsqrt, sum)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of one BERT-base layer's sizes (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_kernels)

    p = sub.add_parser("demo", help="the main demonstration: secure MiniLM inference, correct with stock "
                       "weights (ditto-puma), against puma from the same run")
    p.add_argument("--small", action="store_true", help="the small hand-built mixed-ring plan instead")
    p.add_argument("--student", default=None, help="a distilled student (model directory from `ditto-spu distill`): "
                   "run it in ditto mode instead of the stock weights in ditto-puma mode")
    p.add_argument("--policy", default=None, help="precision policy (default: the shipped MiniLM policy of the mode)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("infer", help="one secure inference in simulation, compared with plaintext")
    p.add_argument("--model", default="minilm", help="minilm, bert-base, bert-large, gpt2-base, "
                   "gpt2-medium, tiny, tiny-gpt2, or a local checkpoint directory")
    p.add_argument("--mode", default=None, help="puma, mpcformer, ditto, ditto-puma, ditto-2quad, exact, or a mode "
                   "JSON (default: the mode a distilled student records, else ditto)")
    p.add_argument("--text", default="Secure inference keeps both the model and the input private.")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--policy", default=None, help="precision policy JSON (e.g. from `ditto-spu calibrate`)")
    p.add_argument("--no-emulation", action="store_true", help="skip the plaintext emulation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_infer)

    p = sub.add_parser("node", help="run one party of a three-node deployment")
    p.add_argument("--config", required=True, help="deployment config, e.g. configs/3pc.json")
    p.add_argument("--rank", type=int, required=True, help="this node's index in the config (0, 1, 2)")
    p.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    p.set_defaults(func=_cmd_node)

    p = sub.add_parser("run", help="drive one secure inference on a three-node deployment")
    p.add_argument("--config", required=True)
    p.add_argument("--demo-plan", action="store_true", help="run the small hand-built mixed-ring plan")
    p.add_argument("--model", default=None)
    p.add_argument("--mode", default="ditto")
    p.add_argument("--input", "--text", dest="text", default=None, help="input text")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--policy", default=None)
    p.set_defaults(func=_cmd_run)

    for module_name in ("cli_compile", "cli_calibrate", "cli_bench", "cli_distill"):
        try:
            module = __import__(f"{__package__}.{module_name}", fromlist=["add_parser"])
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{module_name}":
                raise
            continue
        if hasattr(module, "add_parsers"):
            module.add_parsers(sub)
        else:
            module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    from . import native

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    native.ensure_preloaded()
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import DittoError

    try:
        return int(args.func(args) or 0)
    except DittoError as e:
        print(f"ditto-spu {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
