"""ditto_spu.approx: each approximation against its formula, known values and dtypes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ditto_spu import approx
from ditto_spu.rings import RingSpec

LOW_DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32]


def _erf_gelu(x):
    x = np.asarray(x, np.float64)
    return x * 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


# ---- GeLU ------------------------------------------------------------------------


@pytest.mark.parametrize("x, want", [(0.0, 0.5), (2.0, 1.5), (-2.0, 0.5), (1.0, 0.875), (-4.0, 1.5)])
def test_gelu_quad_known_values(x, want):
    assert float(approx.gelu_quad(jnp.float32(x))) == pytest.approx(want, abs=1e-7)


def test_gelu_quad_is_mpcformer_formula():
    x = np.linspace(-6, 6, 101).astype(np.float32)
    np.testing.assert_allclose(approx.gelu_quad(x), 0.125 * x**2 + 0.25 * x + 0.5, rtol=1e-6, atol=1e-6)


def test_gelu_puma_pieces_match_reference_formula():
    x = np.linspace(-8, 8, 4001)
    a = approx.PUMA_GELU_A
    b = approx.PUMA_GELU_B
    cubic = a[0] + a[1] * x + a[2] * x**2 + a[3] * x**3
    sextic = b[0] + b[1] * x + b[2] * x**2 + b[4] * x**4 + b[6] * x**6
    want = np.where(x < -4, 0.0, np.where(x < -1.95, cubic, np.where(x <= 3, sextic, x)))
    got = np.asarray(approx.gelu_puma(jnp.asarray(x, jnp.float32)), np.float64)
    above = x > 3
    np.testing.assert_allclose(got[~above], want[~above], atol=2e-5)
    # below -4 every step is off: exactly 0; above 3 the steps telescope to x, in float32
    # up to the rounding of the sextic they cancel (a few of its ulps)
    assert np.all(got[x < -4] == 0.0)
    slack = 4 * np.finfo(np.float32).eps * np.abs(sextic[above])
    assert np.all(np.abs(got[above] - x[above].astype(np.float32)) <= slack)


def test_gelu_puma_steps_telescope_exactly_in_a_ring():
    """In fixed point the sum of steps is exact: for x > 3 the emulated FXP64 GeLU is x
    exactly (as encoded), even where the sextic leaves the ring (x = 40: 0.0018·x⁶ ≈ 7e6
    at scale 2^36 wraps mod 2^64); below -4 it is exactly 0."""
    from ditto_spu.policy import Policy
    from ditto_spu.quant import emulate

    ring = RingSpec.parse("FXP64[f=18]")
    x = np.concatenate([np.linspace(3.01, 12, 200), [40.0, -40.0, -4.5, -12.0]]).astype(np.float32)
    got = np.asarray(emulate(approx.gelu_puma, Policy.uniform(ring)).evaluate(x), np.float64)
    encoded = np.round(x.astype(np.float64) * 2**18) / 2**18
    np.testing.assert_array_equal(got[x > 3], encoded[x > 3])
    assert np.all(got[x < -4] == 0.0)


def test_gelu_puma_constants_are_puma_s():
    assert approx.PUMA_GELU_A == (
        -0.5054031199708174, -0.42226581151983866, -0.11807612951181953, -0.011034134030615728,
    )
    assert approx.PUMA_GELU_B == {
        0: 0.008526321541038084, 1: 0.5, 2: 0.3603292692789629,
        4: -0.037688200365904236, 6: 0.0018067462606141187,
    }
    assert approx.PUMA_GELU_BREAKS == (-4.0, -1.95, 3.0)


def test_gelu_puma_is_close_to_exact_gelu():
    x = np.linspace(-10, 10, 20001)
    err = np.abs(np.asarray(approx.gelu_puma(jnp.asarray(x, jnp.float32)), np.float64) - _erf_gelu(x))
    # PUMA's fit: worst error ~0.02 at the upper switch x = 3 (sextic → identity), ~b0 =
    # 0.0085 at x = 0, below 1e-3 on the cubic piece and below 2e-4 under x < -4
    assert err.max() < 0.021
    assert err[np.abs(x) < 1.5].max() < 0.009
    assert err[(x >= -4) & (x < -1.95)].max() < 1e-3
    assert err[x < -4].max() < 2e-4


def test_gelu_quad_steps_pieces_and_error():
    """0 below −1.72, 0.28x² + 0.5x + 0.03 between, x from 1.72 on; within 0.075 of the
    erf GeLU everywhere (worst at the breaks), exactly 0 far below."""
    x = np.linspace(-12, 12, 24001)
    quad = 0.28 * x**2 + 0.5 * x + 0.03
    want = np.where(x < -1.72, 0.0, np.where(x < 1.72, quad, x))
    got = np.asarray(approx.gelu_quad_steps(jnp.asarray(x, jnp.float32)), np.float64)
    away = np.abs(np.abs(x) - 1.72) > 1e-4  # at a break float32 rounding picks the side
    assert np.all((np.abs(got - want) <= 2e-5 * np.maximum(1.0, np.abs(x)))[away])
    assert np.all(got[(x < -1.72) & away] == 0.0)
    err = np.abs(got - _erf_gelu(x))
    assert 0.07 < err.max() < 0.075
    assert err[np.abs(x) < 1.5].max() < 0.035


def test_gelu_quad_steps_constants_are_the_least_squares_fit():
    """The shipped breaks and coefficients are the (rounded) minimiser of the squared error
    against the erf GeLU under an N(0, 2²) weight: at the shipped break the best quadratic
    is the shipped one to the rounding, and moving the break either way costs more."""
    x = np.linspace(-10, 10, 40001)
    w = np.exp(-(x**2) / 8.0)
    g = _erf_gelu(x)

    def fit(b):
        mid = (x >= -b) & (x < b)
        a = np.stack([x[mid] ** 2, x[mid], np.ones(mid.sum())], 1) * np.sqrt(w[mid])[:, None]
        coeffs = np.linalg.lstsq(a, g[mid] * np.sqrt(w[mid]), rcond=None)[0]
        q = coeffs[0] * x**2 + coeffs[1] * x + coeffs[2]
        piecewise = np.where(x < -b, 0.0, np.where(x < b, q, x))
        return coeffs, float(np.sum(w * (piecewise - g) ** 2))

    coeffs, cost = fit(approx.QUAD_STEPS_GELU_BREAK)
    np.testing.assert_allclose(coeffs, approx.QUAD_STEPS_GELU_COEFFS, atol=0.005)
    assert cost < fit(1.6)[1] and cost < fit(1.85)[1]


def test_gelu_exact_is_erf_gelu():
    x = np.linspace(-5, 5, 101)
    np.testing.assert_allclose(approx.gelu_exact(jnp.asarray(x, jnp.float32)), _erf_gelu(x), atol=1e-6)


@pytest.mark.parametrize("name", sorted(approx.GELUS))
@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_gelus_preserve_dtype(name, dtype):
    x = jnp.linspace(-5, 5, 33).astype(dtype)
    assert approx.GELUS[name](x).dtype == dtype


# ---- softmax ---------------------------------------------------------------------


def _scores(shape=(2, 3, 5, 7), seed=0, scale=3.0):
    return (np.random.RandomState(seed).randn(*shape) * scale).astype(np.float32)


def _mask(shape=(2, 1, 1, 7)):
    m = np.ones(shape, np.int32)
    m[1, ..., 4:] = 0
    return m


def test_softmax_exact_matches_finfo_min_reference():
    x, m = _scores(), _mask()
    ref = jax.nn.softmax(np.where(m > 0, x, np.finfo(np.float32).min), axis=-1)
    np.testing.assert_allclose(approx.softmax_exact(jnp.asarray(x), m), ref, rtol=1e-6, atol=1e-7)


def test_softmax_2quad_formula():
    x, m = _scores(), _mask()
    s = (x.astype(np.float64) + 5.0) ** 2 * m
    want = s / s.sum(-1, keepdims=True)
    got = approx.softmax_2quad(jnp.asarray(x), m)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert approx.TWO_QUAD_C == 5.0


def test_softmax_puma_formula_and_cutoff():
    x, m = _scores(scale=6.0), _mask()
    xb = x.astype(np.float64) + np.where(m > 0, 0.0, approx.MASK_BIAS)
    xs = xb - xb.max(-1, keepdims=True)
    e = np.exp(xs) * (xs > -14)
    want = e / e.sum(-1, keepdims=True)
    got = np.asarray(approx.softmax_puma(jnp.asarray(x), m))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert np.all(got[xs <= -14] == 0.0)  # below the cut-off: exactly zero
    assert (xs <= -14).any() and ((xs > -14) & (xs < -5)).any()  # the data exercises both


def test_softmax_puma_close_to_exact():
    x = _scores(scale=2.0)
    np.testing.assert_allclose(approx.softmax_puma(jnp.asarray(x)), jax.nn.softmax(x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(approx.SOFTMAXES))
def test_softmax_masked_entries_are_zero_and_rows_sum_to_one(name):
    x, m = _scores(), _mask()
    p = np.asarray(approx.SOFTMAXES[name](jnp.asarray(x), m))
    assert np.all(np.broadcast_to(m, p.shape)[p != 0] == 1)
    assert np.all(p[1, ..., 4:] == 0.0)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(approx.SOFTMAXES))
@pytest.mark.parametrize("dtype", LOW_DTYPES)
def test_softmaxes_preserve_dtype(name, dtype):
    x, m = jnp.asarray(_scores()).astype(dtype), _mask()
    assert approx.SOFTMAXES[name](x, m).dtype == dtype
    assert approx.SOFTMAXES[name](x, m, high_dtype=jnp.float32).dtype == dtype


def _ops(text):
    """(stablehlo op, result element type) per line of StableHLO text."""
    import re

    out = []
    for line in text.splitlines():
        op = re.search(r"= (stablehlo\.\w+)", line)
        ty = re.findall(r"tensor<(?:[\dx]*x)?(\w+)>", line)
        if op and ty:
            out.append((op.group(1).split(".")[1], ty[-1]))
    return out


def test_mixed_precision_softmax_runs_shift_low_and_exp_div_high():
    x = jnp.asarray(_scores()).astype(jnp.float16)
    m = jnp.asarray(_mask())
    fn = lambda x, m: approx.softmax_puma(x, m, high_dtype=jnp.float32)  # noqa: E731
    ops = _ops(jax.jit(fn).lower(x, m).as_text())
    assert ("subtract", "f16") in ops  # x - max(x) in low precision
    assert ("maximum", "f16") in ops  # the cut-off: a clamp in the low ring
    assert not any(dt == "i1" for _, dt in ops)  # no boolean has to cross rings
    assert ("exponential", "f32") in ops and ("exponential", "f16") not in ops
    assert ("divide", "f32") in ops and ("divide", "f16") not in ops
    assert ("subtract", "f32") not in ops
    # close to the all-f32 computation
    ref = approx.softmax_puma(x.astype(jnp.float32), m)
    np.testing.assert_allclose(np.asarray(fn(x, m), np.float32), ref, atol=2e-3)


# ---- the mask constant -----------------------------------------------------------


def test_mask_bias_is_finite_exact_and_fits_the_rings():
    b = approx.MASK_BIAS
    assert math.isfinite(b) and b < 0
    assert math.log2(-b).is_integer()  # exact in every fixed-point encoding
    for dt in (np.float16, jnp.bfloat16, np.float32):
        assert float(np.asarray(b, dt)) == b
    assert abs(b) < RingSpec("FM64", 18).max_abs
    for f in range(0, 19):
        assert abs(b) < RingSpec("FM32", f).max_abs
    # after the max shift, with realistic |scores| <= 100: FXP32 up to 18 fraction bits
    assert approx.check_mask_bias_fits(18, 32, max_abs_score=100.0)
    assert approx.check_mask_bias_fits(18, 64, max_abs_score=1e6)
    assert not approx.check_mask_bias_fits(20, 32)
    # and finfo.min, which it replaces, fits no ring
    assert abs(float(np.finfo(np.float32).min)) > RingSpec("FM64", 0).max_abs


def test_mask_bias_kills_masked_weights_like_finfo_min():
    x = jnp.asarray(_scores(scale=40.0))  # scores beyond ±100
    m = _mask()
    assert float(jnp.abs(x).max()) > 100
    ref = jax.nn.softmax(jnp.where(m > 0, x, jnp.finfo(jnp.float32).min), axis=-1)
    np.testing.assert_array_equal(approx.softmax_exact(x, m), ref)
