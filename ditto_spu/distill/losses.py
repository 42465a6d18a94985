"""Distillation losses (pure functions of student / teacher arrays and the token mask).

Stage 1 (layer-wise, MPCFormer / TinyBERT): :func:`hidden_state_loss` and
:func:`attention_loss`. Stage 2 (prediction layer): :func:`soft_cross_entropy`
(classification logits, or next-token distributions with a token mask) and
:func:`embedding_loss` (sentence embeddings: MSE + cosine).

Layer-wise terms are RELATIVE squared errors, Σ(s − t)² / Σt² per layer over real
(unpadded) tokens, averaged over layers: MiniLM's hidden states have a few dimensions two
orders of magnitude larger than the rest, and a plain MSE would weigh layers (and those
dimensions) by their scale. Padding positions never count (MPCFormer zeroes masked
attention entries for the same reason).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _rel_sq_err(s, t, weights):
    num = jnp.sum(weights * jnp.square(s - t))
    den = jnp.maximum(jnp.sum(weights * jnp.square(t)), 1e-12)
    return num / den


def hidden_state_loss(student_hidden, teacher_hidden, attention_mask) -> jax.Array:
    """Mean over layers of Σ_real tokens ‖h_s − h_t‖² / Σ ‖h_t‖² (``(b, s, d)`` each)."""
    if len(student_hidden) != len(teacher_hidden):
        raise ValueError(f"{len(student_hidden)} student vs {len(teacher_hidden)} teacher hidden states")
    w = attention_mask.astype(jnp.float32)[..., None]
    terms = [_rel_sq_err(s.astype(jnp.float32), t.astype(jnp.float32), w) for s, t in zip(student_hidden, teacher_hidden)]
    return jnp.mean(jnp.stack(terms))


def attention_loss(student_attn, teacher_attn, attention_mask) -> jax.Array:
    """Mean over layers of the relative squared error of attention maps ``(b, h, q, k)``
    over real query and key positions."""
    if not student_attn:
        return jnp.zeros((), jnp.float32)
    m = attention_mask.astype(jnp.float32)
    w = m[:, None, :, None] * m[:, None, None, :]
    terms = [_rel_sq_err(s.astype(jnp.float32), t.astype(jnp.float32), w) for s, t in zip(student_attn, teacher_attn)]
    return jnp.mean(jnp.stack(terms))


def soft_cross_entropy(student_logits, teacher_logits, temperature: float = 1.0, mask=None) -> jax.Array:
    """mean(−softmax(t/T) · log_softmax(s/T)) over the leading axes (MPCFormer stage 2);
    ``mask`` (leading shape) selects positions, e.g. real tokens for next-token
    distributions."""
    t = jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    ls = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    per = -jnp.sum(t * ls, axis=-1)
    if mask is None:
        return jnp.mean(per)
    m = mask.astype(jnp.float32)
    return jnp.sum(per * m) / jnp.maximum(jnp.sum(m), 1.0)


def cosine(a, b, eps: float = 1e-8) -> jax.Array:
    """Row-wise cosine similarity."""
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    return jnp.sum(a * b, -1) / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), eps)


def embedding_loss(student_emb, teacher_emb, cosine_weight: float = 1.0) -> jax.Array:
    """Relative MSE Σ‖e_s − e_t‖² / Σ‖e_t‖² plus ``cosine_weight`` · mean(1 − cos(e_s, e_t))."""
    s = student_emb.astype(jnp.float32)
    t = teacher_emb.astype(jnp.float32)
    rel = jnp.sum(jnp.square(s - t)) / jnp.maximum(jnp.sum(jnp.square(t)), 1e-12)
    return rel + cosine_weight * jnp.mean(1.0 - cosine(s, t))
