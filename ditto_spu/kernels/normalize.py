"""The highest set bit of a secret in a calibrated range, as public-linear one-hot shares.

SPU 0.9.5 normalises the input of its division and rsqrt by the position p of the
highest set bit of X = x·2^f: a bit decomposition of the whole ring element, a prefix-OR
and a bit injection of every position. When the input is known to lie in [lo, hi]
(calibration, or the structure of the program), p can only take the values p_lo..p_hi,
and it is decided by comparing X with the public thresholds 2^j, j = p_lo+1..p_hi:

1. local: X mod 2^k with k = p_hi + 3 (X − 2^j then keeps its sign in bit k−1) — exact;
2. b_j = [X ≥ 2^j], all thresholds in one batch of sign bits (:func:`.compare.msb`,
   2 + ⌈log2(k−1)⌉ rounds), injected into the ring (1 round, :func:`.compare.bit_injection`);
3. local: the bits are monotone in j, so the one-hot of p is o_j = b_j − b_{j+1} and any
   public function g of p is linear in the bits: g(p) = g(p_lo) + Σ_j b_j·(g(j) − g(j−1))
   (:func:`linear_in_bits`) — the power-of-two scales and compensations the division and
   rsqrt kernels need, as exact ring integers, without another message.

Cost per input element, all parties: (p_hi − p_lo) comparisons of k bits (3k bits for
the sharing of A and ~3·3(k−1) bits of AND gates each) plus 6·l bits per injected bit.

Security: only :mod:`.compare`'s messages (the masked sharing of A, AND gates) and the
injection's OT messages are sent; each is uniform given its receiver's own components
and PRG streams. Neither p nor any bit is opened.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import RangeError
from ..rings import RingSpec
from ..semantics.report import range_kind
from ..shares import AShare
from .casts import run_cast
from .compare import bit_injection, msb, msb_rounds, not_gate, reduce_components
from .rss import add_public_to_s0, open_for_check


def exponent_range(ring: RingSpec, low: float, high: float):
    """(p_lo, p_hi): the highest-bit positions X = x·2^f can have for x in [low, high];
    None when the range does not suit the comparisons (x·2^f ≥ 1 and k = p_hi + 3 at
    least 4 bits below the ring's width)."""
    f = ring.frac_bits
    if not (0 < low <= high) or low * 2.0**f < 1.0:
        return None
    p_lo, p_hi = math.floor(math.log2(low * 2.0**f)), math.floor(math.log2(high * 2.0**f))
    if p_hi + 3 > ring.bits - 4:
        return None
    return p_lo, p_hi


def exponent_rounds(p_hi: int) -> int:
    """Rounds of :func:`exponent_bits` (comparisons and injection)."""
    return msb_rounds(p_hi + 3) + 1


def exponent_bits(ctx, components: np.ndarray, p_lo: int, p_hi: int) -> np.ndarray:
    """Arithmetic shares, shape (..., p_hi − p_lo, 2) in the components' word, of
    b_j = [X ≥ 2^j] for j = p_lo+1..p_hi (X the ring integer of the shared value)."""
    width = p_hi + 3
    thresholds = list(range(p_lo + 1, p_hi + 1))
    reduced = reduce_components(components, 0, width)[..., None, :].repeat(len(thresholds), axis=-2)
    mask = np.uint64((1 << width) - 1)
    for i, j in enumerate(thresholds):
        reduced[..., i, :] = add_public_to_s0(reduced[..., i, :], ctx.rank, -(1 << j)) & mask
    geq = not_gate(ctx, msb(ctx, reduced, width))
    return bit_injection(ctx, geq, components.dtype).reshape(reduced.shape[:-1] + (2,))


def linear_in_bits(ctx, bits: np.ndarray, values: list) -> np.ndarray:
    """Shares of values[p − p_lo] from :func:`exponent_bits`' monotone bits:
    values[0] + Σ_j b_j·(values[j] − values[j−1]), integers mod 2^l (local)."""
    dtype = bits.dtype
    modulus = 1 << (8 * dtype.itemsize)
    steps = np.array([(int(values[i + 1]) - int(values[i])) % modulus for i in range(len(values) - 1)], dtype)
    if len(steps):
        out = (bits * steps[:, None]).sum(axis=-2, dtype=dtype)
    else:
        out = np.zeros(bits.shape[:-2] + (2,), dtype)
    return add_public_to_s0(out, ctx.rank, int(values[0]))


def truncate(ctx, components: np.ndarray, ring: RingSpec, shape, dtype, extra_bits: int) -> np.ndarray:
    """Components at ``extra_bits`` more fraction bits than ``ring`` brought back to it by
    the wrap-count truncation (:mod:`.rescale`, 1 round, error ≤ 1.5 ulps)."""
    if extra_bits == 0:
        return components
    wide = AShare(RingSpec(ring.field, ring.frac_bits + extra_bits), tuple(shape), dtype, components)
    return run_cast(ctx, wide, ring).share.components


def check_range(arith, x, low: float, high: float, ring: RingSpec, scope: str) -> None:
    """The semantics' range check of a normalised input: max(x/high, low/x) ≤ 1 inside
    [low, high], recorded against 1 (see :func:`ditto_spu.semantics.report.limit_of`)."""
    import jax.numpy as jnp

    ratio = jnp.maximum(x / high, low / jnp.maximum(x, low * 1e-12))
    arith.check_range(scope, ring, range_kind(low, high), ratio)


def require_in_range(
    ctx, share: AShare, low: float, high: float, *, kernel: str, what: str, advice: str, calibrated: bool = False
) -> None:
    """CHECKED MODE ONLY (reveals ``share`` to all parties): RangeError unless every value
    lies in [low, high], the range the highest-bit comparisons rely on (``calibrated``:
    one the policy's calibration sets)."""
    v = open_for_check(ctx, share).astype(np.float64) * share.ring.ulp
    bad = (v < low) | (v > high)
    if np.any(bad):
        raise RangeError(
            f"{kernel} on party {ctx.rank}: {int(bad.sum())} of {v.size} {what} are outside the "
            f"{'calibrated ' if calibrated else ''}range [{low:g}, {high:g}] the kernel relies on (e.g. {v[bad].ravel()[0]:.6g}); {advice}"
        )
