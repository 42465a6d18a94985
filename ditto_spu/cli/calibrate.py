"""``ditto-spu calibrate``: per-layer FXP32 fraction bits from calibration sentences.

    ditto-spu calibrate --model tiny --mode ditto --builtin-texts 8 --seq-len 32 \\
        --margin-bits 1 --out configs/policy_tiny_ditto.json

Runs the fixed-point emulator (:mod:`ditto_spu.quant`) of the model's secure forward
function under the mode on the calibration sentences, picks for each layer the largest
fraction bits no value or product of the set overflows (with ``--margin-bits`` to spare),
prints the per-layer table and writes the policy JSON. ``--builtin-texts N`` takes N
sentences of real English from Python's own documentation (``pydoc_data.topics``), so
nothing is downloaded. Models without a tokenizer (the random-initialised configs) get a
deterministic hashing word tokenizer: their ranges come from the weights and the
embedding, not from which ids the words receive.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _parse_bits(text: str) -> list:
    out = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out.extend(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(int(part))
    return out


def add_parser(subparsers):
    p = subparsers.add_parser(
        "calibrate",
        help="pick per-layer FXP32 fraction bits from calibration texts; write a policy JSON",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    p.add_argument("--model", default="tiny", help="model name (minilm, bert-base, tiny, gpt2-base, ...) or a local HF directory")
    p.add_argument("--mode", default="ditto", help="mode name or JSON path (default ditto)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--texts", metavar="FILE", help="calibration texts, one per line")
    src.add_argument("--builtin-texts", type=int, metavar="N", default=None, help="N sentences from Python's documentation (default 8)")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--margin-bits", type=int, default=1, help="bits kept below SPU's safe range (default 1)")
    p.add_argument("--candidate-bits", default="6-16", help="allowed fraction bits, e.g. 6-16 or 8,10,12 (default 6-16)")
    p.add_argument("--group-by", choices=("layer", "scope"), default="layer", help="one setting per layer (default) or per op scope")
    p.add_argument("--policy", default=None, help="base policy (JSON path or config name; default: the default policy)")
    p.add_argument("--batch", type=int, default=4, help="sentences per emulated call (default 4)")
    p.add_argument("--out", default=None, help="where to write the policy JSON (default: print it)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of tables")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..data import calibration_sentences, read_text
    from ..models.calibration import calibrate_model

    def err(msg):
        print(msg, file=sys.stderr, flush=True)

    texts = read_text(args.texts, unit="line", min_words=1) if args.texts else calibration_sentences(args.builtin_texts or 8)
    mode, result = calibrate_model(
        args.model,
        args.mode,
        texts,
        args.seq_len,
        margin_bits=args.margin_bits,
        candidate_bits=_parse_bits(args.candidate_bits),
        group_by=args.group_by,
        policy=args.policy,
        batch=args.batch,
        progress=err,
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        result.policy.save(args.out)
    if args.json:
        print(json.dumps({
            "model": args.model,
            "mode": mode.name,
            "texts": len(texts),
            "seq_len": args.seq_len,
            "margin_bits": args.margin_bits,
            "group_bits": result.group_bits,
            "arg_bits": result.arg_bits,
            "rounds": result.rounds,
            "out": args.out,
            "policy": result.policy.to_obj() if not args.out else None,
        }, indent=2))
        return 0
    print(result.report.table("layer", field="FM32"))
    print()
    print("fraction bits per layer:")
    for g, f in result.group_bits.items():
        print(f"  {g}: FXP32[f={f}]")
    print(f"({len(result.arg_bits)} FXP32 arguments follow the layers that read them; {result.rounds} verification round(s))")
    if args.out:
        print(f"wrote {args.out}")
    else:
        print(result.policy.to_json())
    return 0
