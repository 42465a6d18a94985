"""Helpers for cast-kernel tests: share scaled integers, run a cast on 3 parties, measure error.

Values are handled as scaled integers X = x·2^f (int64) so boundary cases are exact;
float64 cannot represent every FXP64 element.
"""

from __future__ import annotations

import numpy as np
from threeparty import run_three_parties

from ditto_spu.kernels.base import CommStats, PartyContext
from ditto_spu.kernels.casts import run_cast
from ditto_spu.rings import RingSpec
from ditto_spu.shares import AShare, reconstruct_elements, share_ring_elements


def share_scaled(scaled, ring: RingSpec, dtype: str = "float32", seed: int = 0) -> list:
    """Three replicated shares of the ring elements of the signed integers ``scaled``."""
    elements = np.asarray(scaled, dtype=np.int64).astype(ring.signed_dtype).view(ring.dtype)
    return share_ring_elements(elements, ring, dtype, rng=np.random.default_rng(seed))


def scaled_of(shares: list) -> np.ndarray:
    """Reconstructed signed ring values (x·2^f for fixed point) as int64."""
    ring = shares[0].ring
    return reconstruct_elements(shares).view(ring.signed_dtype).astype(np.int64)


def cast_on_parties(shares: list, dst: RingSpec, **run_kwargs):
    """Run the registered cast on three parties; returns (output shares, [KernelResult])."""
    results = run_three_parties(lambda ctx: run_cast(ctx, shares[ctx.rank], dst), **run_kwargs)
    return [r.share for r in results], results


def cast_locally(kernel, shares: list, dst: RingSpec) -> list:
    """Run a communication-free kernel on the three shares in one thread (no link, no PRG)."""
    return [kernel(PartyContext(rank=r, link=None, prg=None), shares[r], dst) for r in range(3)]


def error_in_dst_ulps(result_scaled, input_scaled, src_frac_bits: int, dst_frac_bits: int):
    """(Y - X·2^(g-f)) in destination ulps, computed exactly with Python integers."""
    y = np.asarray(result_scaled).astype(object)
    x = np.asarray(input_scaled).astype(object)
    shift = dst_frac_bits - src_frac_bits
    if shift >= 0:
        return np.array(y - x * 2**shift, dtype=np.float64)
    exact_times_2d = y * 2 ** (-shift) - x  # (Y - X/2^d)·2^d, an integer
    return np.array(exact_times_2d, dtype=np.float64) / 2.0 ** (-shift)


def boundary_and_random(low: int, high: int, count: int, seed: int = 0) -> np.ndarray:
    """Boundaries, values next to them, zero and ±1 (when inside), then uniform randoms."""
    specials = [low, low + 1, high - 1, high, 0, 1, -1, low // 2, high // 2]
    specials = [v for v in specials if low <= v <= high]
    rng = np.random.default_rng(seed)
    randoms = rng.integers(low, high, size=count, dtype=np.int64, endpoint=True)
    return np.concatenate([np.array(specials, dtype=np.int64), randoms])


def total_comm(results) -> CommStats:
    """Communication summed over the three parties' kernel results."""
    total = CommStats()
    for r in results:
        total.add(r.comm)
    return total


def assert_same_shape_and_ring(shares: list, dst: RingSpec, source: AShare) -> None:
    for s in shares:
        assert s.ring == dst
        assert s.shape == source.shape
        assert s.dtype == source.dtype
        assert s.components.dtype == dst.dtype
