"""A calibrated starting point for the student: per-unit quadratic refit of the GeLU.

Replacing GeLU by quad GeLU ``q(x) = 0.125x² + 0.25x + 0.5`` in a pretrained model is
catastrophic (MiniLM's sentence embeddings drop to cosine ≈ 0 against the original):
``q`` is ≥ 0.375 everywhere and symmetric about −1, while GeLU is ≈ 0 for x < −2 and ≈ x
for x > 2. Distillation must repair that, and spends most of its budget doing so.

But the FFN around the activation has free parameters that can absorb a large part of
the gap in closed form. For each intermediate unit ``j`` with pre-activation ``h`` (its
distribution measured on the teacher over calibration text), fit the least-squares
quadratic ``A h² + B h + C ≈ gelu(h)``. Any quadratic with ``A > 0`` is an affine image
of ``q`` with a shifted input: ``a·q(h + β) + c`` with ``a = A / q₂``,
``β = (B / a − q₁) / (2 q₂)``, ``c = C − a·q(β)`` (``q(x) = q₂x² + q₁x + q₀``). So:

* ``b1[j] += β`` (the intermediate dense bias),
* ``W2[j, :] *= a``, ``b2 += Σ_j c_j·W2[j, :]`` (the output dense),

and the FFN computes ``Σ_j W2[j] (A h² + B h + C)`` with quad GeLU: the best quadratic
per unit. ``A`` is clamped to ``≥ min_curvature`` so that ``a`` and ``β`` stay in
FXP32's comfortable range. This is the student's initialisation; QAD then trains it.
For BERT-family models (``intermediate`` / ``output`` dense of every layer).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from transformers.modeling_flax_utils import ACT2FN

from ..approx import GELUS


def quadratic_coefficients(fn) -> tuple[float, float, float]:
    """(q₂, q₁, q₀) of a scalar polynomial ``fn`` of degree 2 (checked at a 4th point)."""
    q0 = float(fn(jnp.float32(0.0)))
    qp, qm = float(fn(jnp.float32(1.0))), float(fn(jnp.float32(-1.0)))
    q1 = (qp - qm) / 2
    q2 = (qp + qm) / 2 - q0
    if abs(float(fn(jnp.float32(3.0))) - (9 * q2 + 3 * q1 + q0)) > 1e-4:
        raise ValueError("the GeLU approximation is not a quadratic polynomial")
    return q2, q1, q0


def ffn_preactivations(model, params, batches, n: int, batch_size: int = 32) -> list[np.ndarray]:
    """Per layer, the teacher's intermediate-dense outputs at the real tokens of the first
    ``n`` examples of ``batches``: ``(tokens, ffn)`` arrays."""
    module = model.module

    @jax.jit
    def run(p, ids, mask, tt):
        b, s = ids.shape
        pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        _, state = module.apply({"params": p}, ids, mask, tt, pos, None, deterministic=True,
                                capture_intermediates=True, mutable=["intermediates"])
        flat = traverse_util.flatten_dict(state["intermediates"])
        return {int(k[k.index("layer") + 1]): v[0] for k, v in flat.items()
                if len(k) >= 3 and k[-3:] == ("intermediate", "dense", "__call__")}

    batch_size = min(batch_size, n)
    per_layer: dict = {}
    for i in range(0, n, batch_size):
        idx = np.minimum(np.arange(i, i + batch_size), n - 1)  # pad the last chunk: one shape
        b = batches.take(idx)
        keep = np.asarray(b["attention_mask"], bool)
        keep[min(batch_size, n - i):] = False
        for layer, v in run(params, b["input_ids"], b["attention_mask"], b["token_type_ids"]).items():
            per_layer.setdefault(layer, []).append(np.asarray(v)[keep])
    return [np.concatenate(per_layer[k]) for k in sorted(per_layer)]


def quad_gelu_refit(
    model,
    params,
    batches,
    *,
    gelu: str = "quad",
    min_curvature: float = 0.02,
    max_tokens: int = 8000,
    batch_size: int = 32,
):
    """``params`` with every FFN refitted for ``gelu`` (module docstring). ``batches``: a
    :class:`~ditto_spu.distill.trainer.Batches` of calibration text (token ids as the model
    takes them). Returns (new params, per-layer report of the fit's RMS error before / after)."""
    q2, q1, q0 = quadratic_coefficients(GELUS[gelu])
    act = ACT2FN[model.config.hidden_act]
    n = min(len(batches), max(1, max_tokens // max(int(batches.attention_mask.sum(1).mean()), 1)))
    per_layer = [h.astype(np.float64) for h in ffn_preactivations(model, params, batches, n, batch_size)]
    flat = dict(traverse_util.flatten_dict(params))
    report = []
    for layer, h in enumerate(per_layer):
        g = np.asarray(act(jnp.asarray(h, jnp.float32)), np.float64)
        # least squares per unit (column): [h², h, 1] → g
        m = [np.mean(h**k, axis=0) for k in range(5)]
        r = [np.mean(g * h**k, axis=0) for k in range(3)]
        gram = np.stack([np.stack([m[4], m[3], m[2]], -1), np.stack([m[3], m[2], m[1]], -1), np.stack([m[2], m[1], m[0]], -1)], -2)
        rhs = np.stack([r[2], r[1], r[0]], -1)
        A, B, C = np.moveaxis(np.linalg.solve(gram + 1e-9 * np.eye(3), rhs[..., None])[..., 0], -1, 0)
        A = np.maximum(A, min_curvature)
        a = A / q2
        beta = (B / a - q1) / (2 * q2)
        c = C - a * (q2 * beta**2 + q1 * beta + q0)
        base = ("encoder", "layer", str(layer))

        def key(*rest, base=base):
            return next(k for k in flat if k[: len(base)] == base and k[len(base):] == rest)

        k_b1 = key("intermediate", "dense", "bias")
        k_w2 = key("output", "dense", "kernel")
        k_b2 = key("output", "dense", "bias")
        w2 = np.asarray(flat[k_w2], np.float64)
        flat[k_b1] = jnp.asarray(np.asarray(flat[k_b1], np.float64) + beta, jnp.float32)
        flat[k_w2] = jnp.asarray(w2 * a[:, None], jnp.float32)
        flat[k_b2] = jnp.asarray(np.asarray(flat[k_b2], np.float64) + c @ w2, jnp.float32)
        quad = q2 * h**2 + q1 * h + q0
        fitted = a * (q2 * (h + beta) ** 2 + q1 * (h + beta) + q0) + c
        report.append({
            "layer": layer,
            "tokens": int(h.shape[0]),
            "rms_gelu_vs_quad": float(np.sqrt(np.mean((quad - g) ** 2))),
            "rms_gelu_vs_refit": float(np.sqrt(np.mean((fitted - g) ** 2))),
        })
    return traverse_util.unflatten_dict(flat), report


def refit_if_applicable(model, params, batches, mode) -> tuple[object, Optional[list]]:
    """:func:`quad_gelu_refit` when ``mode`` uses a quadratic GeLU on a BERT model, else
    ``(params, None)``."""
    from ..models import load_mode, model_family

    mode = load_mode(mode)
    if mode.gelu != "quad" or model_family(model) != "bert":
        return params, None
    return quad_gelu_refit(model, params, batches, gelu=mode.gelu)
