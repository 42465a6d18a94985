"""Start three `ditto-spu node` processes on 127.0.0.1 with free ports (test helper)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time


def free_ports(n: int) -> list:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def write_config(tmp_path, *, recv_timeout_ms=20000, **extra) -> str:
    ports = free_ports(6)
    cfg = {
        "nodes": [
            {
                "id": f"node{r}",
                "link_address": f"127.0.0.1:{ports[r]}",
                "control_address": f"127.0.0.1:{ports[3 + r]}",
            }
            for r in range(3)
        ],
        "link": {
            "connect_retry_times": 20,
            "connect_retry_interval_ms": 200,
            "recv_timeout_ms": recv_timeout_ms,
            "http_timeout_ms": 20000,
        },
        "rings": {"low": "FXP32[f=10]", "high": "FXP64[f=18]"},
        "policy": None,
        "job_timeout_s": 600,
        **extra,
    }
    path = os.path.join(str(tmp_path), "3pc.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


class Nodes:
    """Context manager: three node processes; kills any left over on exit."""

    def __init__(self, config_path: str, ranks=(0, 1, 2), max_jobs=None):
        self.config_path = config_path
        self.ranks = ranks
        self.max_jobs = max_jobs
        self.procs = {}

    def start(self, rank: int):
        cmd = [sys.executable, "-m", "ditto_spu.cli", "node", "--config", self.config_path, "--rank", str(rank)]
        if self.max_jobs:
            cmd += ["--max-jobs", str(self.max_jobs)]
        self.procs[rank] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        return self.procs[rank]

    def __enter__(self):
        for r in self.ranks:
            self.start(r)
        return self

    def wait_ready(self, timeout=60):
        from ditto_spu.distributed.config import load_config
        from ditto_spu.distributed.driver import ping

        return ping(load_config(self.config_path), timeout_s=timeout)

    def __exit__(self, *exc):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


def wait_exit(proc, timeout):
    t0 = time.monotonic()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - t0
    return proc.returncode, time.monotonic() - t0
