"""Exact matrix products in Z_2^32 with float64 BLAS.

numpy has no fast integer GEMM (and SPU's Eigen uint32 GEMM is slow), but float64
GEMM is exact on integers below 2^53. Split each 32-bit word into 16-bit limbs,
a = a_hi·2^16 + a_lo; then

    a·b mod 2^32 = a_lo·b_lo + 2^16·(a_hi·b_lo + a_lo·b_hi)   (mod 2^32)

and each limb product summed over K terms stays below K·2^32 — exact in float64 while
K·2^33 < 2^53, i.e. K < 2^20 (the two cross terms are one GEMM over 2K). Larger K is
split into chunks. Two float64 GEMMs per ring product.
"""

from __future__ import annotations

import numpy as np

_MAX_K = 1 << 19  # cross-term GEMM contracts 2K terms of < 2^32 each: 2K·2^32 < 2^53


def _limbs(x: np.ndarray):
    return (x & np.uint32(0xFFFF)).astype(np.float64), (x >> np.uint32(16)).astype(np.float64)


_VERIFIED = False


def verify_blas() -> None:
    """Check once per process that this BLAS really is exact on limb products.

    Any correct float64 GEMM is (every partial sum is an integer below 2^53), but a
    miscompiled or mis-detected BLAS kernel would give silently wrong shares. Compares
    a random product against Python integer arithmetic; raises RuntimeError if wrong.
    """
    global _VERIFIED
    if _VERIFIED:
        return
    rng = np.random.default_rng(12345)
    a = rng.integers(0, 2**32, (9, 300), dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, (300, 7), dtype=np.uint64).astype(np.uint32)
    got = _matmul_u32(a, b)
    want = (a.astype(object) @ b.astype(object)) % (1 << 32)
    if not np.array_equal(got.astype(object), want):
        raise RuntimeError(
            "float64 BLAS gave inexact results on integer limbs: the FXP32 matmul kernel "
            "cannot run on this numpy/OpenBLAS; unset OPENBLAS_CORETYPE or use SPU segments"
        )
    _VERIFIED = True


def matmul_u32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(…, M, K) @ (…, K, N) mod 2^32 for uint32 arrays (batched like np.matmul)."""
    verify_blas()
    return _matmul_u32(a, b)


def _matmul_u32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.uint32)
    b = np.asarray(b, np.uint32)
    k = a.shape[-1]
    if k > _MAX_K:
        out = None
        for start in range(0, k, _MAX_K):
            part = _matmul_u32(a[..., start : start + _MAX_K], b[..., start : start + _MAX_K, :])
            out = part if out is None else out + part
        return out
    a_lo, a_hi = _limbs(a)
    b_lo, b_hi = _limbs(b)
    low = np.matmul(a_lo, b_lo)
    cross = np.matmul(np.concatenate([a_hi, a_lo], axis=-1), np.concatenate([b_lo, b_hi], axis=-2))
    low_u = low.astype(np.uint64)
    cross_u = cross.astype(np.uint64) & np.uint64(0xFFFF)
    return (low_u + (cross_u << np.uint64(16))).astype(np.uint32)


def batched_operands(lhs, rhs, dims):
    """dot_general operands as (B, M, K) and (B, K, N) arrays, and the result's shape.

    ``dims`` = (lhs_batch, rhs_batch, lhs_contract, rhs_contract) as tuples of axes. The
    result's axes are: batch, lhs free, rhs free (StableHLO's order).
    """
    lb, rb, lc, rc = (tuple(d) for d in dims)
    lf = [i for i in range(lhs.ndim) if i not in lb and i not in lc]
    rf = [i for i in range(rhs.ndim) if i not in rb and i not in rc]
    batch_shape = [lhs.shape[i] for i in lb]
    lf_shape = [lhs.shape[i] for i in lf]
    rf_shape = [rhs.shape[i] for i in rf]
    k = int(np.prod([lhs.shape[i] for i in lc], dtype=np.int64))
    bsz = int(np.prod(batch_shape, dtype=np.int64))
    m = int(np.prod(lf_shape, dtype=np.int64))
    n = int(np.prod(rf_shape, dtype=np.int64))
    a = np.transpose(lhs, list(lb) + lf + list(lc)).reshape(bsz, m, k)
    b = np.transpose(rhs, list(rb) + list(rc) + rf).reshape(bsz, k, n)
    return a, b, tuple(batch_shape + lf_shape + rf_shape)


def dot_general_u32(lhs, rhs, dims) -> np.ndarray:
    """stablehlo.dot_general mod 2^32 (``dims`` as in :func:`batched_operands`)."""
    a, b, shape = batched_operands(lhs, rhs, dims)
    return matmul_u32(a, b).reshape(shape)
