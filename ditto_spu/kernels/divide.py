"""a / b for a secret denominator of known range: SPU's Goldschmidt without its bit decomposition.

The softmax divides every exp by its row's sum. With the compiler option our segments set
(``enable_optimize_denominator_with_broadcast``), SPU 0.9.5 computes the reciprocal of
the un-broadcast sum once and multiplies it into the row: r = reciprocal(b), out = a·r.
Its reciprocal (model: :meth:`ditto_spu.semantics.fxp.Fxp.reciprocal`) normalises b by
the position p of its highest bit — a bit decomposition of the whole 64-bit element, a
prefix-OR and an injection of every bit: ~78 send actions per softmax on this machine —
then runs Goldschmidt's iteration from a linear initial guess.

When b is known to lie in [lo, hi], p takes only the values p_lo..p_hi and is decided by
a few comparisons with public thresholds in a reduced ring (:mod:`.normalize`). The
softmax's denominator has such a range by construction: it is the sum over n entries of
exp(x − m), where m, the max kernel's result, is one of the row's entries at most
3·2^−r below the true max, so the largest entry contributes at least exp(0) and every
entry at most exp(3·2^−r) (:func:`softmax_denominator_range`: [0.5, 1.22·n] at r = 4,
with room for the exp kernel's error). The compiler selects the kernel on that structure
alone (:func:`passes.select_kernels._select_divides`); no calibration is needed.

Protocol, for a, b in FXP64[f] (b of the un-broadcast shape, ``broadcast_dims`` saying
where its dimensions land in a's), computing SPU's algorithm step by step:

1. b_j = [B ≥ 2^j], j = p_lo+1..p_hi (B = b·2^f) and from them, locally, the scale
   S = 2^(f−1−p) at E = p_hi + 1 − f extra fraction bits and SPU's factor 2^(f−1−p) as a
   ring integer (:mod:`.normalize`; 2 + ⌈log2(p_hi + 2)⌉ + 1 rounds);
2. c = b·2^(f−1−p) ∈ [0.5, 1): one product and a truncation by E (2 rounds);
3. w = 2.9142 − 2c (local); e = 1 − c·w (2 rounds);
4. Goldschmidt, ``iters`` = 2 as SPU's default: r = w·(1 + e) together with e² (2 rounds),
   then r = r·(1 + e²) (2 rounds);
5. r = r·factor (2 rounds) — SPU's reciprocal of b;
6. out = a·r, r broadcast along a's other dimensions (2 rounds).

Rounds: msb(p_hi + 3) + 13 — 20 for the BERT-base softmax (n = 128, f = 18). Bytes: all
but step 6 act on the denominator (one element per row): per row, (p_hi − p_lo)
comparisons of (p_hi + 3) bits plus a dozen 64-bit words; step 6 is the multiply
kernel's x·y (384 bits per output at FXP64[f=18]). Every truncation is the wrap-count one
(:mod:`.rescale`, within 1.5 ulps, centred), where SPU's is probabilistic: the two
differ by a few ulps, the noise floor of secure runs; the semantics (SPU's algorithm,
modelled with round-to-nearest) is unchanged.

Valid range: lo ≤ b ≤ hi with lo·2^f ≥ 1 and hi < 2^(f−1) (so the factor is an integer
and every product stays far inside the ring); outside it p saturates and the result is
wrong. Checked mode opens b (tests and debugging only) and raises RangeError; the
emulator records b against the range (kind ``"range lo..hi"``) and its report names the
op.

Security: the messages are those of :mod:`.normalize` (comparison and injection), of the
products' reshare and of the truncations (:mod:`.wrap`); each is uniform given its
receiver's own components and PRG streams. Neither p nor c, e, r is opened.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import PlanError
from ..rings import RingSpec
from ..shares import AShare, is_fixed_point
from .base import PartyContext
from .compare import multiply_sum
from .multiply import multiply
from .normalize import (
    exponent_bits,
    exponent_range,
    exponent_rounds,
    linear_in_bits,
    require_in_range,
    truncate,
)
from .rss import add_public_to_s0

NAME = "divide_calibrated"
ITERS = 2  # SPU's fxp_div_goldschmidt_iters default, which our runtimes keep
INITIAL_GUESS = 2.9142  # SPU's w = 2.9142 − 2c on c ∈ [0.5, 1)


def softmax_denominator_range(entries: int, slack: float) -> tuple:
    """[low, high] of Σ exp(x − m) over ``entries`` terms when m, the max kernel's result,
    is at most ``slack`` (3·2^−r, :func:`.reduce_max.max_slack`) below the true max and
    never above it: the top entry weighs ≥ exp(0) less the exp kernel's error (< 0.004),
    each ≤ exp(slack)."""
    return 0.5, float(entries) * math.exp(slack) * 1.01


def factor_range(ring: RingSpec, low: float, high: float):
    """(p_lo, p_hi) when [low, high] suits the kernel in ``ring``, else None."""
    exps = exponent_range(ring, low, high)
    if exps is None or ring.field != "FM64" or exps[1] > 2 * ring.frac_bits - 2:
        return None
    if 3 * ring.frac_bits - exps[0] > ring.bits - 4:  # r·factor, the largest product
        return None
    return exps


def selects(ring: RingSpec | None, *, value_range, mixed: bool, secret: bool, float_operand: bool) -> bool:
    """Whether a division by a broadcast secret runs as this kernel: FXP64 of a mixed-ring
    program, with a denominator range the kernel can use."""
    return (
        ring is not None
        and mixed
        and secret
        and float_operand
        and value_range is not None
        and factor_range(ring, *value_range) is not None
    )


def rounds(ring: RingSpec, low: float, high: float) -> int:
    """Message depth of the kernel."""
    _, p_hi = factor_range(ring, low, high)
    return exponent_rounds(p_hi) + 2 * (4 + ITERS)


def _params(ring: RingSpec, params: dict):
    try:
        low, high = float(params["low"]), float(params["high"])
        dims = [int(d) for d in params["broadcast_dims"]]
    except (KeyError, TypeError, ValueError):
        raise PlanError(f"{NAME}: params need numeric 'low', 'high' and a list 'broadcast_dims', got {params}") from None
    exps = factor_range(ring, low, high)
    if exps is None:
        raise PlanError(
            f"{NAME}: the denominator range [{low:g}, {high:g}] does not suit {ring} "
            f"(need an FXP64 ring, low·2^f ≥ 1 and high < 2^(f−1))"
        )
    return low, high, dims, exps


def _broadcast_shape(a_shape: tuple, b_shape: tuple, dims: list) -> tuple:
    """b's shape with size-1 axes inserted so that it broadcasts against a's."""
    if len(dims) != len(b_shape) or sorted(dims) != dims or len(set(dims)) != len(dims):
        raise PlanError(f"{NAME}: broadcast_dims {dims} must be increasing, one per denominator axis {b_shape}")
    if any(d < 0 or d >= len(a_shape) or a_shape[d] != n for d, n in zip(dims, b_shape)):
        raise PlanError(f"{NAME}: a denominator of shape {b_shape} does not broadcast to {a_shape} along {dims}")
    shape = [1] * len(a_shape)
    for d, n in zip(dims, b_shape):
        shape[d] = n
    return tuple(shape)


def divide_calibrated(ctx: PartyContext, inputs: list, params: dict) -> list:
    """[a, b] -> [a / broadcast(b)] in a's FXP64 ring and shape (see the module doc)."""
    if len(inputs) != 2:
        raise PlanError(f"{NAME} takes [numerator, denominator], got {len(inputs)} inputs")
    a, b = inputs
    ring = a.ring
    if b.ring != ring or not (is_fixed_point(a.dtype) and is_fixed_point(b.dtype)):
        raise PlanError(f"{NAME} divides fixed-point values of one ring, got {a.dtype} in {a.ring} and {b.dtype} in {b.ring}")
    low, high, dims, (p_lo, p_hi) = _params(ring, params)
    target = _broadcast_shape(tuple(a.shape), tuple(b.shape), dims)
    if ctx.checked:
        require_in_range(
            ctx, b, low, high, kernel=NAME, what="denominators",
            advice="the program that selected the kernel does not guarantee that range — run this division in SPU",
        )
    f = ring.frac_bits
    shape = tuple(b.shape)
    bits = exponent_bits(ctx, b.components, p_lo, p_hi)
    extra = max(0, p_hi + 1 - f)
    scale = linear_in_bits(ctx, bits, [1 << (extra + f - 1 - p) for p in range(p_lo, p_hi + 1)])
    factor = linear_in_bits(ctx, bits, [1 << (2 * f - 1 - p) for p in range(p_lo, p_hi + 1)])

    def product(x, y, extra_bits=f, lead=()):
        return truncate(ctx, multiply_sum(ctx, x, y), ring, lead + shape, b.dtype, extra_bits)

    c = product(b.components, scale, extra)
    w = add_public_to_s0(np.negative(c + c), ctx.rank, math.trunc(INITIAL_GUESS * 2.0**f))
    e = add_public_to_s0(np.negative(product(c, w)), ctx.rank, 1 << f)
    r = w
    for i in range(ITERS):
        e1 = add_public_to_s0(e, ctx.rank, 1 << f)
        if i + 1 < ITERS:  # r·(1 + e) and e² in one round
            r, e = product(np.stack([r, e]), np.stack([e1, e]), lead=(2,))
        else:
            r = product(r, e1)
    r = product(r, factor)
    r_row = AShare(ring, tuple(a.shape), a.dtype, np.broadcast_to(r.reshape(target + (2,)), tuple(a.shape) + (2,)))
    return multiply(ctx, [a, r_row], {})
