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

    from ditto_spu.cli_compile import load_function
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
    from ditto_spu.runtime import StepStats
    from ditto_spu.stats import RunStats

    measured = StepStats("k", "cast", "FXP32->FXP64", 0.1, 100, 100, 1)
    unmeasured = StepStats("s", "segment", "FXP64[f=18]", 0.1, None, None, None)
    assert RunStats(0.2, [[measured]] * 3).bytes_sent == [100, 100, 100]
    with pytest.raises(DittoError, match="profiling was off"):
        _ = RunStats(0.2, [[measured, unmeasured]] * 3).bytes_sent


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
