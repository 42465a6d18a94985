"""TLS: on the brpc links between nodes (deployments must come up every time) and on the
driver ↔ node control channel (encrypted, the node's certificate verified, plaintext and
wrong-CA clients refused while the node keeps serving)."""

from __future__ import annotations

import json
import os
import select
import socket
import ssl
import subprocess
import threading

import numpy as np
import pytest

from ditto_spu.demo_plan import build_mixed_ring_plan, demo_inputs, plaintext_reference
from ditto_spu.distributed.channel import client_context, connect
from ditto_spu.distributed.config import load_config, parse_config
from ditto_spu.distributed.driver import ping, run_plan, shutdown
from ditto_spu.distributed.wire import decode, encode
from ditto_spu.errors import DittoError

from .nodes import Nodes, make_certs, wait_exit, write_tls_config


def _one_tls_deployment(d) -> None:
    """A deployment from scratch: certificates, config, three nodes, one job, shutdown.
    The job must be right and every node must exit 0 (a node that died after its part of
    the job — the old TLS failure — fails this)."""
    os.makedirs(d, exist_ok=True)
    path = write_tls_config(d)
    config = load_config(path)
    plan = build_mixed_ring_plan(rows=8, dim=16, low=config.low, high=config.high)
    inputs = demo_inputs(8, 16)
    with Nodes(path, log_dir=str(d)) as nodes:
        nodes.wait_ready()
        out, _ = run_plan(config, plan, inputs)
        shutdown(config)
        for rank, proc in nodes.procs.items():
            code, _ = wait_exit(proc, 30)
            assert code == 0, f"node {rank} exited with {code}: {open(os.path.join(str(d), f'node{rank}.log')).read()}"
    expected = plaintext_reference(inputs)
    assert np.linalg.norm(out["y"] - expected) / np.linalg.norm(expected) < 0.02


def test_tls_deployments_come_up_every_time(tmp_path):
    """Three TLS deployments in a row all succeed. Before nodes kept their link until the
    driver's release, about one deployment in five lost a node ~9 s after the job."""
    for i in range(3):
        _one_tls_deployment(tmp_path / f"start{i}")


@pytest.mark.slow
def test_twenty_tls_deployments(tmp_path):
    """The issue's target, 20 of 20 (about 2 minutes; `pytest -m slow`).
    `benchmarks/tls_starts.py --runs 20` measures the same through the CLI."""
    for i in range(20):
        _one_tls_deployment(tmp_path / f"start{i}")


class _RecordingProxy:
    """Forwards one TCP connection to ``target`` and records every byte both ways."""

    def __init__(self, target):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = self.server.getsockname()
        self.seen = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        client, _ = self.server.accept()
        upstream = socket.create_connection(self.target)
        peers = {client: upstream, upstream: client}
        while True:
            readable, _, _ = select.select(list(peers), [], [], 10)
            if not readable:
                return
            for s in readable:
                data = s.recv(1 << 16)
                if not data:
                    for x in peers:
                        x.close()
                    return
                self.seen += data
                peers[s].sendall(data)


def _hello_through_proxy(config):
    node = config.nodes[0]
    proxy = _RecordingProxy(node.control_host_port)
    with connect(proxy.address, config.authkey(), client_context(config)) as conn:
        version = conn.tls_version
        conn.send_bytes(encode({"type": "hello"}))
        answer = decode(conn.recv_bytes(1 << 20))
    proxy.thread.join(15)
    return version, answer, bytes(proxy.seen)


def test_control_channel_is_encrypted_and_the_node_keeps_serving(tmp_path):
    """With TLS on, nothing of the control messages crosses the wire in the clear: a
    recording proxy sees neither the node's reply (its config digest) nor the challenge;
    a client without TLS, and one that trusts another CA, are refused and logged, and the
    node answers the next proper request."""
    path = write_tls_config(tmp_path)
    config = load_config(path)
    with Nodes(path, ranks=(0,)) as nodes:
        ping(config, timeout_s=60, ranks=(0,))
        version, answer, seen = _hello_through_proxy(config)
        assert version in ("TLSv1.2", "TLSv1.3")
        assert answer["digest"] == config.digest
        assert config.digest.encode() not in seen and b"ditto-spu/1" not in seen and b"node0" not in seen
        assert seen[:1] == b"\x16"  # a TLS handshake record opens the connection

        # a plaintext client: its greeting is not TLS, the node ends the connection at once
        with socket.create_connection(config.nodes[0].control_host_port, timeout=10) as raw:
            raw.sendall(len(b"ditto-spu/1 hello " + b"x" * 32).to_bytes(8, "big") + b"ditto-spu/1 hello " + b"x" * 32)
            reply = b""
            while True:
                try:
                    chunk = raw.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                reply += chunk
        assert b"challenge" not in reply and b"ditto-spu" not in reply

        # a driver that trusts another CA refuses the node's certificate
        other = tmp_path / "other"
        other.mkdir()
        other_tls = make_certs(other)
        raw_cfg = json.load(open(path))
        raw_cfg["link"]["tls"]["ca"] = str(other / other_tls["ca"])
        with pytest.raises(DittoError, match="does not verify against link.tls.ca"):
            ping(parse_config(raw_cfg, path), timeout_s=10, ranks=(0,))

        answer = ping(config, timeout_s=10, ranks=(0,))[0]
        assert answer["rank"] == 0 and answer["digest"] == config.digest
        shutdown(config)
        log = nodes.procs[0].communicate(timeout=30)[1]
    assert log.count("rejected a control connection") == 2, log
    assert "(TLS)" in log.splitlines()[0]


def test_tls_node_rejects_a_driver_without_tls_and_keeps_serving(tmp_path):
    path = write_tls_config(tmp_path)
    config = load_config(path)
    plain = json.load(open(path))
    plain["link"]["tls"]["enabled"] = False
    plain_config = parse_config(plain, path)
    with Nodes(path, ranks=(0,)) as nodes:
        ping(config, timeout_s=60, ranks=(0,))
        with pytest.raises(DittoError, match="node 0 .*closed the connection at the greeting"):
            ping(plain_config, timeout_s=10, ranks=(0,))
        assert ping(config, timeout_s=10, ranks=(0,))[0]["rank"] == 0
        shutdown(config)
        log = nodes.procs[0].communicate(timeout=30)[1]
    assert log.count("rejected a control connection: SSLError") == 1, log


def test_a_driver_with_tls_is_refused_by_a_node_without_it(tmp_path):
    path = write_tls_config(tmp_path)
    tls_config = load_config(path)
    plain = json.load(open(path))
    plain["link"]["tls"]["enabled"] = False
    with open(path, "w") as f:
        json.dump(plain, f)
    with Nodes(path, ranks=(0,)) as nodes:
        ping(load_config(path), timeout_s=60, ranks=(0,))
        with pytest.raises(DittoError, match="TLS handshake with node 0 .*failed"):
            ping(tls_config, timeout_s=10, ranks=(0,))
        assert ping(load_config(path), timeout_s=10, ranks=(0,))[0]["rank"] == 0
        shutdown(load_config(path))
        log = nodes.procs[0].communicate(timeout=30)[1]
    assert "rejected a control connection" in log, log


def test_control_tls_needs_a_loadable_certificate(tmp_path):
    from ditto_spu.distributed.channel import server_context

    path = write_tls_config(tmp_path)
    with open(tmp_path / "node.crt", "w") as f:
        f.write("not a certificate\n")
    with pytest.raises(DittoError, match="cannot load link.tls.cert"):
        server_context(load_config(path))
    assert isinstance(client_context(load_config(path)), ssl.SSLContext)


def test_openssl_is_present_for_these_tests():
    """The TLS tests above skip without openssl; make that visible here."""
    assert subprocess.run(["openssl", "version"], capture_output=True).returncode == 0
