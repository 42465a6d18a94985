"""How often does a three-node deployment with TLS links come up and finish a job?

    PYTHONPATH=. python benchmarks/tls_starts.py --runs 20 [--json out.json]

Each run is a full deployment from scratch, as a user starts it: fresh certificates (a
CA and one node certificate, ``openssl``), a config with free loopback ports and
``link.tls`` enabled, three ``ditto-spu node`` processes and one
``ditto-spu run --demo-plan``. A run succeeds when the driver exits 0 with a relative
error below 2 % and every node then shuts down cleanly when asked.

For each run it also counts, in the nodes' SPU logs (each node process writes one into
the run's own TMPDIR), brpc's "error_code is 0" check — the trace of a peer closing a TLS
connection under a pending request, which before the fix ended a node with exit(-1)
about 9 s later (see ``ditto_spu/distributed/node.py``, ``_await_release``).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from ditto_spu.distributed.local import LocalNodes, free_ports, make_test_certificates


def write_config(d: str) -> str:
    ports = free_ports(6)
    cfg = {
        "nodes": [{"id": f"node{r}", "link_address": f"127.0.0.1:{ports[r]}",
                   "control_address": f"127.0.0.1:{ports[3 + r]}"} for r in range(3)],
        "link": {"connect_retry_times": 20, "connect_retry_interval_ms": 200, "recv_timeout_ms": 20000,
                 "http_timeout_ms": 20000, "tls": make_test_certificates(d, "ditto-tls-starts-ca")},
        "job_timeout_s": 120,
    }
    path = os.path.join(d, "3pc.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def one_run(d: str) -> dict:
    path = write_config(d)
    env_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = d  # the node processes' SPU logs land in d
    t0 = time.monotonic()
    try:
        with LocalNodes(path, log_dir=d) as nodes:
            nodes.wait_ready(timeout=60)
            drv = subprocess.run([sys.executable, "-m", "ditto_spu.cli", "run", "--config", path, "--demo-plan"],
                                 capture_output=True, text=True, timeout=180)
            err = None
            if drv.returncode == 0:
                err = json.loads(drv.stdout)["relative_l2_error"]
            shut = subprocess.run(
                [sys.executable, "-c", "import sys\nfrom ditto_spu.distributed.config import load_config\n"
                 "from ditto_spu.distributed.driver import shutdown\nshutdown(load_config(sys.argv[1]))", path],
                capture_output=True, text=True, timeout=60)
            codes = {}
            for r, p in nodes.procs.items():
                try:
                    codes[r] = p.wait(30)
                except subprocess.TimeoutExpired:
                    codes[r] = None
    finally:
        if env_tmp is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = env_tmp
    brpc_eof = sum(open(f, errors="replace").read().count("error_code is 0")
                   for f in glob.glob(os.path.join(d, "ditto-spu-*.log")))
    ok = drv.returncode == 0 and err is not None and err < 0.02 and shut.returncode == 0 and all(
        c == 0 for c in codes.values())
    return {"ok": ok, "driver_exit": drv.returncode, "relative_l2_error": err, "node_exits": codes,
            "brpc_error_code_0": brpc_eof, "seconds": round(time.monotonic() - t0, 2),
            "driver_stderr_tail": drv.stderr.strip().splitlines()[-1:] if drv.returncode else []}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", default=None, help="write the per-run records here")
    ap.add_argument("--keep", action="store_true", help="keep each run's directory (logs, config)")
    args = ap.parse_args()
    if shutil.which("openssl") is None:
        print("tls_starts: the openssl command is needed to make certificates", file=sys.stderr)
        return 2
    tempfile.gettempdir()  # fix this process's own temp dir before TMPDIR changes per run
    records = []
    for i in range(args.runs):
        d = tempfile.mkdtemp(prefix=f"ditto-tls-start{i}-")
        rec = one_run(d)
        rec["run"] = i
        records.append(rec)
        print(json.dumps(rec), flush=True)
        if rec["ok"] and not args.keep:
            shutil.rmtree(d, ignore_errors=True)
        else:
            rec["dir"] = d
    ok = sum(r["ok"] for r in records)
    events = sum(r["brpc_error_code_0"] for r in records)
    print(f"TLS deployments that came up and finished the job: {ok}/{len(records)}; "
          f"brpc 'error_code is 0' events: {events}; mean {sum(r['seconds'] for r in records) / len(records):.1f} s per run")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 0 if ok == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
