"""GPT-2 generation with the key/value cache at the nodes, against the simulator.

    PYTHONPATH=. python benchmarks/generation_nodes.py [--model tiny-gpt2] [--new-tokens 16] [--json OUT]

Starts three `ditto-spu node` processes on loopback (configs/3pc.json's SPU options,
rings and policy; free ports), uploads the model for generation (`upload_generation_model`:
default buckets, prompts 16/32, steps 16/32/64), generates ``--new-tokens`` greedy tokens
on the nodes (`GenerationClient.generate`: the cache in a session at the nodes) and with
`SecureGenerator` on the simulator (same plans' buckets, policy and SPU options), and
reports per decoding step: the client's wall time on the nodes (link set-up included)
and the nodes' own run time, against the simulator's step time; and whether the tokens
agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from ditto_spu import native

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from service_queries import write_config  # noqa: E402


def main() -> int:
    native.ensure_preloaded()
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="tiny-gpt2")
    p.add_argument("--mode", default="ditto")
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--prompt-ids", default="5,17,300,42,7,11,250,3")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    from ditto_spu.distributed.config import load_config
    from ditto_spu.distributed.driver import shutdown
    from ditto_spu.distributed.generation import GenerationClient, upload_generation_model
    from ditto_spu.distributed.local import LocalNodes
    from ditto_spu.generate import SecureGenerator
    from ditto_spu.simulation import Simulator

    prompt = [int(t) for t in args.prompt_ids.split(",")]
    with tempfile.TemporaryDirectory() as d:
        path = write_config(d)
        config = load_config(path)
        with LocalNodes(path, log_dir=d) as nodes:
            nodes.wait_ready()
            up = upload_generation_model(config, args.model, args.mode, model_id="gen")
            nodes_result = GenerationClient(config).generate("gen", prompt, args.new_tokens)
            shutdown(config)
    gen = SecureGenerator(args.model, args.mode, config.policy_object(), simulator=Simulator(options=config.spu),
                          buckets=up.meta["step_buckets"])
    sim = gen.generate(prompt, args.new_tokens)
    steps = [p for p in nodes_result.passes if p["kind"] == "step"]
    rel = [float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(nodes_result.logits, sim.logits)]
    out = {
        "model": args.model, "mode": args.mode, "prompt_ids": prompt, "new_tokens": args.new_tokens,
        "upload": up.summary(),
        "nodes": {"tokens": nodes_result.tokens, "seconds_per_token": nodes_result.seconds_per_token,
                  "node_run_s_per_token": float(np.mean([p["node_wall_s"] for p in steps])),
                  "link_setup_s_per_token": float(np.mean([p["link_setup_s"] for p in steps])),
                  "prompt_pass_s": nodes_result.passes[0]["wall_s"], "passes": nodes_result.passes},
        "simulator": {"tokens": sim.tokens, "seconds_per_token": sim.seconds_per_token,
                      "prompt_pass_s": sim.costs[0].wall_s},
        "tokens_equal": nodes_result.tokens == sim.tokens,
        "logits_rel_l2_max": max(rel),
    }
    n, s = out["nodes"], out["simulator"]
    print(f"{args.model} {args.mode}: {args.new_tokens} tokens, equal to the simulator's: {out['tokens_equal']} "
          f"(logits relative L2 max {out['logits_rel_l2_max']:.2e})")
    print(f"  nodes: {n['seconds_per_token']:.2f} s per token (client wall; node run {n['node_run_s_per_token']:.2f} s, "
          f"of which link set-up {n['link_setup_s_per_token']:.2f} s); prompt pass {n['prompt_pass_s']:.2f} s")
    print(f"  simulator: {s['seconds_per_token']:.2f} s per token; prompt pass {s['prompt_pass_s']:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
