import json
import subprocess
import sys


def test_casts_json_reports_every_kernel_within_spec():
    proc = subprocess.run(
        [sys.executable, "-m", "ditto_spu.cli", "casts", "--n", "3000", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)
    keys = {"kernel", "src", "dst", "max_err_ulps", "bits_per_element", "rounds", "elements_per_second"}
    assert rows and all(keys <= set(r) for r in rows)
    kinds = {r["kernel"] for r in rows}
    assert any("downcast" in k for k in kinds) and any("upcast" in k for k in kinds)
    for r in rows:
        assert r["max_err_ulps"] <= r["stated_max_err_ulps"] + 1e-9, r
        assert r["bits_per_element"] <= r["stated_bits_per_element"] + 1e-9, r
        if "downcast" in r["kernel"]:
            assert r["bits_per_element"] == 0 and r["rounds"] == 0 and r["max_err_ulps"] <= 2
        if "upcast" in r["kernel"]:
            assert r["bits_per_element"] <= 384 and r["rounds"] == 1 and r["max_err_ulps"] == 0
        assert r["src"].startswith("FXP") and "[f=" in r["dst"]


def test_kernels_json_reports_every_call_kernel_within_spec():
    """`ditto-spu kernels` on small sizes: every kernel measured, errors within the stated
    bounds, rounds equal to the message depths the module docs state."""
    from ditto_spu.kernels.reduce_max import max_rounds
    from ditto_spu.kernels.rsqrt import rounds as rsqrt_rounds
    from ditto_spu.kernels.threshold_select import bits_per_element as threshold_select_bits
    from ditto_spu.kernels.threshold_select import rounds as threshold_select_rounds
    from ditto_spu.rings import FXP64

    proc = subprocess.run(
        [sys.executable, "-m", "ditto_spu.cli", "kernels", "--scale", "0.0625", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    measured = json.loads(proc.stdout)
    rows = {r["kernel"]: r for r in measured}
    assert set(rows) == {
        "matmul_fxp32", "multiply", "max_reduced_ring", "clamp_reduced_ring", "exp_taylor_fxp32", "rsqrt_calibrated",
        "sum_local", "divide_calibrated", "threshold_select",
    }
    products = {r["ring"]: r for r in measured if r["kernel"] == "multiply"}
    assert set(products) == {"FXP32[f=8]", "FXP64[f=18]"}
    assert all(r["rounds"] == 2 for r in products.values())
    assert products["FXP32[f=8]"]["bits_per_output"] == 144 and products["FXP64[f=18]"]["bits_per_output"] == 384
    assert rows["exp_taylor_fxp32"]["rounds"] == 11 and rows["exp_taylor_fxp32"]["bits_per_output"] == 1152
    assert rows["divide_calibrated"]["rounds"] == 20 and rows["divide_calibrated"]["max_error"] <= 32
    for r in measured:
        if r["stated_max_error"] is not None:
            assert r["max_error"] <= r["stated_max_error"] + 1e-9, r
        assert r["outputs"] > 0 and r["outputs_per_second"] > 0, r
    assert rows["sum_local"]["max_error"] == 0 and rows["sum_local"]["bits_per_output"] == 0
    assert rows["sum_local"]["rounds"] == 0
    assert rows["matmul_fxp32"]["rounds"] == 2
    # per-party counts: a party idle in a round (role 1 while role 0 shares A in the sign
    # bit's first round) does not count it, so the busiest party may see one less than
    # the message depth
    assert max_rounds(128, 17) - 1 <= rows["max_reduced_ring"]["rounds"] <= max_rounds(128, 17)
    assert rows["clamp_reduced_ring"]["rounds"] == 8
    select = rows["threshold_select"]  # exact outside its window; depth and bits as its module doc states
    assert select["max_error"] == 0 and select["rounds"] == threshold_select_rounds(17)
    assert select["bits_per_output"] == threshold_select_bits(17, 64)
    assert rows["rsqrt_calibrated"]["rounds"] == rsqrt_rounds(FXP64(18), 2.0**-12, 2.0**16)
    assert rows["rsqrt_calibrated"]["error_unit"] == "relative" and rows["rsqrt_calibrated"]["max_error"] < 0.01


def test_demo_json_is_accurate():
    proc = subprocess.run(
        [sys.executable, "-m", "ditto_spu.cli", "demo", "--small", "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["relative_l2_error"] < 0.01
    assert len(out["bytes_sent"]) == 3


def test_demo_quotes_qad_figures_from_the_shipped_results():
    from ditto_spu.demo import qad_results

    qad = qad_results()
    for key in ("command", "student_dir", "held_out_cosine_mean", "held_out_cosine_min",
                "held_out_sentences", "distill_minutes", "neighbour_agreement_after", "sources"):
        assert key in qad, key
    assert qad["command"].startswith("ditto-spu distill ")
    assert -1 <= qad["held_out_cosine_min"] <= qad["held_out_cosine_mean"] <= 1
    assert qad["held_out_sentences"] >= 100


def test_bad_sequence_lengths_and_function_specs_are_clear_errors():
    import pytest

    from ditto_spu.cli.compile import load_function
    from ditto_spu.errors import DittoError
    from ditto_spu.infer import secure_inference
    from ditto_spu.models import load_model

    tiny = load_model("tiny")
    with pytest.raises(DittoError, match="positive integer"):
        secure_inference(tiny, "ditto", "hello", seq_len=0, model_name="tiny")
    with pytest.raises(DittoError, match="exceeds the model's 64 positions"):
        secure_inference(tiny, "ditto", "hello", seq_len=100000, model_name="tiny")
    with pytest.raises(DittoError, match="cannot import 'nosuchmod'"):
        load_function("nosuchmod:fn")
    with pytest.raises(DittoError, match="has no attribute 'nosuchfn'"):
        load_function("os:nosuchfn")


def test_totals_over_unmeasured_segments_raise_instead_of_reporting_zero():
    import pytest

    from ditto_spu.errors import DittoError
    from ditto_spu.mpc.runtime import StepStats
    from ditto_spu.mpc.stats import RunStats

    measured = StepStats("k", "cast", "FXP32->FXP64", 0.1, 100, 100, 1)
    unmeasured = StepStats("s", "segment", "FXP64[f=18]", 0.1, None, None, None)
    assert RunStats(0.2, [[measured]] * 3).bytes_sent == [100, 100, 100]
    with pytest.raises(DittoError, match="profiling was off"):
        _ = RunStats(0.2, [[measured, unmeasured]] * 3).bytes_sent


def test_plan_wall_leaves_out_the_slowest_link_set_up():
    from ditto_spu.mpc.stats import RunStats

    assert RunStats(2.0, [[]] * 3, [0] * 3, [0.5, 1.25, 0.25]).plan_wall_s == 0.75
    assert RunStats(2.0, [[]] * 3).plan_wall_s == 2.0  # simulator: links exist before the plan


def test_a_script_from_standard_input_gets_a_clear_allocator_error_not_silence():
    import os
    import subprocess
    import sys

    from ditto_spu import native

    script = "import ditto_spu.native as n\nn.ensure_preloaded()\nprint('ran', n.is_active())\n"
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and k != native._REEXEC_FLAG}
    bare = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, env=env, timeout=120)
    assert bare.returncode != 0 and "script read from standard input" in bare.stderr, bare.stderr[-2000:]
    preloaded = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120,
                               env={**env, "LD_PRELOAD": native.library_path()})
    assert preloaded.returncode == 0 and "ran True" in preloaded.stdout, preloaded.stderr[-2000:]


def test_a_child_that_inherits_the_re_exec_flag_still_gets_the_allocator(tmp_path):
    """A process started from a re-executed one inherits its environment flag; with
    LD_PRELOAD removed it must re-execute itself (the flag names the process that set it),
    not stop with 'still not active'. Here a parent script re-executes itself under the
    allocator, then starts a child with LD_PRELOAD removed."""
    import os
    import subprocess
    import sys

    from ditto_spu import native

    child = tmp_path / "child.py"
    child.write_text("import ditto_spu.native as n\nn.ensure_preloaded()\nprint('child ran', n.is_active())\n")
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import os, subprocess, sys\n"
        "import ditto_spu.native as n\n"
        "n.ensure_preloaded()\n"
        "env = {k: v for k, v in os.environ.items() if k != 'LD_PRELOAD'}\n"
        f"out = subprocess.run([sys.executable, {str(child)!r}], env=env, capture_output=True, text=True)\n"
        "print(out.stdout, out.stderr[-1500:])\n"
        "sys.exit(out.returncode)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", native._REEXEC_FLAG)}
    run = subprocess.run([sys.executable, str(parent)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and "child ran True" in run.stdout, (run.stdout + run.stderr)[-2000:]
