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
