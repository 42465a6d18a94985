"""``ditto-spu casts`` and ``ditto-spu kernels``: every kernel measured, as a table or JSON."""

from __future__ import annotations

import json
import sys


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


def run_casts(args) -> int:
    from rich.markup import escape

    from ..bench.cast_kernels import STANDARD_PAIRS, measure_all
    from ..kernels.casts import registered_cast_kernels

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


def run_kernels(args) -> int:
    from rich.markup import escape

    from ..bench.call_kernels import JOBS, measure_all

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


def add_parser(sub) -> None:
    p = sub.add_parser("casts", help="measure every registered ring-cast kernel")
    p.add_argument("--n", type=int, default=100_000, help="values per kernel (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run_casts)

    p = sub.add_parser("kernels", help="measure the call kernels (matmul, multiply, max, cut-off, exp, division, rsqrt, sum)")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of one BERT-base layer's sizes (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run_kernels)
