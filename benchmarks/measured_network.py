"""Measured LAN / WAN: the modes on three real node processes whose brpc links run through
delaying relays (ditto_spu/distributed/relay.py), beside the cost model.

    python benchmarks/measured_network.py --model bert-base --layers 1 --seq-len 128 \\
        --modes puma,mpcformer,ditto,ditto-2quad --json benchmarks/results/measured_network_bert-base_L1.json

For each mode, the same shares of one input, five runs, each on freshly started nodes (so
each includes SPU's compilation of the segments on their first run, alike in all five):

* ``direct``: links without relays;
* ``relay0``: through the relays with no delay (the relays' own cost);
* ``rtt``: relays adding a 40 ms round trip, no bandwidth cap → true rounds =
  (wall_rtt − wall_relay0) / 40 ms, the critical path of messages;
* ``lan``: 0.4 ms round trip and 5 Gbps per direction (the paper's LAN);
* ``wan``: 40 ms round trip and 400 Mbps per direction (the paper's WAN);

and reports them with the cost model's LAN / WAN estimates
(ditto_spu/bench/costmodel.py: compute + bytes / bandwidth + rounds × RTT, rounds = an
upper bound) computed from the direct run. Every wall time is the plan's own (the driver's
wall less the slowest node's brpc link set-up, reported beside it as ``link_setup_s``):
a fresh mesh's connect retries cost whole retry intervals that are not rounds. One process runs the relays (threads) and the
driver; the nodes are three processes; all share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from ditto_spu.distributed.local import LocalNodes, free_ports


def _write_config(directory, relayed: bool) -> str:
    ports = free_ports(9)
    nodes = []
    for r in range(3):
        node = {"id": f"node{r}", "link_address": f"127.0.0.1:{ports[r]}", "control_address": f"127.0.0.1:{ports[3 + r]}"}
        if relayed:
            node["link_connect_address"] = f"127.0.0.1:{ports[6 + r]}"
        nodes.append(node)
    cfg = {"nodes": nodes, "link": {"connect_retry_times": 30, "connect_retry_interval_ms": 200,
                                    "recv_timeout_ms": 600000, "http_timeout_ms": 600000},
           "job_timeout_s": 3600}
    path = os.path.join(directory, f"3pc_{'relayed' if relayed else 'direct'}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


class _Keep:
    def __init__(self, path):
        os.makedirs(path, exist_ok=True)
        self.path = path

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        return False


class _Nodes(LocalNodes):
    """Fresh nodes for one run, logging into the work folder; shut down cleanly after."""

    def __init__(self, path):
        super().__init__(path, log_dir=os.path.dirname(path))

    def __enter__(self):
        super().__enter__()
        self.wait_ready(timeout=120)
        return self

    def __exit__(self, *exc):
        from ditto_spu.distributed.config import load_config
        from ditto_spu.distributed.driver import shutdown

        shutdown(load_config(self.config_path))
        return super().__exit__(*exc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bert-base")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--modes", default="puma,mpcformer,ditto,ditto-2quad")
    ap.add_argument("--json", dest="json_path", default=None)
    ap.add_argument("--workdir", default=None, help="keep configs and node logs here (default: a temp dir)")
    args = ap.parse_args(argv)

    import numpy as np

    from ditto_spu import frontend
    from ditto_spu.bench.costmodel import LAN, WAN
    from ditto_spu.bench.harness import BenchConfig, build_case, load_bench_model, token_ids
    from ditto_spu.distributed.config import load_config
    from ditto_spu.distributed.driver import run_plan
    from ditto_spu.distributed.relay import Relays
    from ditto_spu.models import load_mode

    modes = args.modes.split(",")
    bench = BenchConfig(model=args.model, modes=tuple(modes), seq_len=args.seq_len, layers=args.layers)
    model = load_bench_model(bench)
    ids = token_ids(model, bench)
    conditions = [("relay0", 0.0, None), ("rtt", 0.02, None), ("lan", 0.0002, 5e9 / 8), ("wan", 0.02, 400e6 / 8)]
    records = []
    with (tempfile.TemporaryDirectory(prefix="ditto-net-") if args.workdir is None else _Keep(args.workdir)) as tmp:
        direct_path, relayed_path = _write_config(tmp, False), _write_config(tmp, True)
        direct, relayed = load_config(direct_path), load_config(relayed_path)
        plans = {}
        for mode_name in modes:
            mode = load_mode(mode_name)
            fn, fargs = build_case(model, mode, bench, ids)
            program = frontend.compile(fn, *fargs, policy=bench.policy)
            inputs = program.flatten_inputs(*fargs)
            plans[mode_name] = (program.plan, inputs)
        # Fresh node processes for every run: a node that served several large jobs has
        # been seen to die in a libc string routine (segfault, see benchmarks/README.md).
        for mode_name in modes:
            plan, inputs = plans[mode_name]
            with _Nodes(direct_path):
                _, stats = run_plan(direct, plan, inputs, rng=np.random.default_rng(0))
            records.append({"mode": mode_name, "condition": "direct", "wall_s": stats.plan_wall_s,
                            "link_setup_s": max(stats.link_setup_s),
                            "bytes_sent": stats.bytes_sent, "rounds_upper_bound": stats.rounds,
                            "kernel_rounds": stats.kernel_rounds,
                            "model_lan_s": LAN.estimate(stats.plan_wall_s, stats.bytes_sent, stats.rounds),
                            "model_wan_s": WAN.estimate(stats.plan_wall_s, stats.bytes_sent, stats.rounds)})
            print(json.dumps(records[-1]), file=sys.stderr)
            with Relays(relayed) as relays:
                for name, delay, rate in conditions:
                    relays.set(one_way_delay_s=delay, rate_bytes_per_s=rate)
                    before = relays.stats()
                    with _Nodes(relayed_path):
                        _, stats = run_plan(relayed, plan, inputs, rng=np.random.default_rng(0))
                    after = relays.stats()
                    chunks = after.chunks - before.chunks
                    records.append({"mode": mode_name, "condition": name, "one_way_delay_s": delay,
                                    "rate_bytes_per_s": rate, "wall_s": stats.plan_wall_s,
                                    "link_setup_s": max(stats.link_setup_s),
                                    "relay_mean_late_s": (after.late_s - before.late_s) / max(chunks, 1),
                                    "bytes_sent": stats.bytes_sent})
                    print(json.dumps(records[-1]), file=sys.stderr)
    summary = {}
    for mode_name in modes:
        by = {r["condition"]: r for r in records if r["mode"] == mode_name}
        rtt = 2 * 0.02
        summary[mode_name] = {
            "direct_s": by["direct"]["wall_s"],
            "relay0_s": by["relay0"]["wall_s"],
            "relay_cost_s": by["relay0"]["wall_s"] - by["direct"]["wall_s"],
            "true_rounds": (by["rtt"]["wall_s"] - by["relay0"]["wall_s"]) / rtt,
            "rounds_upper_bound": by["direct"]["rounds_upper_bound"],
            "kernel_rounds": by["direct"]["kernel_rounds"],
            "measured_lan_s": by["lan"]["wall_s"],
            "model_lan_s": by["direct"]["model_lan_s"],
            "measured_wan_s": by["wan"]["wall_s"],
            "model_wan_s": by["direct"]["model_wan_s"],
            "max_party_mb": max(by["direct"]["bytes_sent"]) / 1e6,
        }
    shown = [a for a in (argv or sys.argv[1:])]
    if args.workdir:  # a machine path: not part of the recorded command
        i = shown.index("--workdir")
        del shown[i : i + 2]
    result = {"command": " ".join(["python", "benchmarks/measured_network.py", *shown]),
              "model": args.model, "layers": args.layers, "seq_len": args.seq_len,
              "summary": summary, "records": records}
    print(json.dumps(summary, indent=2))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
