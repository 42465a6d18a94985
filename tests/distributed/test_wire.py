"""The control channel's schema: round trips, and every kind of malformed message is a
WireError — a pickle payload is never executed; a node drops bad messages and keeps serving."""

from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest

from ditto_spu.distributed.channel import AuthenticationError, connect
from ditto_spu.distributed.config import ConfigError, load_config
from ditto_spu.distributed.driver import ping, shutdown
from ditto_spu.distributed.wire import WireError, decode, encode
from ditto_spu.mpc.runtime import StepStats
from ditto_spu.rings import RingSpec
from ditto_spu.shares import AShare

from .nodes import Nodes, write_config


def _share():
    ring = RingSpec.parse("FXP32[f=10]")
    comp = np.arange(24, dtype=np.uint32).reshape(3, 4, 2)
    return AShare(ring, (3, 4), "float16", comp)


def test_round_trip_of_a_job_and_a_result():
    share = _share()
    step = StepStats("seg0", "segment", "FXP32[f=10]", 0.5, 100, 90, 3, 12, [{"op": "mul", "bytes": 8}])
    msg = {"type": "result", "rank": 1, "outputs": {"y": share}, "steps": [step], "wall_s": 1.5,
           "plan": b"{\"steps\": []}", "flags": [True, None, "x"], "big": np.ones((2, 2), np.float64)}
    back = decode(encode(msg))
    assert back["type"] == "result" and back["rank"] == 1 and back["flags"] == [True, None, "x"]
    y = back["outputs"]["y"]
    assert isinstance(y, AShare) and y.ring == share.ring and y.dtype == "float16"
    np.testing.assert_array_equal(y.components, share.components)
    assert back["steps"] == [step] and back["plan"] == msg["plan"]
    np.testing.assert_array_equal(back["big"], np.ones((2, 2)))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ditto-spu-pwned",))


def test_a_pickle_payload_is_rejected_and_never_executed():
    if os.path.exists("/tmp/ditto-spu-pwned"):
        os.remove("/tmp/ditto-spu-pwned")
    payload = pickle.dumps({"type": "run", "x": _Evil()})
    with pytest.raises(WireError):
        decode(payload)
    assert not os.path.exists("/tmp/ditto-spu-pwned")
    with pytest.raises(WireError, match="not sent on the control channel"):
        encode({"type": "run", "x": _Evil()})


def _frame(header: dict, *buffers: bytes) -> bytes:
    header = dict(header, buffers=[len(b) for b in buffers])
    text = json.dumps(header).encode()
    return struct.pack(">Q", len(text)) + text + b"".join(buffers)


@pytest.mark.parametrize(
    "data,match",
    [
        (b"\x00\x01", "shorter than its length field"),
        (struct.pack(">Q", 1 << 40) + b"{}", "header length"),
        (struct.pack(">Q", 5) + b"nope!", "not JSON"),
        (_frame({"kind": "run"}), "string 'type'"),
        (_frame({"type": "steal"}), "unexpected message type"),
        (_frame({"type": "run", "x": {"$array": 0, "dtype": "|O", "shape": [1]}}, b"\0" * 8), "not accepted"),
        (_frame({"type": "run", "x": {"$array": 0, "dtype": "<u4", "shape": [3]}}, b"\0" * 8), "needs 12 bytes"),
        (_frame({"type": "run", "x": {"$array": 5, "dtype": "<u4", "shape": [2]}}, b"\0" * 8), "buffer reference"),
        (_frame({"type": "run", "x": {"$code": "print(1)"}}), "unknown tag"),
        (_frame({"type": "run"}, b"\0" * 4), "not referenced"),
        (_frame({"type": "run", "x": {"$ashare": {"ring": "FXP32[f=8]", "dtype": "float16", "shape": [2],
                                                  "components": {"$array": 0, "dtype": "<u8", "shape": [2, 2]}}}},
                b"\0" * 32), "invalid share"),
        (_frame({"type": "run", "s": {"$step": {"name": "x", "evil": 1}}}), "step stats take only"),
    ],
)
def test_malformed_messages_are_wire_errors(data, match):
    with pytest.raises(WireError, match=match):
        decode(data, expected_types={"run", "hello"})


def test_truncated_buffers_are_detected():
    data = encode({"type": "run", "x": np.zeros(4, np.uint64)})
    with pytest.raises(WireError, match="buffers declare"):
        decode(data[:-1])


def test_a_node_drops_bad_messages_and_keeps_serving(tmp_path):
    path = write_config(tmp_path)
    config = load_config(path)
    with Nodes(path, ranks=(0,)) as nodes:
        ping(config, timeout_s=60, ranks=(0,))
        node = config.nodes[0]
        with connect(node.control_host_port, config.authkey(), None) as conn:
            conn.send_bytes(pickle.dumps({"type": "hello"}))  # a pickled request: dropped, never unpickled
        with connect(node.control_host_port, config.authkey(), None) as conn:
            conn.send_bytes(_frame({"type": "run", "x": {"$code": 1}}))
        with connect(node.control_host_port, config.authkey(), None) as conn:
            conn.sock.sendall(struct.pack(">Q", config.max_message_bytes + 1))  # a frame over the limit: refused unread
        with pytest.raises(AuthenticationError, match="refused the driver key"):
            connect(node.control_host_port, b"a wrong key of some length", None)
        answer = ping(config, timeout_s=10, ranks=(0,))[0]
        assert answer["rank"] == 0 and answer["digest"] == config.digest
        shutdown(config)
        log = nodes.procs[0].communicate(timeout=30)[1]
    assert log.count("dropped a malformed control message") == 3, log
    assert "larger than the limit" in log and "failed the key challenge" in log, log


def test_non_loopback_deployments_need_a_real_key(tmp_path, monkeypatch):
    path = write_config(tmp_path)
    raw = json.loads(open(path).read())
    raw["nodes"][2]["control_address"] = "10.1.2.3:6000"
    with open(path, "w") as f:
        json.dump(raw, f)
    config = load_config(path)
    monkeypatch.delenv(config.authkey_env, raising=False)
    with pytest.raises(ConfigError, match="needs a secret driver key"):
        config.authkey()
    for role in ("owner", "client"):  # each role has its own key, required the same way
        monkeypatch.delenv(config.key_env(role), raising=False)
        with pytest.raises(ConfigError, match=f"needs a secret {role} key: set \\${config.key_env(role)}"):
            config.role_key(role)
    monkeypatch.setenv(config.authkey_env, "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        config.authkey()
    monkeypatch.setenv(config.authkey_env, "x" * 32)
    assert config.authkey() == b"x" * 32
    # a node needs every role's key, and distinct ones (else a client could upload)
    monkeypatch.setenv(config.owner_key_env, "o" * 32)
    monkeypatch.setenv(config.client_key_env, "o" * 32)
    with pytest.raises(ConfigError, match="have the same key"):
        config.node_keys()
    monkeypatch.setenv(config.client_key_env, "c" * 32)
    assert config.node_keys() == {"driver": b"x" * 32, "owner": b"o" * 32, "client": b"c" * 32}
