"""Secure inference as a service: per-query time split, and node memory over many queries.

    PYTHONPATH=. python benchmarks/service_queries.py [--queries 50] [--json benchmarks/results/service_queries.json]

Starts three `ditto-spu node` processes on loopback (configs/3pc.json's SPU options and
rings, free ports, stores in a temporary directory), then for each model:

* the owner uploads it once (`upload_model`: compile, share the weights, send);
* `tiny` (mode ditto, seq 16): a few client queries, each with its time split;
* `minilm` (real weights; mode ditto-puma with its calibrated policy, seq 32, correct
  without retraining): ``--queries`` sequential queries against the one upload, with every
  node's RSS (VmRSS from /proc/PID/status) before the first query, after the first, and
  after the last, and the first query's cosine to the FP32 model.

A query's split: client start (connect, metadata, tokenizer), input sharing, secure run
(from sending the shares to holding all three results: link set-up included), and
reconstruction. Bytes and rounds are the nodes' (the plan's), plus the input shares the
client sends.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from ditto_spu import native
from ditto_spu.distributed.local import LocalNodes, free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = [
    "The three servers compute the answer without ever seeing the sentence or the model.",
    "A client asks a question and alone reads the answer.",
    "Weights are shared once; queries come and go.",
]


def write_config(d: str) -> str:
    with open(os.path.join(ROOT, "configs", "3pc.json")) as f:
        cfg = json.load(f)
    ports = free_ports(6)
    for r, node in enumerate(cfg["nodes"]):
        node.update(link_address=f"127.0.0.1:{ports[r]}", control_address=f"127.0.0.1:{ports[3 + r]}",
                    store=f"store{r}")
    cfg["policy"] = os.path.join(ROOT, "configs", cfg["policy"])
    cfg["link"]["recv_timeout_ms"] = 60000
    path = os.path.join(d, "3pc.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def rss_kb(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


def split(result) -> dict:
    return {**{k: round(v, 4) for k, v in result.times.items()}, "bytes_sent_nodes": result.bytes_sent,
            "client_bytes_sent": result.client_bytes_sent, "rounds": result.rounds}


def fp32_reference(model, text: str, seq_len: int):
    import jax

    from ditto_spu.infer import tokenize
    from ditto_spu.models import load_mode, one_hot_ids, prepare_params, secure_forward

    exact = load_mode("exact")
    ids, mask = tokenize("minilm", model, text, seq_len)
    fwd = secure_forward(model, exact, output="mean_pooled")
    return np.asarray(jax.jit(fwd)(prepare_params(model.params, exact),
                                   one_hot_ids(ids, model.config.vocab_size, np.float32), mask), np.float64)


def main() -> int:
    native.ensure_preloaded()
    from ditto_spu.distributed.config import load_config
    from ditto_spu.distributed.driver import shutdown
    from ditto_spu.distributed.service import Client, upload_model
    from ditto_spu.errors import DittoError
    from ditto_spu.infer import cosine
    from ditto_spu.models import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--tiny-queries", type=int, default=3)
    ap.add_argument("--minilm-seq-len", type=int, default=32)
    ap.add_argument("--json", default=None)
    ap.add_argument("--crash-logs", default=os.path.join(tempfile.gettempdir(), "ditto-spu-service-crashes"),
                    help="where a crashed node's log goes (default: in the system's temporary directory)")
    args = ap.parse_args()
    report: dict = {"command": "PYTHONPATH=. python benchmarks/service_queries.py " + " ".join(sys.argv[1:]),
                    "machine": f"{os.cpu_count()} cores, shared", "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory(prefix="service-bench-") as d:
        path = write_config(d)
        config = load_config(path)
        with LocalNodes(path, log_dir=d) as nodes:
            nodes.wait_ready(timeout=120)
            pids = [nodes.procs[r].pid for r in range(3)]
            report["rss_kb_idle"] = [rss_kb(p) for p in pids]

            up = upload_model(config, "tiny", "ditto", seq_len=16, model_id="tiny")
            report["tiny_upload"] = up.summary()
            client = Client(config)
            tiny = []
            for i in range(args.tiny_queries):
                tiny.append(split(client.query("tiny", TEXTS[i % len(TEXTS)])))
                print("tiny", tiny[-1], flush=True)
            report["tiny_queries"] = tiny
            # a fresh client each time shows the metadata fetch in client_start
            report["tiny_query_fresh_client"] = split(Client(config).query("tiny", TEXTS[0]))

            policy = os.path.join(ROOT, "configs", "policy_minilm_ditto_puma.json")
            minilm = load_model("minilm")
            up = upload_model(config, minilm, "ditto-puma", seq_len=args.minilm_seq_len, policy=policy,
                              model_id="minilm", model_name="minilm")
            report["minilm_upload"] = up.summary()
            print("minilm upload", report["minilm_upload"], flush=True)
            report["rss_kb_after_minilm_upload"] = [rss_kb(p) for p in pids]
            client = Client(config)
            queries, rss_trace, failures = [], [], []
            for i in range(args.queries):
                text = TEXTS[i % len(TEXTS)]
                try:
                    result = client.query("minilm", text)
                except DittoError as e:
                    # record it; restart a node that died (the service's supervisor), go on
                    time.sleep(10)  # a crashed node may still be exiting when its connection closes
                    dead = {r: nodes.procs[r].poll() for r in range(3) if nodes.procs[r].poll() is not None}
                    failures.append({"query": i, "error": str(e)[:500], "dead_nodes_exit": dead})
                    print("minilm", i, "FAILED", failures[-1], flush=True)
                    for r in dead:
                        os.makedirs(args.crash_logs, exist_ok=True)
                        os.replace(os.path.join(d, f"node{r}.log"), os.path.join(args.crash_logs, f"node{r}.crash{i}.log"))
                        nodes.start(r)
                        pids[r] = nodes.procs[r].pid
                    nodes.wait_ready(timeout=120)
                    continue
                queries.append(split(result))
                if i == 0:
                    report["minilm_first_query_cosine_fp32"] = cosine(
                        result.output, fp32_reference(minilm, text, args.minilm_seq_len))
                    report["rss_kb_after_first_minilm_query"] = [rss_kb(p) for p in pids]
                rss_trace.append([rss_kb(p)["VmRSS"] for p in pids])
                print("minilm", i, queries[-1]["total"], rss_trace[-1], flush=True)
            report["rss_kb_after_last_minilm_query"] = [rss_kb(p) for p in pids]
            report["minilm_rss_kb_trace"] = rss_trace
            report["minilm_failures"] = failures
            report["minilm_queries"] = queries
            totals = [q["total"] for q in queries]
            report["minilm_total_s"] = {"first": totals[0], "median": statistics.median(totals),
                                        "max": max(totals), "min": min(totals)}
            first = np.array(rss_trace[0])
            report["minilm_rss_growth_kb_first_to_last"] = (np.array(rss_trace[-1]) - first).tolist()
            report["minilm_rss_growth_kb_max_over_first"] = (np.array(rss_trace).max(axis=0) - first).tolist()
            shutdown(config)
    text = json.dumps(report, indent=2, default=float)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
