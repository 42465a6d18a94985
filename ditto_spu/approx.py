"""MPC-friendly approximations of GeLU and softmax, and a ring-safe attention mask.

Every function is pure JAX and dtype-preserving: it computes in its input's dtype and
returns that dtype, so the compiler (which assigns rings from dtypes) sees exactly the
precision the caller chose. The one deliberate exception is the softmax's ``high_dtype``
argument: the normalisation (exp / sum / division, or the 2Quad sum / division) then runs
in ``high_dtype`` and the result is cast back to the input's dtype. The two casts are
where the compiler inserts an up-cast and a down-cast (Ditto's mixed-precision softmax).

Sources of the formulas and constants: MPCFormer (Li et al., ICLR 2023) for quad GeLU and
2Quad, PUMA (Dong et al., 2023) for the piecewise GeLU and the softmax with cut-off, Ditto
(Wu et al., ICML 2024) for the mixed-precision softmax.

GeLU
  * :func:`gelu_exact`  - x·Φ(x) (erf) or its tanh form, as ``jax.nn.gelu``.
  * :func:`gelu_quad`   - MPCFormer's quad, ``0.125·x² + 0.25·x + 0.5`` (their training
    code; Ditto uses the same constants). Not a close fit of GeLU: it is meant to be
    used with distillation.
  * :func:`gelu_puma`   - PUMA's piecewise polynomial (0 | cubic | even sextic + x/2 | x).

Softmax (``mask``: broadcastable to ``x``, true/1 = attend, false/0 = masked out)
  * :func:`softmax_exact` - ``jax.nn.softmax(x + bias)``.
  * :func:`softmax_2quad` - MPCFormer's ``(x + c)²·mask / Σ``, c = 5.
  * :func:`softmax_puma`  - PUMA: ``x − max``, ``b = x > −14``, ``e = exp(x)·b``, ``e / Σe``.

Masking
  HF's Flax models turn a padding / causal mask into an additive bias of
  ``finfo(dtype).min`` (−3.4e38), which no fixed-point ring holds. We use
  :data:`MASK_BIAS` = −1024 (= −2^10) instead, see its comment.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

Array = jax.Array

# ---- constants -------------------------------------------------------------------

#: Additive attention bias of a masked-out position (replaces ``finfo(dtype).min``).
#:
#: Why −1024 = −2^10:
#:  * It is a power of two, so every fixed-point encoding represents it exactly.
#:  * It fits every ring we use with room to spare: FXP64[f=18] holds |v| < 2^44 and
#:    FXP32[f] holds |v| < 2^(30−f). The largest masked value, ``x − max(x)``, is at most
#:    1024 + 2·max|score| in magnitude: it fits FXP32 up to f = 18 while |scores| < 1536
#:    (f = 17: < 3584). Ditto's FXP32 fraction bits are ~8–14, where the margin is 16×
#:    or more. −1e4 would fit FXP32 only up to f = 15, and −3.4e38 no ring at all.
#:  * It is exact in float16 / bfloat16 (the plaintext stand-ins of FXP32).
#:  * It is large enough: after ``x − max(x)`` a masked entry sits near −1024, far below
#:    PUMA's exp cut-off −14 (so its weight is exactly 0), and exp(−1024) underflows to 0
#:    in float32, so the exact softmax gives bit-for-bit the weights of ``finfo.min``
#:    as long as the unmasked scores differ by less than ~900 (true for BERT / GPT-2,
#:    whose attention logits stay within a few hundred).
#: The 2Quad softmax does not use it: it masks multiplicatively (as MPCFormer does),
#: because (x − 1024 + 5)² would be huge rather than small.
MASK_BIAS: float = -1024.0

#: PUMA's softmax cut-off: entries with x − max(x) <= −14 get weight exactly 0.
PUMA_EXP_CUTOFF: float = -14.0

#: MPCFormer's quad GeLU coefficients (x², x, 1).
QUAD_GELU_COEFFS: tuple[float, float, float] = (0.125, 0.25, 0.5)

#: MPCFormer's 2Quad shift c in (x + c)².
TWO_QUAD_C: float = 5.0

# PUMA GeLU pieces (spu commit 186c8384, flax_llama7b.py `hack_gelu`).
PUMA_GELU_BREAKS: tuple[float, float, float] = (-4.0, -1.95, 3.0)
PUMA_GELU_A: tuple[float, ...] = (  # a0 + a1 x + a2 x^2 + a3 x^3 on [-4, -1.95)
    -0.5054031199708174,
    -0.42226581151983866,
    -0.11807612951181953,
    -0.011034134030615728,
)
PUMA_GELU_B: dict[int, float] = {  # b0 + b1 x + b2 x^2 + b4 x^4 + b6 x^6 on [-1.95, 3]
    0: 0.008526321541038084,
    1: 0.5,
    2: 0.3603292692789629,
    4: -0.037688200365904236,
    6: 0.0018067462606141187,
}


# ---- GeLU ------------------------------------------------------------------------


def gelu_exact(x: Array, approximate: bool = False) -> Array:
    """GeLU(x) = x·Φ(x) (``approximate=False``, erf) or its tanh approximation."""
    return jax.nn.gelu(x, approximate=approximate)


def gelu_quad(x: Array) -> Array:
    """MPCFormer's quad GeLU: 0.125·x² + 0.25·x + 0.5 (in ``x.dtype``)."""
    c2, c1, c0 = QUAD_GELU_COEFFS
    return c2 * jnp.square(x) + c1 * x + c0


def gelu_puma(x: Array) -> Array:
    """PUMA's piecewise GeLU (in ``x.dtype``).

    0 for x < lo = −4; a cubic on [−4, −1.95); an even sextic plus x/2 on [−1.95, 3];
    x for x > 3. Written as a sum of three steps, each a public threshold's indicator
    times the jump it adds:

        [x ≥ lo]·cubic + [x ≥ mid]·(sextic − cubic) + [x > hi]·(x − sextic)

    which for lo < mid < hi equals the piecewise form at every x (the terms switched on
    telescope). Every piece is computed on every element, as under MPC. Each indicator
    is one comparison of x with a constant times one value — no logical_and — which is
    the pattern :mod:`ditto_spu.kernels.threshold_select` runs (in mixed-ring programs).

    Arithmetic: in a fixed-point ring the sums are exact (mod 2^l), so the telescoping
    is exact — for x > 3 the result is x exactly when the three products are exact (the
    kernel's are; SPU's truncated products may add an ulp each), whatever the sextic's
    size. In floating point the telescoped terms round: for x > 3 the result is x up to
    a few ulps of the sextic's magnitude (≈ 0.0018·x⁶: 1e−4 at x = 10 in float32).
    Max abs error against the erf GeLU is about 0.02, at the switch x = 3 (checked in
    the tests).
    """
    lo, mid, hi = PUMA_GELU_BREAKS
    dtype = x.dtype
    x2 = jnp.square(x)
    x3 = x * x2
    x4 = jnp.square(x2)
    x6 = jnp.square(x3)
    a0, a1, a2, a3 = PUMA_GELU_A
    b = PUMA_GELU_B
    cubic = a3 * x3 + a2 * x2 + a1 * x + a0
    sextic = b[6] * x6 + b[4] * x4 + b[2] * x2 + b[1] * x + b[0]
    return (
        (x >= lo).astype(dtype) * cubic
        + (x >= mid).astype(dtype) * (sextic - cubic)
        + (x > hi).astype(dtype) * (x - sextic)
    )


QUAD_STEPS_GELU_BREAK = 1.72
QUAD_STEPS_GELU_COEFFS: tuple[float, float, float] = (0.28, 0.5, 0.03)  # x², x, 1


def gelu_quad_steps(x: Array) -> Array:
    """A quadratic between two steps (in ``x.dtype``): 0 for x < −b, the quadratic
    ``q(x) = 0.28·x² + 0.5·x + 0.03`` on [−b, b), x for x ≥ b, with b = 1.72:

        [x ≥ −b]·q + [x ≥ b]·(x − q)

    GeLU minus x/2 is even, and q is the least-squares fit of GeLU on the middle piece:
    the breaks and coefficients (1.7227; 0.2803, 0.5000, 0.0293, rounded here) minimise the
    squared error against the erf GeLU under a normal weight of standard deviation 2 (a
    wide pre-activation spread). Max abs error 0.074, at the breaks; below −b the GeLU
    is within 0.075 of 0, above b within 0.075 of x.

    One square and two steps, against quad GeLU's square alone and PUMA's four powers and
    three steps: each step is the threshold_select pattern (a comparison with a public
    constant times one value), so in mixed-ring programs both run in a reduced ring, and
    the quadratic fits FXP32 where PUMA's x⁶ does not. Unlike the quad GeLU it is 0 for
    large negative inputs and x for large positive ones, as GeLU is, so pretrained weights
    keep their meaning without retraining (mode ``ditto-steps``).
    """
    dtype = x.dtype
    c2, c1, c0 = QUAD_STEPS_GELU_COEFFS
    b = QUAD_STEPS_GELU_BREAK
    quad = c2 * jnp.square(x) + c1 * x + c0
    return (x >= -b).astype(dtype) * quad + (x >= b).astype(dtype) * (x - quad)


GELUS: dict[str, Callable[[Array], Array]] = {
    "exact": gelu_exact,
    "quad": gelu_quad,
    "puma": gelu_puma,
    "quad-steps": gelu_quad_steps,
}


# ---- masks -----------------------------------------------------------------------


def mask_to_bias(mask: Array, dtype) -> Array:
    """Additive bias from a keep-mask: 0 where ``mask`` is true/1, :data:`MASK_BIAS` else.

    Computed in integers, ``((m − 1)·|MASK_BIAS|)`` as int32, then converted to ``dtype``:
    under MPC an integer product has no fraction bits, and the conversion to fixed point
    is a local shift. (The same product in fixed point would be computed at scale 2^(2f)
    before truncation: 1024·2^(2f) < 2^30 caps an FXP32 ring at f = 9.)
    """
    m = mask.astype(jnp.int32)
    return ((m - 1) * jnp.int32(-int(MASK_BIAS))).astype(dtype)


def _split_dtypes(x: Array, high_dtype) -> tuple[jnp.dtype, jnp.dtype]:
    low = x.dtype
    high = jnp.dtype(high_dtype) if high_dtype is not None else low
    return low, high


# ---- softmax ---------------------------------------------------------------------


def softmax_exact(
    x: Array, mask: Optional[Array] = None, axis: int = -1, *, high_dtype=None
) -> Array:
    """``jax.nn.softmax(x + bias)`` with the ring-safe :data:`MASK_BIAS` for masked entries.

    With ``high_dtype`` the bias is added in ``x.dtype`` and the softmax runs in
    ``high_dtype``; the result is cast back to ``x.dtype``.
    """
    low, high = _split_dtypes(x, high_dtype)
    if mask is not None:
        x = x + mask_to_bias(mask, low)
    return jax.nn.softmax(x.astype(high), axis=axis).astype(low)


def softmax_2quad(
    x: Array,
    mask: Optional[Array] = None,
    axis: int = -1,
    *,
    c: float = TWO_QUAD_C,
    high_dtype=None,
) -> Array:
    """MPCFormer's 2Quad: ``s = (x + c)²·mask``, ``s / Σ s``.

    ``(x + c)²`` and the masking run in ``x.dtype``; the sum and the division in
    ``high_dtype`` (default: ``x.dtype``); the result is in ``x.dtype``.
    """
    low, high = _split_dtypes(x, high_dtype)
    s = jnp.square(x + c)
    if mask is not None:
        s = s * mask.astype(low)
    s = s.astype(high)
    return (s / jnp.sum(s, axis=axis, keepdims=True)).astype(low)


def softmax_puma(
    x: Array,
    mask: Optional[Array] = None,
    axis: int = -1,
    *,
    cutoff: float = PUMA_EXP_CUTOFF,
    high_dtype=None,
) -> Array:
    """PUMA's softmax: ``x ← x + bias − max(x)``; ``b = x > cutoff``; ``e = exp(x)·b``; ``e/Σe``.

    The bias, the shift by the max and the cut-off comparison run in ``x.dtype``; exp,
    sum and division in ``high_dtype`` (default: ``x.dtype``), result in ``x.dtype``.
    With x in float16 and ``high_dtype=float32`` this is Ditto's mixed-precision softmax
    (the cast of the shifted scores is where the compiler up-casts FXP32 → FXP64).
    Under MPC the cut-off keeps exp's Taylor form from overflowing on large negatives;
    in plaintext it sets weights below e^−14 ≈ 8e−7 to exactly 0.
    """
    low, high = _split_dtypes(x, high_dtype)
    if mask is not None:
        x = x + mask_to_bias(mask, low)
    x = x - jnp.max(x, axis=axis, keepdims=True)
    if low == high:
        keep = x > cutoff
        e = jnp.exp(x) * keep.astype(high)
    else:
        # Mixed precision: a boolean cannot cross rings, so the cut-off is a clamp in the
        # low ring, x <- max(x, cutoff). exp(cutoff) is then what a cut entry weighs:
        # e^-14 ~ 8e-7 exactly, ~1e-8 under SPU's Taylor exp (1 - 14/32)^32 - below one
        # ulp of FXP64[f=18] either way.
        e = jnp.exp(jnp.maximum(x, jnp.asarray(cutoff, low)).astype(high))
    return (e / jnp.sum(e, axis=axis, keepdims=True)).astype(low)


SOFTMAXES: dict[str, Callable[..., Array]] = {
    "exact": softmax_exact,
    "2quad": softmax_2quad,
    "puma": softmax_puma,
}


def check_mask_bias_fits(frac_bits: int, ring_bits: int, max_abs_score: float = 0.0) -> bool:
    """Whether a masked score after the max shift (|v| <= |MASK_BIAS| + 2·max|score|) fits
    SPU's safe range |v·2^f| < 2^(l−2) of a ``ring_bits``-bit ring with ``frac_bits``."""
    worst = abs(MASK_BIAS) + 2.0 * abs(max_abs_score)
    return worst * 2.0**frac_bits < 2.0 ** (ring_bits - 2)
