"""Three node processes on this machine: for tests, benchmarks and trying a deployment out.

``LocalNodes(config_path)`` starts ``ditto-spu node --config PATH --rank r`` for each rank
(its own process group, so a kill reaches SPU's threads), ``wait_ready()`` pings them,
and leaving the ``with`` block kills whatever is still running. Node output goes to pipes
(``procs[r].communicate()``) or, with ``log_dir``, to ``<log_dir>/node<r>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import typing


def free_ports(n: int) -> list:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class LocalNodes:
    """Context manager: node processes for ``ranks`` of the config at ``config_path``."""

    def __init__(self, config_path: str, ranks=(0, 1, 2), max_jobs=None, log_dir: str | None = None):
        self.config_path = config_path
        self.ranks = ranks
        self.max_jobs = max_jobs
        self.log_dir = log_dir
        self.procs: dict = {}

    def start(self, rank: int):
        cmd = [sys.executable, "-m", "ditto_spu.cli", "node", "--config", self.config_path, "--rank", str(rank)]
        if self.max_jobs:
            cmd += ["--max-jobs", str(self.max_jobs)]
        out: typing.Any
        err: typing.Any
        if self.log_dir is None:
            out = err = subprocess.PIPE
        else:
            out = open(os.path.join(self.log_dir, f"node{rank}.log"), "w")
            err = subprocess.STDOUT
        self.procs[rank] = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True)
        return self.procs[rank]

    def __enter__(self):
        for r in self.ranks:
            self.start(r)
        return self

    def wait_ready(self, timeout=60):
        from .config import load_config
        from .driver import ping

        return ping(load_config(self.config_path), timeout_s=timeout, ranks=tuple(self.ranks))

    def __exit__(self, *exc):
        for p in self.procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                    os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):  # best effort: never hang teardown
                p.wait(10)


def make_test_certificates(directory, common_name: str = "ditto-test-ca") -> dict:
    """A CA and one node certificate it signs (``openssl``), written into ``directory``:
    the ``link.tls`` section of a config for a deployment on this machine (tests,
    benchmarks). Not for production keys."""
    directory = str(directory)

    def run(*args):
        subprocess.run(args, cwd=directory, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "2", "-subj", f"/CN={common_name}")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
        "-subj", "/CN=127.0.0.1")
    run("openssl", "x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "node.crt", "-days", "2")
    return {"enabled": True, "cert": "node.crt", "key": "node.key", "ca": "ca.crt"}
