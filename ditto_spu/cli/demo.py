"""``ditto-spu demo`` (``make demo``): the main job, printed (:mod:`ditto_spu.demo` runs it)."""

from __future__ import annotations

import json


def _mb(bytes_sent) -> str:
    return f"{max(bytes_sent) / 1e6:.0f} MB"


def _print_demo(result) -> None:
    from rich.console import Console
    from rich.markup import escape

    from ..demo import DEMO_TEXT

    main, puma, ditto_cost, qad, student = result.main, result.puma, result.ditto_cost, result.qad, result.student
    out = Console()
    what = f"distilled student {student}" if student else "stock pretrained weights"
    out.print(f"[bold]Secure inference of MiniLM, 3-party ABY3 simulation[/bold] ({what})")
    out.print(f"  text: {DEMO_TEXT!r} ({main.tokens} tokens, seq {main.seq_len})")
    out.print(f"  mode {main.mode}: {main.segments} SPU segments in {escape(', '.join(main.rings))}, "
              f"{main.casts} ring casts, FXP32 matmuls by ditto-spu's own kernel")
    out.print(f"  cosine to plaintext FP32 model:        [bold]{main.cosine_fp32:.4f}[/bold]")
    out.print(f"  vs its fixed-point emulation:          cosine {main.cosine_emulation:.6f}, "
              f"relative L2 {main.rel_l2_emulation:.2e}")
    out.print(f"  {main.mode}: wall {main.wall_s:.1f} s, {_mb(main.bytes_sent)} sent by the busiest party")
    out.print(f"  puma (same sentence, same run): wall {puma.wall_s:.1f} s, {_mb(puma.bytes_sent)} "
              f"→ [bold]{puma.wall_s / main.wall_s:.2f}× faster[/bold], "
              f"{max(puma.bytes_sent) / max(main.bytes_sent):.2f}× fewer bytes")
    if ditto_cost is not None:
        out.print(f"  ditto (quad GeLU, needs distillation): wall {ditto_cost.wall_s:.1f} s "
                  f"({puma.wall_s / ditto_cost.wall_s:.2f}× puma), {_mb(ditto_cost.bytes_sent)}")
        out.print(f"    with the distilled student: held-out mean cosine to FP32 "
                  f"{qad['held_out_cosine_mean']:.3f} (worst {qad['held_out_cosine_min']:.3f}, "
                  f"{qad['held_out_sentences']} sentences; {qad['distill_minutes']:.0f} min of QAD on 2 cores)")
        if qad.get("neighbour_agreement_after") is not None:
            out.print(f"    semantic search: top-1 neighbour agreement with FP32 "
                      f"{100 * qad['neighbour_agreement_after']:.0f} %, similarity Spearman "
                      f"{qad['similarity_spearman_after']:.3f}")
        out.print(f"    make it: {qad['command']}")
        out.print(f"    then:    ditto-spu demo --student {qad['student_dir']}")


def _print_small_demo(stats, summary) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title="mixed-ring plan: y = exp(x·W1) · W2   (3-party ABY3 simulation)")
    for col in ("step", "kind", "ring", "wall s", "bytes sent P0/P1/P2", "rounds"):
        table.add_column(col)
    for row in summary["steps"]:
        table.add_row(
            row["step"],
            row["kind"],
            escape(row["ring"]),
            f"{row['wall_s']:.3f}",
            " / ".join(f"{b:,}" for b in row["bytes_sent"]),
            str(row["rounds"]),
        )
    console.print(table)
    console.print(
        f"output shape {tuple(summary['output_shape'])}; max |error| vs plaintext float64 = "
        f"{summary['max_abs_error']:.4g}, relative L2 error = {summary['relative_l2_error']:.3g}"
    )
    console.print(
        f"total: wall {stats.wall_s:.2f} s, bytes sent per party {stats.bytes_sent}, "
        f"rounds ≤ {stats.rounds} (kernel rounds {stats.kernel_rounds})"
    )


def run(args) -> int:
    from rich.console import Console

    from ..demo import run_demo, run_small_demo

    console = Console(stderr=True)
    if args.small:
        with console.status("compiling the mixed-ring plan and running 3 parties..."):
            _, stats, summary = run_small_demo()
        if args.json:
            print(json.dumps(summary, indent=2, default=float))
        else:
            _print_small_demo(stats, summary)
        return 0
    with console.status("starting") as status:
        result = run_demo(student=args.student, policy=args.policy, progress=status.update)
    if args.json:
        print(json.dumps(result.summary(), indent=2, default=float))
    else:
        _print_demo(result)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main demonstration: secure MiniLM inference, correct with stock "
                       "weights (ditto-puma), against puma from the same run")
    p.add_argument("--small", action="store_true", help="the small hand-built mixed-ring plan instead")
    p.add_argument("--student", default=None, help="a distilled student (model directory from `ditto-spu distill`): "
                   "run it in ditto mode instead of the stock weights in ditto-puma mode")
    p.add_argument("--policy", default=None, help="precision policy (default: the shipped MiniLM policy of the mode)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
