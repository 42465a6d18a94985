"""1/√x for a secret x in a calibrated range: SPU's rsqrt algorithm without its bit decomposition.

SPU 0.9.5 computes rsqrt (LayerNorm's) by normalising x with the position of its highest
bit — a bit decomposition of the whole 64-bit ring element plus a prefix-OR — then a
degree-4 polynomial and a compensation factor (model: :meth:`ditto_spu.semantics.fxp.Fxp.rsqrt`).
When calibration bounds x to [lo, hi], the highest bit p of X = x·2^f can only take the
values p_lo..p_hi, and p is decided by comparing X with the public thresholds 2^j in a
reduced ring. This kernel computes SPU's algorithm, with the same normalisation, the
same polynomial and the same compensation, so its fixed-point semantics is SPU's
(the emulator and the training model need no change):

1. the highest-bit position p of X as monotone threshold bits b_j = [X ≥ 2^j] in the
   ring (:mod:`.normalize`: comparisons in a (p_hi + 3)-bit ring, 2 + ⌈log2(p_hi + 2)⌉
   rounds, and the bit injection, 1 round); the scale C = 2^(f−2−p) (at F extra fraction
   bits, exact) and SPU's compensation COMP = floor(2^f·2^(−e/2)) (e = p + 2 − f, with
   its √2 for odd e) are public functions of p, hence linear in the bits: local;
2. u = X·2^(−2−p) ∈ [0.25, 0.5): one product and one truncation by F (2 rounds);
3. u², then u³ = u²·u and u⁴ = u²·u² together (4 rounds); the polynomial's public
   coefficients locally, one truncation (1 round); r = poly + 4.14285016;
4. out = r·COMP, truncated (2 rounds).

Rounds: 2 + ⌈log2(k−1)⌉ + 10 (18 for x in [2^−12, 2^16] at f = 18), against SPU's
bit decomposition of all 64 bits, prefix-OR and sequential powers. Bytes: a sign bit per
threshold (k-bit A2B) and ~a dozen 64-bit words per element. Products use the wrap-count
truncation (:mod:`.rescale`), error ≤ 1.5 ulps each, where SPU's is probabilistic: the
two differ by a few ulps, within the noise floor of secure runs.

Valid range: lo ≤ x ≤ hi (params ``low``, ``high``; lo·2^f ≥ 1, p_hi ≤ 58). Outside it
p saturates and the result is wrong: checked mode opens x (tests and debugging only)
and raises RangeError; the emulator records the input against the range (kind
``"range lo..hi"``) and its report names the op.

Security: the messages are those of :mod:`.compare` (sign bits and bit injection) and of
the products and truncations (:mod:`.matmul`'s reshare, :mod:`.wrap`); each is uniform
given its receiver's own components and PRG streams. p, the bits and u are never opened.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import PlanError
from ..rings import RingSpec
from ..shares import AShare, is_fixed_point
from .base import PartyContext
from .compare import multiply_sum
from .normalize import (
    exponent_bits,
    exponent_range,
    exponent_rounds,
    linear_in_bits,
    require_in_range,
    truncate,
)
from .rss import add_public_to_s0

NAME = "rsqrt_calibrated"
DEFAULT_RANGE = (2.0**-12, 2.0**16)
# SPU 0.9.5's rsqrt polynomial on u in [0.25, 0.5) (libspu/kernel/hal/fxp_approx.cc), the
# same constants as the semantics' model Fxp.rsqrt.
POLY = (-15.47994394, 38.4714796, -49.86605845, 26.02942339)
POLY_CONST = 4.14285016


def selects(ring: RingSpec | None, *, value_range, mixed: bool, secret: bool, float_operand: bool) -> bool:
    """Whether an rsqrt runs as this kernel: a secret fixed-point operand in an FXP64
    ring of a mixed-ring program (Ditto's; the single-ring FXP64 baselines keep SPU's
    own), with a calibrated range the kernel can use."""
    return (
        ring is not None
        and ring.field == "FM64"
        and mixed
        and secret
        and float_operand
        and value_range is not None
        and exponent_range(ring, *value_range) is not None
    )


def rounds(ring: RingSpec, low: float, high: float) -> int:
    """Message depth of the kernel."""
    _, p_hi = exponent_range(ring, low, high)
    return exponent_rounds(p_hi) + 9


def _compensation(f: int, e: int) -> float:
    """SPU's compensation 2^(−e/2) (with its √2 for odd e), as the ring integer's value."""
    k = f // 2 if f % 2 == 0 else (f + 1) // 2
    sqrt2 = math.floor(2.0**k * math.sqrt(2.0)) / 2.0**k
    comp = 2.0 ** (-(e - 1) / 2) / 2.0 * sqrt2 if e % 2 else 2.0 ** (-e / 2)
    return math.floor(comp * 2.0**f)


def rsqrt_calibrated(ctx: PartyContext, inputs: list, params: dict) -> list:
    """[x] -> [1/√x] in the same FXP64 ring (see the module doc)."""
    if len(inputs) != 1:
        raise PlanError(f"{NAME} takes 1 input, got {len(inputs)}")
    (x,) = inputs
    ring = x.ring
    if ring.field != "FM64" or not is_fixed_point(x.dtype):
        raise PlanError(f"{NAME} runs on fixed-point FXP64 values, got {x.dtype} in {ring}")
    try:
        low, high = float(params["low"]), float(params["high"])
    except (KeyError, TypeError, ValueError):
        raise PlanError(f"{NAME}: params need numeric 'low' and 'high', got {params}") from None
    exps = exponent_range(ring, low, high)
    if exps is None:
        raise PlanError(f"{NAME}: the range [{low:g}, {high:g}] does not suit {ring} (need low·2^f ≥ 1)")
    p_lo, p_hi = exps
    f = ring.frac_bits
    if ctx.checked:
        require_in_range(
            ctx, x, low, high, kernel=NAME, what="inputs", advice="recalibrate the policy's rsqrt_range", calibrated=True
        )
    shape = x.shape
    comps = x.components
    bits = exponent_bits(ctx, comps, p_lo, p_hi)
    # u = X·2^(f-2-p): the scale 2^(f-2-p) at `extra` more fraction bits is an integer.
    extra = max(0, p_hi + 2 - f)
    scale = [1 << (extra + f - 2 - p) for p in range(p_lo, p_hi + 1)]
    comp = [_compensation(f, p + 2 - f) for p in range(p_lo, p_hi + 1)]
    scale_sh = linear_in_bits(ctx, bits, scale)
    comp_sh = linear_in_bits(ctx, bits, comp)
    u = truncate(ctx, multiply_sum(ctx, comps, scale_sh), ring, shape, x.dtype, extra)
    u2 = truncate(ctx, multiply_sum(ctx, u, u), ring, shape, x.dtype, f)
    both = truncate(
        ctx, multiply_sum(ctx, np.stack([u2, u2]), np.stack([u, u2])), ring, (2,) + tuple(shape), x.dtype, f
    )
    powers = [u, u2, both[0], both[1]]
    coeffs = [int(math.trunc(c * 2.0**f)) % (1 << 64) for c in POLY]  # encoded as SPU does
    acc = sum((p * np.uint64(c) for p, c in zip(powers, coeffs)), np.zeros_like(u))
    r = add_public_to_s0(truncate(ctx, acc, ring, shape, x.dtype, f), ctx.rank, math.trunc(POLY_CONST * 2.0**f))
    out = truncate(ctx, multiply_sum(ctx, r, comp_sh), ring, shape, x.dtype, f)
    return [AShare(ring, shape, x.dtype, out)]
