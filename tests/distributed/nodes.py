"""Deployment configs with free ports on 127.0.0.1 for tests; the node processes are
:class:`ditto_spu.distributed.local.LocalNodes`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from ditto_spu.distributed.local import LocalNodes as Nodes  # noqa: F401  (re-exported for the tests)
from ditto_spu.distributed.local import free_ports


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


def wait_exit(proc, timeout):
    t0 = time.monotonic()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - t0
    return proc.returncode, time.monotonic() - t0


def make_certs(tmp_path) -> dict:
    """A CA and one node certificate it signs (``openssl``), in ``tmp_path``: the
    ``link.tls`` section of a config (skips the test without openssl)."""
    import pytest

    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available to make test certificates")
    from ditto_spu.distributed.local import make_test_certificates

    return make_test_certificates(tmp_path)


def write_tls_config(tmp_path, **extra) -> str:
    """:func:`write_config` with ``link.tls`` enabled (certificates made in ``tmp_path``)."""
    tls = make_certs(tmp_path)
    path = write_config(tmp_path, **extra)
    with open(path) as f:
        cfg = json.load(f)
    cfg["link"]["tls"] = tls
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path
