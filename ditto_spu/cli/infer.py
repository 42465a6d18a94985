"""``ditto-spu infer``: one secure inference in simulation, compared with plaintext."""

from __future__ import annotations

import json


def run(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from ..infer import resolve_model, secure_inference

    # a distilled student runs in the mode and policy it was trained for, against its teacher
    model, mode, policy, settings = resolve_model(args.model, args.mode, args.policy)
    teacher = settings.teacher if settings and settings.teacher else None
    console = Console(stderr=True)
    if settings:
        console.print(f"{model}: mode {mode}, policy {'given' if args.policy else 'recorded'} "
                      f"({settings.source}), compared with teacher {settings.teacher}")
    with console.status("starting") as status:
        result = secure_inference(
            model,
            mode,
            args.text,
            seq_len=args.seq_len,
            policy=policy,
            emulate=not args.no_emulation,
            progress=lambda message: status.update(message),
            reference_model=teacher,
            model_name=teacher,
        )
    if args.json:
        print(json.dumps(result.summary(), indent=2, default=float))
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


def add_parser(sub) -> None:
    p = sub.add_parser("infer", help="one secure inference in simulation, compared with plaintext")
    p.add_argument("--model", default="minilm", help="minilm, bert-base, bert-large, gpt2-base, "
                   "gpt2-medium, tiny, tiny-gpt2, or a local checkpoint directory")
    p.add_argument("--mode", default=None, help="puma, mpcformer, ditto, ditto-puma, ditto-steps, ditto-2quad, exact, or a mode "
                   "JSON (default: the mode a distilled student records, else ditto)")
    p.add_argument("--text", default="Secure inference keeps both the model and the input private.")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--policy", default=None, help="precision policy JSON (e.g. from `ditto-spu calibrate`)")
    p.add_argument("--no-emulation", action="store_true", help="skip the plaintext emulation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)
