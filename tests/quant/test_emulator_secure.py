"""The emulator against a secure 3-party run (ditto_spu.simulation.sim_jax) of the same policy.

The emulator rounds where SPU truncates probabilistically (each truncation within ±1 ulp of
round-to-nearest), so the two agree within a few ulps of the output's ring, propagated:
far closer than either is to the exact float result.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ditto_spu import frontend, simulation
from ditto_spu.policy import Policy
from ditto_spu.quant import emulate


def block(x, w1, w2, gamma):
    with jax.named_scope("proj"):  # FXP32[f=12]
        h = jnp.dot(x, w1)
        h = 0.125 * h * h + 0.25 * h + 0.5  # quad GeLU
    with jax.named_scope("nonlinear"):  # FXP64[f=18]
        hf = h.astype(jnp.float32)
        e = jnp.exp(hf - jnp.max(hf, -1, keepdims=True))
        p = e / jnp.sum(e, -1, keepdims=True)
        mu = jnp.mean(hf, -1, keepdims=True)
        var = jnp.mean((hf - mu) ** 2, -1, keepdims=True)
        ln = (hf - mu) * jax.lax.rsqrt(var + 1e-5) * gamma
    with jax.named_scope("out"):  # FXP32[f=10]
        y = jnp.dot(p.astype(jnp.float16), w2) + ln.astype(jnp.float16)
    return y, ln + p


POLICY = Policy().with_override("proj", float16="FXP32[f=12]").with_override("out", float16="FXP32[f=10]")


def _args(seed=0):
    rs = np.random.RandomState(seed)
    return (
        (0.5 * rs.randn(16, 32)).astype(np.float16),
        (0.3 * rs.randn(32, 32)).astype(np.float16),
        (0.3 * rs.randn(32, 32)).astype(np.float16),
        (1 + 0.1 * rs.randn(32)).astype(np.float32),
    )


def test_emulator_agrees_with_secure_run():
    args = _args()
    secure = simulation.sim_jax(block, POLICY)(*args)
    program = frontend.compile(block, *args, policy=POLICY, compile_segments=False)
    assert {str(r) for r in program.plan.rings} == {"FXP32[f=12]", "FXP32[f=10]", "FXP64[f=18]"}
    emulated = emulate(block, POLICY).evaluate(*args)
    exact = block(*(np.asarray(a, np.float32) for a in args))
    y_sec, z_sec = (np.asarray(v, np.float64) for v in secure)
    y_emu, z_emu = emulated
    y_ex, z_ex = (np.asarray(v, np.float64) for v in exact)
    ulp10, ulp12 = 2.0**-10, 2.0**-12
    # FXP32[f=10] output: the emulator is within 8 ulps of the secure result ...
    assert np.abs(y_emu - y_sec).max() <= 8 * ulp10
    # ... and much closer to it than the exact float result is
    assert np.abs(y_emu - y_sec).max() < 0.5 * np.abs(y_ex - y_sec).max()
    # FXP64[f=18] output: its inputs come from FXP32[f=12], whose few ulps of truncation noise
    # (a few 1e-4 here) LayerNorm's rsqrt (up to ~7 here) and exp then amplify; the
    # emulator's own exp / Goldschmidt / rsqrt models are matched far more closely. SPU's
    # truncation is random (its seeds cannot be fixed): the worst element of 512 is a tail
    # statistic (seen 0.0056 = 23 ulps), so the bound on it is loose and "closer" is judged
    # on the mean error (typically ~1/6 of the exact result's)
    assert np.abs(z_emu - z_sec).max() <= 48 * ulp12
    assert np.abs(z_emu - z_sec).mean() < 0.5 * np.abs(z_ex - z_sec).mean()


def test_wrapped_product_matches_secure_run():
    def f(a, b):
        with jax.named_scope("hot"):
            return a * b

    pol = Policy().with_override("hot", float16="FXP32[f=14]")
    # Products at scale 2^28 wrap mod 2^32: 15 -> -1, -15 -> 1. (Only wrapped elements that land
    # inside SPU's safe range ±2^30 are deterministic: the truncation protocol assumes it.)
    a, b = np.array([3.75, 1.5, -5.0], np.float16), np.array([4.0, 1.0, 3.0], np.float16)
    secure = np.asarray(simulation.sim_jax(f, pol, check_ranges=False)(a, b), np.float64)
    emulated = emulate(f, pol).evaluate(a, b)
    np.testing.assert_allclose(emulated, [-1.0, 1.5, 1.0], atol=0)
    assert np.abs(emulated - secure).max() <= 2.0**-14
