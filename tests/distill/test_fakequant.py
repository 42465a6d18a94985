"""The fast training model of the rings agrees with the reference emulator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ditto_spu.distill.fakequant import fake_quant
from ditto_spu.models import load_mode, load_model, prepare_params, secure_forward
from ditto_spu.quant import emulate


def _block(x16, w16, g32):
    """The op mix of a ditto layer: f16 matmul, const product, quad, softmax pieces in f32,
    a LayerNorm-style rsqrt, casts both ways."""
    y = jnp.dot(x16, w16) * jnp.float16(0.125)
    y = jnp.float16(0.125) * y * y + jnp.float16(0.25) * y + jnp.float16(0.5)
    z = y.astype(jnp.float32)
    e = jnp.exp(z - jnp.max(z, axis=-1, keepdims=True))
    p = e / jnp.sum(e, axis=-1, keepdims=True)
    v = jnp.mean(jnp.square(z - z.mean(-1, keepdims=True)), -1, keepdims=True)
    n = (z - z.mean(-1, keepdims=True)) * jax.lax.rsqrt(v + 1e-5) * g32
    return (p + n).astype(jnp.float16).astype(jnp.float32)


def test_fake_quant_matches_emulator_on_an_op_mix():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16)).astype(np.float16)
    w = (rng.normal(size=(16, 8)) * 0.3).astype(np.float16)
    g = rng.uniform(0.5, 1.5, size=(8,)).astype(np.float32)
    ref = emulate(_block, None).evaluate(x, w, g)
    fast = np.asarray(jax.jit(fake_quant(_block, None))(x, w, g))
    exact = np.asarray(_block(x.astype(np.float32), w.astype(np.float32), g))
    assert np.abs(fast - ref).max() <= 2 * 2.0**-8  # within 2 ulps of FXP32[f=8]
    assert np.abs(exact - ref).max() > 4 * np.abs(fast - ref).max()  # the rings matter here

    grads = jax.grad(lambda w_: fake_quant(_block, None)(x, w_.astype(jnp.float16), g).sum())(w.astype(np.float32))
    assert np.isfinite(np.asarray(grads)).all() and np.abs(np.asarray(grads)).sum() > 0


@pytest.mark.slow
def test_fake_quant_matches_emulator_on_tiny_bert_ditto():
    model = load_model("tiny", num_hidden_layers=1)
    mode = load_mode("ditto")
    fwd = secure_forward(model, mode, output="last_hidden_state", one_hot=False)

    def f(p, ids, mask):
        return fwd(prepare_params(p, mode), ids, mask)

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 512, (2, 8)).astype(np.int32)
    mask = np.ones((2, 8), np.int32)
    mask[1, 5:] = 0
    ref = emulate(f, None).evaluate(model.params, ids, mask)
    fast = np.asarray(jax.jit(fake_quant(f, None))(model.params, ids, mask))
    plain = np.asarray(jax.jit(secure_forward(model, mode.all_high(), output="last_hidden_state", one_hot=False))(model.params, ids, mask))
    err_fast = np.abs(fast - ref).max()
    assert err_fast < 2e-3, err_fast  # below one FXP32[f=8] ulp (3.9e-3)
    assert err_fast < np.abs(plain - ref).max() / 10  # far closer than ignoring the rings


def _records(report):
    """{(scope, kind): max |v|} of the emulator's FXP32 records."""
    return {(r.scope, r.kind): r.max_abs for r in report.records if r.ring.field == "FM32"}


def test_range_taps_agree_with_the_emulators_records():
    from ditto_spu.quant import EmulatorOptions

    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 16)).astype(np.float16)
    w = (rng.normal(size=(16, 8)) * 0.3).astype(np.float16)
    g = rng.uniform(0.5, 1.5, size=(8,)).astype(np.float32)
    em = emulate(_block, None, options=EmulatorOptions(mode="record"))
    em.evaluate(x, w, g)
    ref = _records(em.report)
    _, taps = jax.jit(fake_quant(_block, None, ranges=True))(x, w, g)
    got = {k: float(v) for k, v in taps.max_abs.items()}
    common = set(ref) & set(got)
    # every product and value the emulator checks in FXP32 is tapped, with the same maximum
    assert {k for k in ref if k[1] in ("product", "value")} <= common
    for k in common:
        assert got[k] == pytest.approx(ref[k], rel=1e-2, abs=2 * 2.0**-8), k
    assert float(taps.penalty) == 0.0  # far inside FXP32[f=8]
    assert all(h > 1 for h in taps.headroom_bits().values())


def test_range_penalty_counts_only_values_past_the_margin_and_has_a_gradient():
    def f(a16, b16):
        return jnp.dot(a16, b16)

    a = np.full((2, 4), 4.0, np.float32)
    # FXP32[f=8]: a product must stay below 2^(30 − 16) = 16384; margin 1 bit → 8192
    small = np.full((4, 3), 100.0, np.float32)  # dot = 1600: fits
    big = np.full((4, 3), 1000.0, np.float32)  # dot = 16000: past the margin, under the limit

    def penalty(b):
        _, taps = fake_quant(f, None, ranges=True)(a.astype(jnp.float16), b.astype(jnp.float16))
        return taps.penalty

    assert float(jax.jit(penalty)(small)) == 0.0
    assert float(jax.jit(penalty)(big)) > 0.0
    grad = np.asarray(jax.grad(penalty)(big))
    assert (grad > 0).all()  # pushes the offending weights down
    _, taps = jax.jit(fake_quant(f, None, ranges=True))(a.astype(np.float16), big.astype(np.float16))
    key = [k for k in taps.max_abs if k[1] == "product"][0]
    assert float(taps.max_abs[key]) == pytest.approx(16000.0)
    assert taps.headroom_bits()[key] == pytest.approx(np.log2(16384 / 16000))


def test_range_taps_skip_fxp64_by_default():
    def f(x32):
        return x32 * x32

    _, taps = jax.jit(fake_quant(f, None, ranges=True))(np.ones((3,), np.float32))
    assert taps.max_abs == {} and float(taps.penalty) == 0.0
