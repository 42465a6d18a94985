"""A BERT-style block with Ditto's precision split, for tests and ``ditto-spu compile``.

f16 dense (Q/K/V) -> f32 softmax -> f16 dense (context and output) -> f32 LayerNorm.
``ditto-spu compile tests/passes/bert_block.py:block --shapes 8x16:float32,16x16:float32,16x16:float32,16x16:float32,16x16:float32``
"""

import jax
import jax.numpy as jnp
import numpy as np

SEQ, HIDDEN = 8, 16
SHAPES = "8x16:float32,16x16:float32,16x16:float32,16x16:float32,16x16:float32"


def block(x, wq, wk, wv, wo):
    with jax.named_scope("encoder/layer/0/attention/self"):
        h = x.astype(jnp.float16)
        q = h @ wq.astype(jnp.float16)
        k = h @ wk.astype(jnp.float16)
        v = h @ wv.astype(jnp.float16)
        scores = (q @ k.T) * jnp.float16(1.0 / np.sqrt(HIDDEN))
    with jax.named_scope("encoder/layer/0/attention/softmax"):
        p = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
    with jax.named_scope("encoder/layer/0/attention/output"):
        ctx = p.astype(jnp.float16) @ v
        out = ctx @ wo.astype(jnp.float16)
    with jax.named_scope("encoder/layer/0/attention/output/LayerNorm"):
        y = out.astype(jnp.float32) + x
        mean = jnp.mean(y, axis=-1, keepdims=True)
        var = jnp.mean((y - mean) ** 2, axis=-1, keepdims=True)
        return (y - mean) * jax.lax.rsqrt(var + 1e-5)


def example_args(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SEQ, HIDDEN)).astype(np.float32)
    ws = [(rng.normal(size=(HIDDEN, HIDDEN)) * 0.25).astype(np.float32) for _ in range(4)]
    return (x, *ws)
