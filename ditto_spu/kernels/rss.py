"""Local operations on one party's replicated shares, and checked-mode opening.

Party ``rank`` holds ``components[..., 0] = s_rank`` and ``components[..., 1] =
s_{rank+1}`` with x = s0 + s1 + s2 (mod 2^l). Everything here except
:func:`reshare` and :func:`open_for_check` is local: no message, no randomness.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import PlanError, RangeError
from ..rings import RingSpec
from ..shares import AShare, is_fixed_point

WORLD_SIZE = 3


def column_holding_s0(rank: int) -> int | None:
    """Which column of party ``rank`` holds s0: P0 column 0, P2 column 1, P1 none."""
    return {0: 0, 1: None, 2: 1}[rank]


def add_public_to_s0(components: np.ndarray, rank: int, constant: int) -> np.ndarray:
    """Shares of x + c for a public c: add c to s0 on BOTH of its holders (P0 and P2).

    Adding it on one holder only would leave the replicas inconsistent. Returns a new array.
    """
    dtype = components.dtype
    bits = 8 * dtype.itemsize
    out = np.array(components, copy=True)
    column = column_holding_s0(rank)
    if column is not None:
        out[..., column] += dtype.type(int(constant) % (1 << bits))
    return out


def encode_public_constant(c: float, ring: RingSpec, what: str) -> int:
    """SPU's encoding of a public constant in ``ring``: trunc(c·2^f), toward zero (the
    multiply kernel's factors, the threshold selects' thresholds). ``what`` names the
    constant in the error (e.g. "multiply: the public factor")."""
    if not math.isfinite(c):
        raise PlanError(f"{what} must be finite, got {c}")
    value = math.trunc(c * 2.0**ring.frac_bits)
    if abs(value) >= 1 << (ring.bits - 2):
        raise PlanError(f"{what} {c} does not fit {ring}")
    return value


def shift_left(values: np.ndarray, amount: int) -> np.ndarray:
    """values · 2^amount mod 2^l (amount >= l gives 0)."""
    bits = 8 * values.dtype.itemsize
    if amount >= bits:
        return np.zeros_like(values)
    return values << values.dtype.type(amount)


def shift_right(values: np.ndarray, amount: int) -> np.ndarray:
    """floor(values / 2^amount) for unsigned words (a logical shift)."""
    bits = 8 * values.dtype.itemsize
    if amount >= bits:
        return np.zeros_like(values)
    return values >> values.dtype.type(amount)


def frac_bits_of(ring: RingSpec, dtype: str) -> int:
    """Fraction bits a tensor of logical ``dtype`` has in ``ring`` (0 for integers)."""
    return ring.frac_bits if is_fixed_point(dtype) else 0


# ---- checked mode --------------------------------------------------------------------
def reshare(ctx, z: np.ndarray) -> np.ndarray:
    """A 3-out-of-3 additive sharing (party i holds z_i) -> RSS components (..., 2), one
    round: c_i = z_i + r_{i−1,i} − r_{i,i+1} (a zero sharing from the pairwise PRG, the
    pad with the previous party drawn first), sent to party i−1, which knows r_{i−1,i} but
    not r_{i,i+1}. ``z`` must be a fresh contiguous array: it is re-randomised in place."""
    from .base import as_array

    z += ctx.prg.shared(ctx.prev_rank, z.shape, z.dtype)
    z -= ctx.prg.shared(ctx.next_rank, z.shape, z.dtype)
    got = ctx.link.exchange({ctx.prev_rank: z.tobytes()}, [ctx.next_rank])
    return np.stack([z, as_array(got[ctx.next_rank], z.dtype, z.shape)], axis=-1)


def open_for_check(ctx, share: AShare) -> np.ndarray:
    """CHECKED MODE ONLY: reveal x to all three parties (one extra round).

    Party i sends s_i (its column 0) to party i+1, the one party missing it. This
    discloses the secret to everyone: it exists so tests and debugging runs can detect
    values outside a kernel's valid range. Its traffic goes through ``ctx.link`` and is
    counted there (one round, l bits per element per party), on top of the kernel's
    stated cost. Returns the signed ring values as int64 (x·2^f for fixed point).
    """
    flat = np.ascontiguousarray(share.components.reshape(-1, 2))
    received = ctx.link.exchange({ctx.next_rank: flat[:, 0].tobytes()}, [ctx.prev_rank])
    missing = np.frombuffer(received[ctx.prev_rank], dtype=share.ring.dtype)
    if missing.shape[0] != flat.shape[0]:
        raise RangeError(
            f"checked mode on party {ctx.rank}: party {ctx.prev_rank} opened {missing.shape[0]} "
            f"elements, this party has {flat.shape[0]}; parties disagree on the tensor shape"
        )
    elements = flat[:, 0] + flat[:, 1] + missing
    return elements.view(share.ring.signed_dtype).astype(np.int64).reshape(share.shape)


def require_within(
    ctx,
    scaled_values: np.ndarray,
    low: int,
    high: int,
    *,
    kernel: str,
    src: RingSpec,
    dst: RingSpec,
    frac_bits: int,
    advice: str,
) -> None:
    """Raise RangeError unless low <= x·2^f <= high for every opened element.

    ``scaled_values`` are the opened signed ring values (see :func:`open_for_check`).
    All parties see the same values, so all of them raise together (no party hangs).
    """
    values = np.asarray(scaled_values, dtype=np.int64)
    bad = (values < low) | (values > high)
    if not np.any(bad):
        return
    index = np.unravel_index(int(np.argmax(bad)), values.shape) if values.ndim else ()
    worst = values[index] if values.ndim else int(values)
    scale = 2.0**-frac_bits
    raise RangeError(
        f"{kernel} ({src} -> {dst}) on party {ctx.rank}: {int(np.count_nonzero(bad))} of "
        f"{values.size} elements are outside the kernel's valid range "
        f"[{low * scale:.10g}, {high * scale:.10g}] (x·2^{frac_bits} in [{low}, {high}]); "
        f"first at index {tuple(int(i) for i in index)}: {worst * scale:.10g}. {advice}"
    )


def require_product_fits(ctx, exact_scaled: np.ndarray, ring: RingSpec, *, kernel: str, advice: str) -> None:
    """CHECKED MODE ONLY: raise RangeError when a product at scale 2^(2f) (exact, from
    opened operands) leaves the ring's safe range |v| < 2^(l−2): it would wrap mod 2^l
    before the truncation, invisibly in the ring value afterwards."""
    worst = float(np.max(np.abs(exact_scaled), initial=0.0))
    limit = 2.0 ** (ring.bits - 2)
    if worst >= limit:
        f = ring.frac_bits
        raise RangeError(
            f"{kernel} on party {ctx.rank}: a product reaches {worst * 2.0 ** (-2 * f):.6g}, but {ring} holds "
            f"products only below {limit * 2.0 ** (-2 * f):.6g} (|v·2^{2 * f}| < 2^{ring.bits - 2}); {advice}"
        )
