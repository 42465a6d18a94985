"""The ``ditto-spu`` command.

Every subcommand first makes sure the process runs under the aligned allocator that
FM32 rings need (re-executing itself once with LD_PRELOAD if necessary).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _cmd_casts(args) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.markup import escape
    from rich.table import Table

    from .cast_report import STANDARD_PAIRS, measure_all
    from .kernels.base import registered_cast_kernels

    total = sum(
        1 for k in registered_cast_kernels() for s, d in STANDARD_PAIRS if k.applies(s, d)
    )
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=args.json and not sys.stderr.isatty()) as bar:
        task = bar.add_task("measuring cast kernels", total=total)
        results = measure_all(n=args.n, seed=args.seed, progress=lambda: bar.advance(task))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    table = Table(title=f"cast kernels, {args.n} values each (3-party simulation)")
    for col in ("kernel", "src", "dst", "max err (ulps)", "stated", "bits/elem", "rounds", "elem/s"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.kernel,
            escape(r.src),
            escape(r.dst),
            f"{r.max_err_ulps:.3g}",
            f"{r.stated_max_err_ulps:.3g}",
            f"{r.bits_per_element:.1f}",
            str(r.rounds),
            f"{r.elements_per_second:,.0f}",
        )
    Console(width=max(130, Console().width)).print(table)
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


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

    p = sub.add_parser("demo", help="run the main demonstration (secure mixed-ring inference)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_demo)

    for module_name in ("cli_compile",):
        try:
            module = __import__(f"{__package__}.{module_name}", fromlist=["add_parser"])
        except ImportError:
            continue
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
