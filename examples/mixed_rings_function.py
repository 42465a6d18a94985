"""Any JAX function on mixed rings: f16 parts run in FXP32, f32 parts in FXP64.

    python examples/mixed_rings_function.py
"""

import ditto_spu.native

ditto_spu.native.ensure_preloaded()

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ditto_spu.simulation import sim_jax  # noqa: E402


def block(x, w1, w2, gamma):
    h = (x @ w1).astype(jnp.float32)  # FXP32 matmul, then an upcast
    p = jnp.exp(h - h.max(axis=-1, keepdims=True))  # FXP64 softmax
    p = (p / p.sum(axis=-1, keepdims=True)).astype(jnp.float16)  # downcast
    y = (p @ w2).astype(jnp.float32)
    return gamma * (y - y.mean(-1, keepdims=True)) / jnp.sqrt(y.var(-1, keepdims=True) + 1e-5)


rng = np.random.default_rng(0)
args = (
    rng.normal(size=(8, 16)).astype(np.float16),
    (rng.normal(size=(16, 16)) / 4).astype(np.float16),
    (rng.normal(size=(16, 16)) / 4).astype(np.float16),
    np.ones(16, np.float32),
)
secure = sim_jax(block)
out = secure(*args)
print("max |secure - plaintext| =", float(np.max(np.abs(np.asarray(out) - np.asarray(block(*args))))))
print(secure.last_program.describe())
print("bytes sent per party:", secure.last_stats.bytes_sent)
