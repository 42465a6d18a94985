"""sim_jax on random small programs: a right answer or a clear error, never a silent wrap.

Hypothesis draws a function (sum, product, square, matmul, mean, difference of squares),
a shape, a dtype (f16: FXP32[f=8], f32: FXP64[f=18], under the default policy) and a
magnitude from 1e-3 to 1e5. The secure run must either match the fixed-point emulation of
the same rings (within the truncation noise of its products), or stop with the range
audit's :class:`~ditto_spu.quant.RingOverflowError` (naming the op whose value left its
ring) —
never return a wrapped value, never crash with anything else. Values up to 10 in
magnitude fit both rings, so there an error is a failure too.
"""

import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ditto_spu.quant import RingOverflowError, emulate
from ditto_spu.simulation import sim_jax

FUNCTIONS = {  # jnp functions, so the exact reference below runs them in float32 too
    "add": lambda x, y: x + y,
    "multiply": lambda x, y: x * y,
    "square_minus": lambda x, y: x * x - y * y,
    "matmul": lambda x, y: x @ y.T,
    "mean_scaled": lambda x, y: jnp.mean(x, axis=-1) * y[..., 0],
}
FRAC_BITS = {"float16": 8, "float32": 18}


@st.composite
def programs(draw):
    name = draw(st.sampled_from(sorted(FUNCTIONS)))
    rows = draw(st.integers(1, 4))
    cols = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(sorted(FRAC_BITS)))
    exponent = draw(st.integers(-3, 5))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    scale = 10.0**exponent
    limit = float(np.finfo(dtype).max) / 2  # finite in the dtype (f16 stops at 65504)
    x = np.clip(rng.uniform(-1, 1, (rows, cols)) * scale, -limit, limit).astype(dtype)
    y = np.clip(rng.uniform(-1, 1, (rows, cols)) * scale, -limit, limit).astype(dtype)
    return name, x, y, scale


def _products(name: str, cols: int) -> int:
    """How many truncated products feed one output element (each ±1.5 ulps)."""
    return {"add": 0, "multiply": 1, "square_minus": 2, "matmul": cols, "mean_scaled": 2}[name]


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_sim_jax_answers_right_or_says_why(program):
    name, x, y, scale = program
    fn = FUNCTIONS[name]
    try:
        secure = np.asarray(sim_jax(fn)(x, y), np.float64)
    except RingOverflowError as error:
        # the one accepted failure: the range audit's error, before any secure work — and
        # only where a value or product can leave its ring (|x|, |y| ≤ 10 fit both rings)
        assert scale > 10, f"{name} {x.dtype} at scale {scale} raised: {error}"
        assert "does not fit" in str(error) and "FXP" in str(error), error  # which ring, what to do
        return
    emulated = np.asarray(emulate(fn).evaluate(x, y), np.float64)
    assert secure.shape == emulated.shape
    ulp = 2.0 ** -FRAC_BITS[x.dtype.name]
    # each truncation is within 1.5 ulps where the emulation rounds to nearest, and a
    # later product multiplies an earlier error by its other factor (up to the inputs'
    # magnitude); a wrapped value would be off by about 2^(ring bits − f)
    magnitude = max(1.0, float(np.abs(x).max()), float(np.abs(y).max()))
    bound = ulp * (2.0 * _products(name, x.shape[1]) + 2.0) * magnitude
    assert np.all(np.abs(secure - emulated) <= bound), (name, x.dtype, np.abs(secure - emulated).max(), bound)
    # ... and the emulation models a wrap faithfully, so also against the exact function of
    # the encoded inputs (their rounding to the ring adds half an ulp per factor and term)
    encoded = [np.round(v.astype(np.float64) / ulp) * ulp for v in (x, y)]
    exact = np.asarray(fn(*(jnp.asarray(v, jnp.float32) for v in encoded)), np.float64)
    loose = 2.0 * bound + ulp * x.shape[1] * magnitude
    assert np.all(np.abs(secure - exact) <= loose + 1e-6 * np.abs(exact)), (name, np.abs(secure - exact).max(), loose)
