"""Secure GPT-2 generation: time and bytes per new token, per mode, per cache bucket.

    python benchmarks/generation.py --model gpt2-base --prompt-len 32 --new-tokens 8 \
        --modes puma,ditto --sweep 16,32,64,128 --json benchmarks/results/generation_gpt2-base.json

Per mode, one generation of ``--new-tokens`` tokens after a prompt of ``--prompt-len``
(deterministic random ids; weights random — MPC cost does not depend on them), on the
3-party simulator (ditto_spu.generate.SecureGenerator): the prompt pass, each decoding
step's wall time, bytes sent by the busiest party and rounds, compile times, the cache
each party holds. ``--sweep``: for each cache bucket C, one more generation whose prompt
fills C − 1 slots and whose single decoding step runs on C slots, so a step's cost is
measured for every bucket. ``--compare`` also runs the fixed-point emulation along the
secure tokens (slow for GPT-2 base). The modes run one after the other in one process, so
their ratio is measured under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv=None) -> int:
    from ditto_spu import native

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    native.ensure_preloaded()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpt2-base")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--modes", default="puma,ditto")
    p.add_argument("--sweep", default="", help="cache buckets to measure one step on, e.g. 16,32,64,128")
    p.add_argument("--compare", action="store_true", help="emulation along the secure tokens (slow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from ditto_spu.generate import SecureGenerator, agreement, emulated_generation
    from ditto_spu.models import load_model

    model = load_model(args.model)
    vocab = model.config.vocab_size
    rng = np.random.default_rng(args.seed)
    prompt = [int(i) for i in rng.integers(1, vocab, args.prompt_len)]
    sweep = [int(s) for s in args.sweep.split(",") if s.strip()]
    report = {
        "command": "python benchmarks/generation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "modes": {},
    }

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        gen = SecureGenerator(model, mode, model_name=args.model, progress=lambda s, m=mode: log(f"{m}: {s}"))
        t0 = time.perf_counter()
        result = gen.generate(prompt, args.new_tokens)
        entry = {
            "tokens": result.tokens,
            "seconds_per_token": result.seconds_per_token,
            "bytes_per_token": result.bytes_per_token,
            "prompt_pass": result.costs[0].as_dict(),
            "steps": [c.as_dict() for c in result.costs[1:]],
            "cost_by_bucket": result.cost_by_bucket(),
            "compile_s": result.compile_s,
            "cache_bytes_per_party": result.cache_bytes_per_party,
            "end_to_end_s": time.perf_counter() - t0,
        }
        if args.compare:
            log(f"{mode}: emulation along the secure tokens")
            _, forced = emulated_generation(model, mode, None, prompt, args.new_tokens, forced_tokens=result.tokens)
            entry["vs_emulation"] = agreement(result.tokens, result.logits, forced)
        if sweep:
            entry["step_by_bucket"] = []
            for slots in sweep:
                if slots - 1 < 1 or slots > model.config.n_positions:
                    continue
                sweep_prompt = [int(i) for i in rng.integers(1, vocab, slots - 1)]
                r = gen.generate(sweep_prompt, 2)
                step = r.costs[-1]
                entry["step_by_bucket"].append({"slots": step.slots, "wall_s": step.wall_s,
                                                "bytes_max_party": max(step.bytes_sent), "rounds": step.rounds})
                log(f"{mode}: step on {step.slots} slots: {step.wall_s:.2f} s, {max(step.bytes_sent) / 1e6:.2f} MB")
        report["modes"][mode] = entry
        log(f"{mode}: {entry['seconds_per_token']:.2f} s/token, {entry['bytes_per_token'] / 1e6:.2f} MB/token")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    modes = report["modes"]
    if "puma" in modes and "ditto" in modes:
        report["ditto_vs_puma"] = {
            "seconds_per_token": modes["puma"]["seconds_per_token"] / modes["ditto"]["seconds_per_token"],
            "bytes_per_token": modes["puma"]["bytes_per_token"] / modes["ditto"]["bytes_per_token"],
            "prompt_pass_s": modes["puma"]["prompt_pass"]["wall_s"] / modes["ditto"]["prompt_pass"]["wall_s"],
        }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "modes"}, indent=1))
    for mode, e in modes.items():
        print(f"{mode}: {e['seconds_per_token']:.2f} s/token, {e['bytes_per_token'] / 1e6:.2f} MB/token (busiest party), "
              f"prompt pass {e['prompt_pass']['wall_s']:.1f} s, compile {e['compile_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
