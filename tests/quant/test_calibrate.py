"""Calibration of per-layer FXP32 fraction bits, and checking inputs against a policy."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ditto_spu.policy import Policy
from ditto_spu.quant import (
    CalibrationError,
    RingOverflowError,
    calibrate,
    calibrate_detailed,
    check,
    max_frac_bits,
)
from ditto_spu.quant.calibrate import override_pattern
from ditto_spu.rings import FXP32


def _net(x, w0, w1):
    """Two 'layers' of very different magnitudes: layer 1's products are ~64x layer 0's."""
    with jax.named_scope("net"), jax.named_scope("layer"), jax.named_scope("0"):
        h = jnp.dot(x, w0)
        h = h * h
    with jax.named_scope("net"), jax.named_scope("layer"), jax.named_scope("1"):
        y = jnp.dot(h * 8.0, w1)
    return y


def _inputs(seed, n=3, scale=1.0):
    rs = np.random.RandomState(seed)
    w0 = (0.25 * rs.randn(16, 16)).astype(np.float16)
    w1 = (0.25 * rs.randn(16, 8)).astype(np.float16)
    return [((scale * rs.uniform(-1, 1, (4, 16))).astype(np.float16), w0, w1) for _ in range(n)]


def test_calibration_never_overflows_its_set_and_is_maximal():
    inputs = _inputs(0)
    margin = 1
    res = calibrate_detailed(_net, Policy(), inputs, margin_bits=margin)
    bits = res.group_bits
    assert set(bits) == {"net/layer/0", "net/layer/1"}
    assert bits["net/layer/1"] < bits["net/layer/0"]
    # nothing FXP32 leaves the ring with the margin, on every calibration input
    check(_net, res.policy, inputs, margin_bits=margin, fields=("FM32",))
    # and one more bit in any group would (unless it is already the top candidate)
    for g, f in bits.items():
        if f == 16:
            continue
        bigger = res.policy.with_override(override_pattern(g, "layer"), float16=FXP32(f + 1))
        with pytest.raises(RingOverflowError, match=g):
            check(_net, bigger, inputs, margin_bits=margin, fields=("FM32",))
    # the weights follow the layers reading them
    assert res.arg_bits["[1]"] == bits["net/layer/0"] and res.arg_bits["[2]"] == bits["net/layer/1"]
    assert res.policy.ring_for("float16", "net/layer/1/dot_general") == FXP32(bits["net/layer/1"])
    assert res.policy.ring_for("float16", "[2]") == FXP32(bits["net/layer/1"])
    assert res.policy.ring_for("float16", "net/layer/10/dot_general") == FXP32(8)  # untouched


def test_check_flags_an_input_that_would_overflow():
    pol = calibrate(_net, Policy(), _inputs(0), margin_bits=1)
    check(_net, pol, _inputs(0)[0])  # fits
    big = _inputs(0, n=1, scale=8.0)[0]
    with pytest.raises(RingOverflowError, match=r"net/layer/\d/(dot_general|mul).*FXP32\[f=\d+\].*limit"):
        check(_net, pol, big)


def test_calibration_error_when_nothing_fits():
    inputs = _inputs(0, scale=64.0)
    with pytest.raises(CalibrationError, match="net/layer"):
        calibrate(_net, Policy(), inputs, candidate_bits=[12, 13])


def test_max_frac_bits_rule():
    from ditto_spu.quant import Record

    # product |v|·2^(2f) < 2^(30 - margin): |v| = 1 -> f < 14.5 -> 14 (margin 1)
    assert max_frac_bits(Record("s", FXP32(8), "product", 1.0), 1) == 14
    assert max_frac_bits(Record("s", FXP32(8), "product", 1.01), 1) == 14
    assert max_frac_bits(Record("s", FXP32(8), "product", 2.0), 1) == 13
    assert max_frac_bits(Record("s", FXP32(8), "value", 1024.0), 1) == 18
    assert max_frac_bits(Record("s", FXP32(8), "value", 1023.0), 1) == 19


def _tiny_bert_ditto():
    from ditto_spu.models import load_mode, load_model, one_hot_ids, prepare_params, secure_forward

    model = load_model("tiny")
    mode = load_mode("ditto")
    fwd = secure_forward(model, mode, output="last_hidden_state")
    params = prepare_params(model.params, mode)
    rs = np.random.RandomState(0)
    inputs = []
    for k in range(2):
        ids = rs.randint(0, model.config.vocab_size, (1, 8))
        mask = np.ones((1, 8), np.int32)
        mask[0, 6 + k :] = 0  # padded: the attention-mask product is exercised
        inputs.append((params, one_hot_ids(ids, model.config.vocab_size, np.float16), mask))
    return fwd, inputs


def test_tiny_bert_ditto_calibration_round_trips(tmp_path):
    fwd, inputs = _tiny_bert_ditto()
    res = calibrate_detailed(fwd, Policy(), inputs, margin_bits=1)
    layers = {g for g in res.group_bits if "/encoder/layer/" in g}
    assert layers == {"FlaxBertModule/encoder/layer/0", "FlaxBertModule/encoder/layer/1"}
    assert all(6 <= f <= 16 for f in res.group_bits.values())
    path = tmp_path / "policy.json"
    res.policy.save(path)
    loaded = Policy.load(path)
    assert loaded == res.policy
    assert Policy.from_json(loaded.to_json()) == loaded
    obj = json.loads(path.read_text())
    assert any(o["scope"] == "FlaxBertModule/encoder/layer/0/*" for o in obj["overrides"])
    # the calibrated policy holds the calibration set (margin 1) in every FXP32 ring
    check(fwd, loaded, inputs, margin_bits=1, fields=("FM32",))
    q = "FlaxBertModule/encoder/layer/0/attention/self/query/dot_general"
    assert loaded.ring_for("float16", q) == FXP32(res.group_bits["FlaxBertModule/encoder/layer/0"])


def test_cli_calibrate(tmp_path, capsys):
    from ditto_spu.cli import calibrate as cli_calibrate

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli_calibrate.add_parser(sub)
    out = tmp_path / "policy_tiny.json"
    args = parser.parse_args(
        ["calibrate", "--model", "tiny", "--mode", "ditto", "--builtin-texts", "2", "--seq-len", "8", "--batch", "1",
         "--margin-bits", "1", "--out", str(out), "--json"]
    )
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and summary["group_bits"]
    pol = Policy.load(out)
    assert any(r.field == "FM32" and r.frac_bits != 8 for r in pol.rings)


def test_calibration_sentences_are_english_sentences():
    from ditto_spu.data import calibration_sentences

    texts = calibration_sentences(5)
    assert len(texts) == 5 and len(set(texts)) == 5
    assert all(t[0].isupper() and len(t.split()) >= 6 for t in texts)


def test_calibration_sets_the_comparison_bound_from_puma_gelu_steps():
    """PUMA's GeLU (FXP64) after an FXP32 layer, as ditto-puma runs it: its three steps
    are threshold selects whose |x − c| the emulator records against the bound, and
    calibration sets the policy's bound from what they saw (× 1.25, a multiple of 16)."""
    from ditto_spu.approx import PUMA_GELU_BREAKS, gelu_puma

    def layer(x, w):
        with jax.named_scope("net"), jax.named_scope("layer"), jax.named_scope("0"):
            return gelu_puma(jnp.dot(x, w).astype(jnp.float32))

    rs = np.random.RandomState(3)
    w = (0.5 * rs.randn(16, 16)).astype(np.float16)
    inputs = [((8.0 * rs.uniform(-1, 1, (4, 16))).astype(np.float16), w) for _ in range(2)]
    res = calibrate_detailed(layer, Policy(), inputs)
    pre = [np.asarray(jnp.dot(x, w).astype(jnp.float32), np.float64) for x, w in inputs]
    seen = max(np.abs(p - c).max() for p in pre for c in PUMA_GELU_BREAKS)
    assert seen * 1.25 <= res.policy.comparison_bound <= 16 * np.ceil(seen * 1.25 / 16) + 16
    assert res.policy.comparison_bound < Policy().comparison_bound
