import os
import subprocess
import sys
import time

import numpy as np
import pytest

from ditto_spu.demo_plan import build_mixed_ring_plan, demo_inputs, plaintext_reference
from ditto_spu.errors import DittoError, PartyError, PlanError
from ditto_spu.mpc.segments import segment_from_jax
from ditto_spu.plan import InputBinding, OutputBinding, Plan, VarInfo
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.shares import reconstruct, share_values
from ditto_spu.simulation import Simulator


def matmul_plan(ring, m, k, n, dtype="float16"):
    np_dtype = np.float16 if dtype == "float16" else np.float32
    seg = segment_from_jax(
        "matmul", ring, lambda a, b: a @ b,
        (np.zeros((m, k), np_dtype), np.zeros((k, n), np_dtype)), ["a", "b"], ["c"],
    )
    v = {
        "a": VarInfo(ring, (m, k), dtype),
        "b": VarInfo(ring, (k, n), dtype),
        "c": VarInfo(ring, (m, n), dtype),
    }
    return Plan(
        (seg,), (InputBinding("a", v["a"]), InputBinding("b", v["b"])), (OutputBinding("c", v["c"]),), v
    ).validate()


@pytest.fixture(scope="module")
def sim():
    return Simulator(recv_timeout_s=30)


def test_fm32_large_matmul_runs_and_is_correct(sim):
    """Regression: stock SPU segfaults here without the aligned allocator."""
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (128, 768))
    b = rng.normal(0, 0.05, (768, 768))
    ring = FXP32(10)
    out, stats = sim.run(matmul_plan(ring, 128, 768, 768), {"a": a, "b": b})
    expected = a @ b
    # inputs carry <= 1/2 ulp of rounding each; 768-term sums add it up plus one truncation
    err = np.abs(out["c"] - expected)
    assert err.max() < 768 * 2 * ring.ulp * 0.1 + 4 * ring.ulp, err.max()
    assert np.linalg.norm(out["c"] - expected) / np.linalg.norm(expected) < 0.01
    assert all(b > 0 for b in stats.bytes_sent)


def test_fm32_without_allocator_is_a_clear_error_not_a_crash(tmp_path):
    script = tmp_path / "fm32.py"
    script.write_text(
        "import numpy as np\n"
        "from ditto_spu.simulation import Simulator\n"
        "from ditto_spu.rings import FXP32\n"
        "import tests.runtime.test_runtime as t\n"
        "plan = t.matmul_plan(FXP32(8), 64, 64, 64)\n"
        "Simulator(recv_timeout_s=5).run(plan, {'a': np.ones((64, 64)), 'b': np.ones((64, 64))})\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "DITTO_SPU_ALLOCATOR_REEXEC")}
    env["PYTHONPATH"] = os.getcwd()
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "aligned allocator" in proc.stderr and "LD_PRELOAD" in proc.stderr


def test_fm64_plan_runs_without_any_fm32(sim):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(16, 32)), rng.normal(size=(32, 8))
    out, _ = sim.run(matmul_plan(FXP64(18), 16, 32, 8, "float32"), {"a": a, "b": b})
    np.testing.assert_allclose(out["c"], a @ b, atol=1e-3)


def test_mixed_ring_plan_matches_plaintext(sim):
    plan = build_mixed_ring_plan(rows=32, dim=64)
    inputs = demo_inputs(32, 64)
    out, stats = sim.run(plan, inputs)
    expected = plaintext_reference(inputs)
    assert np.linalg.norm(out["y"] - expected) / np.linalg.norm(expected) < 0.01
    kinds = [row["kind"] for row in stats.step_table()]
    assert kinds[0] == "segment" and "upcast" in kinds[1] and "downcast" in kinds[3]
    rows = stats.step_table()
    assert rows[1]["rounds"] == 1 and rows[3]["rounds"] == 0 and rows[3]["bytes_sent"] == [0, 0, 0]
    # upcast: <= 384 bits per element, all parties together
    assert sum(rows[1]["bytes_sent"]) * 8 <= 384 * 32 * 64


def test_plan_serialization_roundtrip_runs_identically(sim):
    plan = build_mixed_ring_plan(rows=8, dim=16)
    again = Plan.from_bytes(plan.to_bytes())
    assert [s.name for s in again.steps] == [s.name for s in plan.steps]
    assert again.variables == plan.variables
    inputs = demo_inputs(8, 16)
    out, _ = sim.run(again, inputs)
    expected = plaintext_reference(inputs)
    assert np.linalg.norm(out["y"] - expected) / np.linalg.norm(expected) < 0.02


def test_plan_validation_errors():
    plan = build_mixed_ring_plan(rows=4, dim=8)
    steps = list(plan.steps)
    with pytest.raises(PlanError, match="reads variable 'h'.*no input or earlier step"):
        Plan(tuple(steps[1:]), plan.inputs, plan.outputs, plan.variables).validate()
    # a segment reading a value of the other ring without a cast
    from ditto_spu.plan import Segment

    reads_low_in_high = Segment("exp", FXP64(18), b"", ("h",), ("e64",))
    with pytest.raises(PlanError, match="reads 'h' in FXP64.*lives in FXP32.*insert a cast"):
        Plan((steps[0], reads_low_in_high), plan.inputs, plan.outputs, plan.variables).validate()
    with pytest.raises(PlanError, match="format"):
        Plan.from_json('{"format": 99}')
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.from_json("{")


def test_input_errors_are_clear(sim):
    plan = build_mixed_ring_plan(rows=4, dim=8)
    inputs = demo_inputs(4, 8)
    with pytest.raises(PlanError, match="missing input.*w2"):
        sim.run(plan, {k: v for k, v in inputs.items() if k != "w2"})
    with pytest.raises(PlanError, match="unknown input.*bogus"):
        sim.run(plan, {**inputs, "bogus": np.zeros(1)})
    with pytest.raises(PlanError, match="shape"):
        sim.run(plan, {**inputs, "x": np.zeros((5, 8))})


@pytest.mark.parametrize("bad,slow", [(0, False), (1, False), (2, False), (2, True)])
def test_a_failing_party_stops_the_run_promptly_and_is_named(bad, slow, monkeypatch):
    """One party gets a share in the wrong ring: it fails at once; run() must not hang,
    and the error names that party — also when it is slow to start (a loaded machine) and
    its peers' receives time out waiting for it before it fails."""
    import threading

    from ditto_spu.mpc.runtime import PartyRuntime

    if slow:
        original = PartyRuntime.run

        def late_run(self, plan, inputs, **kw):
            if getattr(threading.current_thread(), "rank", None) == bad:
                time.sleep(4.5)  # past the peers' 3 s receive timeout
            return original(self, plan, inputs, **kw)

        monkeypatch.setattr(PartyRuntime, "run", late_run)
    sim = Simulator(recv_timeout_s=3)
    plan = build_mixed_ring_plan(rows=4, dim=8)
    shares = sim.share_inputs(plan, demo_inputs(4, 8))
    shares[bad]["x"] = share_values(np.zeros((4, 8)), FXP64(18), "float16")[bad]
    t0 = time.monotonic()
    with pytest.raises(PartyError) as info:
        sim.run_shares(plan, shares)
    assert time.monotonic() - t0 < 30
    assert info.value.rank == bad and "expects FXP32[f=10]" in str(info.value), str(info.value)[:300]


def test_runtime_reports_missing_variable():
    import threading

    from spu import libspu

    from ditto_spu.mpc.runtime import PartyRuntime

    desc = libspu.link.Desc()
    for r in range(3):
        desc.add_party(f"p{r}", f"t{r}")
    desc.recv_timeout_ms = 5000
    errors = {}

    def party(rank):
        rt = PartyRuntime(libspu.link.create_mem(desc, rank))
        try:
            rt.get_share("nope")
        except PlanError as e:
            errors[rank] = str(e)

    threads = [threading.Thread(target=party, args=(r,)) for r in range(3)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert set(errors) == {0, 1, 2}
    assert "variable 'nope' does not exist" in errors[0]


def test_a_session_keeps_named_inputs_loaded_between_runs(monkeypatch):
    """Two runs on one session: the kept input (the very same share objects) is not loaded
    into SPU again, the others are; both runs compute the plan."""
    from ditto_spu.mpc.runtime import PartyRuntime

    pushes = []
    original = PartyRuntime._push_to_spu

    def counting(self, name):
        if name not in self._in_spu:
            pushes.append((self.rank, name))
        return original(self, name)

    monkeypatch.setattr(PartyRuntime, "_push_to_spu", counting)
    sim = Simulator(recv_timeout_s=30)
    plan = build_mixed_ring_plan(rows=4, dim=8)
    inputs = demo_inputs(4, 8)
    shares = sim.share_inputs(plan, inputs)
    segment_inputs = {n for s in plan.segments for n in s.input_names} & {b.name for b in plan.inputs}
    assert segment_inputs, "the plan must read an input in an SPU segment for this test to mean anything"
    kept = sorted(segment_inputs)[:1]
    with sim.session() as session:
        for run in range(2):
            outputs, _ = session.run_shares(plan, shares, keep=kept)
            y = reconstruct([outputs[r]["y"] for r in range(3)])
            want = plaintext_reference(inputs)
            assert np.linalg.norm(y - want) < 0.05 * np.linalg.norm(want)
            if run == 0:
                first = list(pushes)
    again = pushes[len(first):]
    assert all(name not in kept for _, name in again), again
    assert any(name in kept for _, name in first)


def test_a_bad_input_share_names_the_party_before_any_party_starts():
    sim = Simulator(recv_timeout_s=3)
    plan = build_mixed_ring_plan(rows=4, dim=8)
    shares = sim.share_inputs(plan, demo_inputs(4, 8))
    shares[1]["x"] = share_values(np.zeros((4, 8)), FXP64(18), "float16")[1]
    with pytest.raises(PartyError, match="input 'x' is FXP64") as info:
        sim.run_shares(plan, shares)
    assert (info.value.rank, info.value.step) == (1, "inputs")
    with sim.session() as session:
        with pytest.raises(PartyError) as info:
            session.run_shares(plan, shares)
        assert (info.value.rank, info.value.step) == (1, "inputs")
        # nothing ran, so the session still serves a good run
        inputs = demo_inputs(4, 8)
        outputs, _ = session.run_shares(plan, sim.share_inputs(plan, inputs))
        y = reconstruct([outputs[r]["y"] for r in range(3)])
        want = plaintext_reference(inputs)
        assert np.linalg.norm(y - want) < 0.05 * np.linalg.norm(want)


def test_a_failed_session_run_names_the_party_and_ends_the_session(monkeypatch):
    from ditto_spu.mpc.runtime import PartyRuntime

    real = PartyRuntime._run_segment

    def failing_on_party_1(self, step):
        if self.rank == 1:
            raise PlanError("planted failure")
        return real(self, step)

    monkeypatch.setattr(PartyRuntime, "_run_segment", failing_on_party_1)
    sim = Simulator(recv_timeout_s=3)
    plan = build_mixed_ring_plan(rows=4, dim=8)
    with sim.session() as session:
        with pytest.raises(PartyError, match="planted failure") as info:
            session.run_shares(plan, sim.share_inputs(plan, demo_inputs(4, 8)))
        assert info.value.rank == 1
        with pytest.raises(DittoError, match="failed earlier"):
            session.run_shares(plan, sim.share_inputs(plan, demo_inputs(4, 8)))
