import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ditto_spu.demo_plan import build_mixed_ring_plan, demo_inputs, plaintext_reference
from ditto_spu.distributed.config import ConfigError, load_config, parse_config
from ditto_spu.distributed.driver import run_plan, shutdown
from ditto_spu.errors import DittoError
from ditto_spu.simulation import Simulator

from .nodes import Nodes, wait_exit, write_config


def test_shipped_config_is_valid():
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "3pc.json"))
    assert [n.id for n in cfg.nodes] == ["node0", "node1", "node2"]
    assert str(cfg.low) == "FXP32[f=10]" and str(cfg.high) == "FXP64[f=18]"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda c: c["nodes"].pop(), "nodes"),
        (lambda c: c["nodes"][1].update(link_address="localhost"), "nodes/1/link_address"),
        (lambda c: c["link"].update(recv_timeout_ms="soon"), "link/recv_timeout_ms"),
        (lambda c: c["rings"].update(low="FXP64[f=18]"), "rings/low"),
        (lambda c: c.update(colour="blue"), "(top level)"),
    ],
)
def test_bad_config_names_the_field(tmp_path, mutate, field):
    path = write_config(tmp_path)
    cfg = json.load(open(path))
    mutate(cfg)
    with pytest.raises(ConfigError, match=re.escape(f"field '{field}'")):
        parse_config(cfg, path)


def test_three_nodes_match_the_simulator_and_count_the_same_bytes(tmp_path):
    path = write_config(tmp_path)
    config = load_config(path)
    plan = build_mixed_ring_plan(rows=16, dim=32, low=config.low, high=config.high)
    inputs = demo_inputs(16, 32)
    with Nodes(path) as nodes:
        nodes.wait_ready()
        out_nodes, stats_nodes = run_plan(config, plan, inputs)
        out_sim, stats_sim = Simulator(options=config.spu).run(plan, inputs)
        shutdown(config)
    expected = plaintext_reference(inputs)
    for out in (out_nodes, out_sim):
        assert np.linalg.norm(out["y"] - expected) / np.linalg.norm(expected) < 0.01
    # The two runs use fresh randomness, so they agree up to fixed-point noise.
    np.testing.assert_allclose(out_nodes["y"], out_sim["y"], atol=0.05)
    rows_n, rows_s = stats_nodes.step_table(), stats_sim.step_table()
    for rn, rs in zip(rows_n, rows_s):
        assert rn["step"] == rs["step"]
        if rn["kind"] != "segment":  # kernel traffic is data-independent: exactly equal
            assert rn["bytes_sent"] == rs["bytes_sent"]
    total_n, total_s = sum(stats_nodes.bytes_sent), sum(stats_sim.bytes_sent)
    assert abs(total_n - total_s) <= 0.1 * total_s, (total_n, total_s)


def _wait_for_line(path, text, timeout):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if os.path.exists(path) and text in open(path).read():
            return True
        time.sleep(0.05)
    return False


def test_killing_a_node_mid_run_stops_everyone(tmp_path):
    """Node 1 is killed once all three nodes run the job (node 2, the last to receive
    it, has logged its start): the driver names it and the other two exit non-zero.
    (A node dying while the jobs are still being sent: the next test.)"""
    path = write_config(tmp_path, recv_timeout_ms=15000)
    with Nodes(path, log_dir=str(tmp_path)) as nodes:
        nodes.wait_ready()
        driver = subprocess.Popen(
            [sys.executable, "-c",
             "from ditto_spu.distributed.config import load_config\n"
             "from ditto_spu.distributed.driver import run_plan\n"
             "from ditto_spu.demo_plan import build_mixed_ring_plan, demo_inputs\n"
             f"cfg = load_config({path!r})\n"
             "plan = build_mixed_ring_plan(rows=512, dim=1024, low=cfg.low, high=cfg.high)\n"
             "inputs = demo_inputs(512, 1024)\n"
             "run_plan(cfg, plan, inputs)\n"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        logs = [os.path.join(str(tmp_path), f"node{r}.log") for r in range(3)]
        assert _wait_for_line(logs[2], "job started", 120), "node 2 never started the job"
        nodes.procs[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        code, _ = wait_exit(driver, 60)
        assert code not in (None, 0), "driver must exit non-zero"
        assert "node 1" in driver.stderr.read()
        for rank in (0, 2):
            rc, _ = wait_exit(nodes.procs[rank], max(1, 60 - (time.monotonic() - t0)))
            assert rc not in (None, 0), f"node {rank} must exit non-zero within 60 s"
        assert time.monotonic() - t0 < 60
        assert "aborted" in open(logs[0]).read()


def test_unreachable_node_is_a_clear_error(tmp_path):
    path = write_config(tmp_path)
    config = load_config(path)
    plan = build_mixed_ring_plan(rows=4, dim=8)
    with Nodes(path, ranks=(0, 2)):
        from ditto_spu.distributed.driver import ping

        ping(config, timeout_s=60, ranks=(0, 2))  # the two running nodes are up
        with pytest.raises(DittoError, match="cannot reach node 1 .*ditto-spu node"):
            run_plan(config, plan, demo_inputs(4, 8), connect_timeout_s=2)


def test_port_in_use_and_wrong_rank_are_clear_errors(tmp_path):
    path = write_config(tmp_path)
    with Nodes(path, ranks=(0,)) as nodes:
        nodes.wait_ready = None
        time.sleep(2)
        dup = subprocess.run(
            [sys.executable, "-m", "ditto_spu.cli", "node", "--config", path, "--rank", "0"],
            capture_output=True, text=True, timeout=60,
        )
        assert dup.returncode != 0 and "already in use" in dup.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "ditto_spu.cli", "node", "--config", path, "--rank", "3"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0 and "--rank must be 0, 1 or 2" in bad.stderr


def test_nodes_reject_a_driver_with_another_config(tmp_path):
    path = write_config(tmp_path)
    config = load_config(path)
    other = dict(config.raw, job_timeout_s=123)
    other_cfg = parse_config(other, path)
    with Nodes(path) as nodes:
        nodes.wait_ready()
        with pytest.raises(DittoError, match="differs from the driver's"):
            run_plan(other_cfg, build_mixed_ring_plan(rows=4, dim=8), demo_inputs(4, 8))
        shutdown(config)


def test_tls_config_requires_existing_files(tmp_path):
    path = write_config(tmp_path)
    cfg = json.load(open(path))
    cfg["link"]["tls"] = {"enabled": True, "cert": "missing.crt", "key": "k", "ca": "c"}
    with pytest.raises(ConfigError, match="link/tls/cert"):
        parse_config(cfg, path)


def test_two_layer_bert_in_ditto_mode_on_three_nodes_matches_the_simulator(tmp_path):
    from ditto_spu.distributed.driver import NodesRunner
    from ditto_spu.infer import cosine, secure_inference
    from ditto_spu.models import load_model

    path = write_config(tmp_path)
    config = load_config(path)
    model = load_model("tiny", seed=0)  # 2 layers, same weights in both runs
    text = "three nodes compute a transformer layer by layer"
    kwargs = dict(seq_len=16, policy=config.policy_object(), model_name="tiny", emulate=False)
    with Nodes(path) as nodes:
        nodes.wait_ready()
        on_nodes = secure_inference(model, "ditto", text, runner=NodesRunner(config), **kwargs)
        shutdown(config)
    simulated = secure_inference(model, "ditto", text, runner=Simulator(options=config.spu), **kwargs)
    assert on_nodes.rings == simulated.rings and on_nodes.segments == simulated.segments
    # fresh randomness in each run: equal up to fixed-point noise
    assert cosine(on_nodes.output, simulated.output) > 0.9999
    np.testing.assert_allclose(on_nodes.output, simulated.output, atol=0.05)
    total_n, total_s = sum(on_nodes.bytes_sent), sum(simulated.bytes_sent)
    assert abs(total_n - total_s) <= 0.05 * total_s


def test_a_node_dying_while_the_job_is_sent_aborts_the_others(tmp_path, monkeypatch):
    """Node 1's connection breaks while the driver sends it its job: the driver names the
    node, and nodes 0 (already holding its job) and 2 are told to abort instead of waiting
    on a dead peer until their link times out."""
    from ditto_spu.distributed import driver
    from ditto_spu.distributed.wire import decode, encode

    class Conn:
        def __init__(self, rank):
            self.rank, self.sent = rank, []
            self.sock = self  # settimeout below

        def settimeout(self, timeout):
            """A fake socket has no timeout."""

        def recv_bytes(self, maxlength):
            return encode({"type": "admitted", "rank": self.rank})

        def send_bytes(self, data):
            if self.rank == 1:
                raise BrokenPipeError(32, "Broken pipe")
            self.sent.append(decode(data)["type"])

        def close(self):
            """A fake connection holds nothing to release."""

    conns = [Conn(r) for r in range(3)]
    monkeypatch.setattr(driver, "_connect", lambda config, rank, timeout: conns[rank])
    config = load_config(write_config(tmp_path))
    with pytest.raises(DittoError, match="node 1 .*closed its connection while the job was being sent"):
        run_plan(config, build_mixed_ring_plan(rows=4, dim=8, low=config.low, high=config.high), demo_inputs(4, 8))
    assert conns[0].sent == ["run", "abort"] and conns[2].sent == ["abort"]
