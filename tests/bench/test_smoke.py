"""Smoke test of ``ditto-spu bench``: all three modes on one layer of the tiny BERT at seq 16 (CI-sized)."""

import argparse
import json

import pytest

from ditto_spu.bench.categories import CATEGORIES
from ditto_spu.cli import bench as cli_bench

MODES = ("puma", "mpcformer", "ditto")


def _bench(argv):
    parser = argparse.ArgumentParser(prog="ditto-spu")
    cli_bench.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = [
        "bench", "--model", "tiny", "--seq-len", "16", "--layers", "1", "--modes", ",".join(MODES),
        "--json", str(out / "r.json"), "--markdown", str(out / "r.md"), "--plot", str(out), "--quiet",
    ]
    assert _bench(argv) == 0
    return out, json.loads((out / "r.json").read_text())


def test_one_record_per_mode_with_the_required_fields(result):
    _, data = result
    assert [r["mode"] for r in data["records"]] == list(MODES)
    for r in data["records"]:
        assert (r["model"], r["seq_len"], r["layers"], r["embedding"]) == ("tiny", 16, 1, "none")
        assert len(r["bytes_sent"]) == 3 and all(b > 0 for b in r["bytes_sent"])
        assert r["wall_s"] > 0 and r["compile_s"] > 0 and r["rounds"] > 0
        assert r["wall_s"] < r["lan_s"] < r["wan_s"]
        assert set(r["breakdown"]) == set(CATEGORIES)
        # the MPC result is the plaintext forward of the same mode, up to fixed point
        assert r["rel_l2_err"] < 0.05, r["mode"]
    assert data["meta"]["command"].startswith("ditto-spu bench --model tiny --seq-len 16")


def test_breakdown_accounts_for_every_byte_and_round(result):
    _, data = result
    for r in data["records"]:
        bd = r["breakdown"]
        for party in range(3):
            assert sum(bd[c]["bytes_sent"][party] for c in CATEGORIES) == r["bytes_sent"][party]
        assert sum(bd[c]["wall_s"] for c in CATEGORIES) == pytest.approx(r["steps_wall_s"])
        assert r["steps_wall_s"] <= r["wall_s"]
        assert bd["embedding"]["steps"] == 0  # body only
        for c in ("linear", "softmax", "gelu", "layernorm"):
            assert bd[c]["bytes_sent"][0] > 0, (r["mode"], c)


def test_only_ditto_has_casts_and_two_rings(result):
    _, data = result
    by_mode = {r["mode"]: r for r in data["records"]}
    for name in ("puma", "mpcformer"):
        assert by_mode[name]["cast_steps"] == 0 and by_mode[name]["breakdown"]["casts"]["steps"] == 0
        assert by_mode[name]["rings"] == ["FXP64[f=18]"]
    ditto = by_mode["ditto"]
    assert ditto["rings"] == ["FXP32[f=8]", "FXP64[f=18]"]
    assert ditto["cast_steps"] > 0 and ditto["breakdown"]["casts"]["bytes_sent"][0] > 0
    assert sum(c["steps"] for c in ditto["casts_by_component"].values()) == ditto["cast_steps"]
    # quad GeLU is far cheaper than PUMA's piecewise GeLU
    assert ditto["breakdown"]["gelu"]["bytes_sent"][0] < by_mode["puma"]["breakdown"]["gelu"]["bytes_sent"][0] / 4


def test_summary_ratios(result):
    _, data = result
    by_mode = {r["mode"]: r for r in data["records"]}
    ratios = data["summary"]["ratios"]
    assert set(ratios) == {"ditto/puma", "ditto/mpcformer"}
    q = ratios["ditto/puma"]
    assert q["wall_s"] == pytest.approx(by_mode["ditto"]["wall_s"] / by_mode["puma"]["wall_s"])
    assert q["bytes_sent"] == pytest.approx(max(by_mode["ditto"]["bytes_sent"]) / max(by_mode["puma"]["bytes_sent"]))
    assert q["bytes_sent"] < 1  # ditto sends less than puma even on the tiny model


def test_markdown_and_plot_are_written(result):
    out, _ = result
    text = (out / "r.md").read_text()
    assert "| ditto/puma |" in text and "| mpcformer |" in text and "modelled" in text
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000


def test_category_split_does_not_change_the_cost():
    """Splitting segments by category only moves segment boundaries: the same bytes are
    sent in total (how they spread over the parties varies from run to run in SPU)."""
    import numpy as np

    from ditto_spu import frontend
    from ditto_spu.bench.categories import split_by_category
    from ditto_spu.bench.harness import BenchConfig, build_case, load_bench_model, token_ids
    from ditto_spu.models import load_mode
    from ditto_spu.simulation import Simulator

    config = BenchConfig(model="tiny", seq_len=8, layers=1)
    model = load_bench_model(config)
    fn, args = build_case(model, load_mode("mpcformer"), config, token_ids(model, config))
    sent = []
    for split in (None, split_by_category):
        program = frontend.compile(fn, *args, split_by=split)
        _, stats = Simulator().run(program.plan, program.flatten_inputs(*args), np.random.default_rng(0))
        sent.append(stats.bytes_sent)
    assert sum(sent[1]) == pytest.approx(sum(sent[0]), rel=2e-3)
