"""The fixed-point emulator against exact plaintext and against its own error model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ditto_spu.policy import Policy
from ditto_spu.quant import EmulatorOptions, RingOverflowError, emulate, layer_of
from ditto_spu.rings import FXP32, FXP64


def grid(v, f):
    return np.round(np.asarray(v, np.float64) * 2.0**f) / 2.0**f


def test_matmul_f16_error_is_that_of_2_pow_minus_8():
    rs = np.random.RandomState(0)
    x = rs.uniform(-1, 1, (8, 32))
    w = rs.uniform(-1, 1, (32, 16))
    em = emulate(lambda a, b: jnp.dot(a, b), Policy(low=FXP32(8)))
    out = em.evaluate(x.astype(np.float16), w.astype(np.float16))
    x16, w16 = x.astype(np.float16).astype(np.float64), w.astype(np.float16).astype(np.float64)
    xq, wq = grid(x16, 8), grid(w16, 8)
    # exactly: inputs rounded to 2^-8, exact integer dot product, one rounding of the result
    np.testing.assert_array_equal(out, grid(xq @ wq, 8))
    ulp = 2.0**-8
    bound = 0.5 * ulp * (np.abs(x16) @ np.ones_like(w16) + np.ones_like(x16) @ np.abs(w16)) + 32 * (ulp / 2) ** 2 + ulp / 2
    assert np.all(np.abs(out - x16 @ w16) <= bound)
    assert np.abs(out - x16 @ w16).max() > ulp / 4  # it does quantize


def test_exact_when_inputs_on_grid_and_products_fit():
    rs = np.random.RandomState(1)
    x = rs.randint(-16, 16, (4, 8)) / 16.0  # multiples of 2^-4: products are multiples of 2^-8
    w = rs.randint(-16, 16, (8, 4)) / 16.0

    def f(a, b):
        h = jnp.dot(a, b)  # multiples of 2^-8: on the grid, no rounding
        return h * 2.0 + 0.5 - a[:, :4] * a[:, 4:]

    em = emulate(f, Policy(low=FXP32(8)))
    out = em.evaluate(x.astype(np.float16), w.astype(np.float16))
    np.testing.assert_array_equal(out, (x @ w) * 2.0 + 0.5 - x[:, :4] * x[:, 4:])
    assert not em.report.overflows()


def _overflowing_product(a, b):
    with jax.named_scope("hot"):
        return a * b


def test_product_overflow_wraps_like_the_ring():
    # FXP32[f=14]: a product is exact at scale 2^28 and wraps mod 2^32, so 2.5·4 = 10 -> 10 - 16.
    pol = Policy(low=FXP32(14))
    a, b = np.array([2.5, 1.5], np.float16), np.array([4.0, 1.0], np.float16)
    em = emulate(_overflowing_product, pol)  # mode="wrap" is the default
    np.testing.assert_array_equal(em.evaluate(a, b), [-6.0, 1.5])
    (rec,) = [r for r in em.report.overflows() if r.kind == "product"]
    assert rec.scope == "hot/mul" and rec.ring == FXP32(14) and rec.max_abs == 10.0 and rec.limit == 4.0
    assert rec.n_over == 1


def test_product_overflow_raises_and_records():
    pol = Policy(low=FXP32(14))
    a, b = np.array([2.5], np.float16), np.array([4.0], np.float16)
    with pytest.raises(RingOverflowError, match=r"hot/mul.*product.*10.*FXP32\[f=14\].*limit 4"):
        emulate(_overflowing_product, pol, options=EmulatorOptions(mode="raise")).evaluate(a, b)
    em = emulate(_overflowing_product, pol, options=EmulatorOptions(mode="record"))
    np.testing.assert_array_equal(em.evaluate(a, b), [10.0])
    assert em.report.overflows()[0].scope == "hot/mul"
    # the same product fits at f = 12 (limit 2^(30-24) = 64)
    em12 = emulate(_overflowing_product, Policy(low=FXP32(12)), options=EmulatorOptions(mode="raise"))
    np.testing.assert_array_equal(em12.evaluate(a, b), [10.0])


def test_cast_error_model():
    rs = np.random.RandomState(2)
    v = rs.uniform(-3, 3, 4096).astype(np.float32)

    def f(x):
        down = x.astype(jnp.float16)  # FXP64[18] -> FXP32[8]: rounds to 2^-8
        with jax.named_scope("fine"):
            fine = down * 1.0  # FXP32[8] -> FXP32[12]: exact
        with jax.named_scope("coarse"):
            coarse = x.astype(jnp.float16)  # FXP64[18] -> FXP32[4]
        up = fine.astype(jnp.float32)  # FXP32[12] -> FXP64[18]: exact
        return down, fine, coarse, up

    pol = Policy().with_override("fine", float16="FXP32[f=12]").with_override("coarse", float16="FXP32[f=4]")
    em = emulate(f, pol)
    down, fine, coarse, up = em.evaluate(v)
    x = grid(v, 18)
    for out, f_bits in ((down, 8), (coarse, 4)):
        np.testing.assert_array_equal(out, grid(out, f_bits))  # on the destination grid
        assert np.abs(out - x).max() <= 2.0 ** -(f_bits + 1)  # within half an ulp (kernels: 1.5)
    np.testing.assert_array_equal(fine, down)
    np.testing.assert_array_equal(up, down)
    casts = {(r.scope, str(r.ring)) for r in em.report.records if r.kind == "cast"}
    assert ("convert_element_type", "FXP32[f=8]") in casts
    assert ("fine/mul", "FXP32[f=12]") in casts
    assert ("coarse/convert_element_type", "FXP32[f=4]") in casts


def test_gradients_flow_straight_through():
    rs = np.random.RandomState(3)
    x = rs.randn(4, 8).astype(np.float16)
    w = (0.3 * rs.randn(8, 8)).astype(np.float16)

    def f(x, w):
        h = jnp.dot(x, w)
        h = 0.125 * h * h + 0.25 * h + 0.5
        s = jax.nn.softmax(h.astype(jnp.float32) - 3.0)
        return s.astype(jnp.float16)

    em = emulate(f, Policy(), jit=True)

    def loss(w):
        return jnp.sum(em(x, w).astype(jnp.float32) ** 2)

    g = jax.grad(loss)(w)
    assert g.dtype == w.dtype and g.shape == w.shape
    g = np.asarray(g, np.float64)
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    g_jit = np.asarray(jax.jit(jax.grad(loss))(w), np.float64)
    np.testing.assert_allclose(g_jit, g, rtol=1e-3, atol=1e-4)
    g_exact = np.asarray(jax.grad(lambda w: jnp.sum(f(x.astype(jnp.float32), w.astype(jnp.float32)) ** 2))(w))
    assert np.corrcoef(g.ravel(), g_exact.ravel())[0, 1] > 0.95


def _two_layers(x, w0, w1):
    h = x
    for i, w in enumerate((w0, w1)):
        with jax.named_scope("encoder"), jax.named_scope("layer"), jax.named_scope(str(i)):
            with jax.named_scope("dense"):
                h = jnp.dot(h, w)
            with jax.named_scope("norm"):
                hf = h.astype(jnp.float32)
                hf = hf * jax.lax.rsqrt(jnp.mean(hf * hf, -1, keepdims=True) + 1e-3)
            h = hf.astype(jnp.float16)
    return h


def test_report_names_layers_and_scopes():
    rs = np.random.RandomState(4)
    args = (rs.randn(4, 16).astype(np.float16), (0.3 * rs.randn(16, 16)).astype(np.float16), (0.3 * rs.randn(16, 16)).astype(np.float16))
    em = emulate(_two_layers, Policy())
    em.evaluate(*args)
    rep = em.report
    assert {"encoder/layer/0", "encoder/layer/1", "[0]", "[1]", "[2]"} <= set(rep.layers())
    scopes = set(rep.scopes())
    assert {"encoder/layer/0/dense/dot_general", "encoder/layer/1/norm/rsqrt"} <= scopes
    dense = [r for r in rep.by_scope() if r.scope == "encoder/layer/1/dense/dot_general" and r.kind == "product"]
    assert dense and dense[0].ring == FXP32(8)
    rsq = [r for r in rep.by_scope() if r.scope.endswith("norm/rsqrt")]
    assert all(r.ring == FXP64(18) for r in rsq)
    assert layer_of("encoder/layer/1/norm/rsqrt") == "encoder/layer/1"
    table = rep.table("layer")
    assert "encoder/layer/0" in table and "FXP32[f=8]" in table and "product" in table
    assert "encoder/layer/1/dense/dot_general" in rep.table("scope")


def test_scopes_are_the_compilers():
    """The emulator's op scopes are the ones the compiler's policy matching sees."""
    from passes import parse_module
    from passes.parse import module_text

    rs = np.random.RandomState(5)
    args = (rs.randn(4, 16).astype(np.float16), (0.3 * rs.randn(16, 16)).astype(np.float16), (0.3 * rs.randn(16, 16)).astype(np.float16))
    em = emulate(_two_layers, Policy())
    em.evaluate(*args)
    ours = {r.scope for r in em.report.records if r.kind in ("value", "product")}
    graph = parse_module(module_text(jax.jit(_two_layers).lower(*args).compiler_ir("stablehlo")))
    theirs = {n.location.scope for n in graph.nodes}
    assert ours <= theirs, sorted(ours - theirs)


def test_nonlinear_models():
    x = np.linspace(-6, 2, 33).astype(np.float32)
    F = 18
    out = emulate(jnp.exp, Policy()).evaluate(x)
    np.testing.assert_allclose(out, (1 + grid(x, F) / 32) ** 32, rtol=1e-3, atol=1e-4)  # Taylor, 5 iterations
    assert np.abs(out - np.exp(x)).max() > 1e-3  # and not the exact exp
    y = np.linspace(0.05, 50, 40).astype(np.float32)
    rs = np.asarray(emulate(jax.lax.rsqrt, Policy()).evaluate(y))
    np.testing.assert_allclose(rs, 1 / np.sqrt(y), rtol=2e-3)
    d = emulate(lambda a, b: a / b, Policy()).evaluate(x, np.float32(3.0) + 0 * x)
    np.testing.assert_allclose(d, x / 3.0, atol=1e-3)
    ex = emulate(jnp.exp, Policy(), options=EmulatorOptions(nonlinear="exact")).evaluate(x)
    np.testing.assert_allclose(ex, grid(np.exp(grid(x, F)), F), atol=2.0**-F)
