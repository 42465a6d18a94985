"""Exact matrix products in Z_2^32 with float64 BLAS.

numpy has no fast integer GEMM (and SPU's Eigen uint32 GEMM is slow), but float64 GEMM
is exact on integers: when every product and every partial sum is an integer of
magnitude at most 2^53, the result is exact in any summation order, with or without
FMA. So cut the words into signed limbs small enough for that and recombine mod 2^32.

Of the two operands, the smaller one (S) is cut at bit 11 into centred limbs; the
larger one (F) is used twice, whole and by its low 21 bits:

    s = s_lo + 2^11·s_hi  (mod 2^32),  s_lo ∈ [-2^10, 2^10),  s_hi ∈ [-2^20, 2^20)
    f_c = f read as int32 ∈ [-2^31, 2^31),  f_lo = f mod 2^21 ∈ [0, 2^21)

    s·f ≡ s_lo·f_c + 2^11·(s_hi·f_lo)   (mod 2^32)

(2^11·s_hi·f only matters mod 2^32, i.e. f only mod 2^21.) Every limb product is at
most 2^41 in magnitude, so a contraction of K ≤ 2^12 terms stays within 2^53 and both
GEMMs are exact; longer contractions are cut into chunks of at most 2^12 terms whose
results are added mod 2^32. Cost: two float64 GEMMs of M·K·N multiply-adds per ring
product (the former 16-bit-limb scheme needed three: lo·lo, hi·lo, lo·hi), plus one pass
over each operand to build its limbs. :func:`verify_blas` checks the bound case once.

Layout: the limbs are written by single ufunc passes (mask, shift, int32 view) straight
from the uint32 words, in the dot_general's own axis order, into reused float64
buffers — no transposed uint32 copies, no concatenation, no uint64 temporaries:

    L = [S_lo ; S_hi] or [F_c ; F_lo]   (2, B, M, K)
    R = [F_c ; F_lo] or [S_lo ; S_hi]   (2, B, K, N)
    G = L @ R   (one batched matmul: G[0] the low product, G[1] the 2^11 term)

The buffers are per thread (each party thread owns its own) and keep the largest size
seen: fresh multi-megabyte float64 arrays cost more in first-touch page faults than
the limb passes themselves on this class of machine.

BLAS threads: when several party threads of one process run these GEMMs (the 3-party
simulator), each gets its share of OpenBLAS's threads instead of the whole pool (see
:class:`_PartyBlasThreads`); a process with one party thread is left alone.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

_MAX_K = 1 << 12  # every limb product is at most 2^41: 2^12 of them sum to at most 2^53
_SPLIT_BITS = 11  # S is cut at this bit; F's low part keeps 32 - _SPLIT_BITS bits
_SCRATCH_LIMIT = 1 << 26  # elements a thread keeps for reuse per buffer (512 MB of float64)

_HALF_LO = np.uint32(1 << (_SPLIT_BITS - 1))
_LO_MASK = np.uint32((1 << _SPLIT_BITS) - 1)
_F_LO_MASK = np.uint32((1 << (32 - _SPLIT_BITS)) - 1)


# ---- per-thread work buffers ------------------------------------------------------------
_scratch_store = threading.local()


def _scratch(name: str, shape: tuple, dtype=np.float64) -> np.ndarray:
    """A work array of ``shape`` (not zeroed), reused across calls on this thread."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    if size > _SCRATCH_LIMIT:
        return np.empty(shape, dtype)
    key = f"{name}_{dtype.char}"
    buf = getattr(_scratch_store, key, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype)
        setattr(_scratch_store, key, buf)
    return buf[:size].reshape(shape)


# ---- BLAS threads ------------------------------------------------------------------------
class _PartyBlasThreads:
    """One share of the BLAS threads per party while several party threads share a process.

    The 3-party simulator runs the parties as threads of one process. Left alone, each
    party's GEMM starts OpenBLAS's whole thread pool, and 3 × cores BLAS threads (which
    spin while waiting for work) fight over the cores: on 2 cores a BERT layer's 8
    matmuls took ~12% longer than with one BLAS thread per party. Every thread that has
    run a ring GEMM and is still alive counts as a party; while there are n of them,
    OpenBLAS runs max(1, default // n) threads per call, and its default again once at
    most one is left (the simulator's party threads end with their run). A process with
    a single party thread — a deployed node — keeps its default. Best effort: if the
    OpenBLAS thread-count functions cannot be found (another BLAS, no /proc), nothing
    happens. Only the thread count changes, never a result.
    """

    _SETTERS = ("openblas_set_num_threads64_", "openblas_set_num_threads", "scipy_openblas_set_num_threads64_")

    def __init__(self):
        self._lock = threading.RLock()
        self._local = threading.local()
        self._live = 0
        self._libs = None  # [[setter, default thread count, current]], found on first use

    def register_current_thread(self) -> None:
        if getattr(self._local, "token", None) is not None:
            return
        token = self._local.token = _ThreadToken()
        weakref.finalize(token, self._thread_ended).atexit = False  # runs when this thread's locals go
        with self._lock:
            self._live += 1
            self._apply()

    def _thread_ended(self) -> None:
        with self._lock:
            self._live -= 1
            self._apply()

    def _apply(self) -> None:
        if self._libs is None:
            self._libs = self._find()
        for entry in self._libs:
            want = max(1, entry[1] // max(1, self._live))
            if want != entry[2]:
                entry[0](want)
                entry[2] = want

    @classmethod
    def _find(cls) -> list:
        try:
            import ctypes

            with open("/proc/self/maps") as maps:
                paths = sorted({line.split()[-1] for line in maps if "openblas" in line.split()[-1]})
            found = []
            for path in paths:
                lib = ctypes.CDLL(path)
                for name in cls._SETTERS:
                    setter = getattr(lib, name, None)
                    getter = getattr(lib, name.replace("set_num", "get_num"), None)
                    if setter is not None and getter is not None:
                        setter.argtypes = [ctypes.c_int]
                        getter.restype = ctypes.c_int
                        default = max(1, int(getter()))
                        found.append([setter, default, default])
                        break
            return found
        except Exception:  # no /proc, no library, no symbols: leave BLAS alone
            return []


class _ThreadToken:
    """Kept in one thread's local storage; collected when that thread ends."""


_PARTY_BLAS = _PartyBlasThreads()


# ---- self-check --------------------------------------------------------------------------
_VERIFIED = False


def verify_blas() -> None:
    """Check once per process that this BLAS really is exact on limb products.

    Any correct float64 GEMM is (every partial sum is an integer of magnitude at most
    2^53), but a miscompiled or mis-detected BLAS kernel would give silently wrong
    shares. Compares a random product, and products whose limb sums reach the 2^53
    bound with either operand cut, against Python integer arithmetic; raises
    RuntimeError if any differs.
    """
    global _VERIFIED
    if _VERIFIED:
        return
    rng = np.random.default_rng(12345)
    cases = [
        (
            rng.integers(0, 2**32, (9, 300), dtype=np.uint64).astype(np.uint32),
            rng.integers(0, 2**32, (300, 7), dtype=np.uint64).astype(np.uint32),
        )
    ]
    # s = 0x7FFFFC00: s_lo = -2^10, s_hi = -2^20; f = 0x80000000 / 0x801FFFFF / 0x001FFFFF:
    # f_c = -2^31 or close, f_lo = 2^21 - 1. Over _MAX_K terms both sums reach ~2^53.
    s = np.full((1, _MAX_K), 0x7FFFFC00, np.uint32)
    f = np.tile(np.array([[0x80000000, 0x801FFFFF, 0x001FFFFF]], np.uint32), (_MAX_K, 1))
    f[-1] += np.uint32(1)
    cases += [(s, f), (f.T.copy(), s.T.copy())]
    for a, b in cases:
        got = _dot_general(a, b, ((), (), (1,), (0,)))
        want = (a.astype(object) @ b.astype(object)) % (1 << 32)
        if not np.array_equal(got.astype(object), want):
            raise RuntimeError(
                "float64 BLAS gave inexact results on integer limbs: the FXP32 matmul kernel "
                "cannot run on this numpy/OpenBLAS; unset OPENBLAS_CORETYPE or use SPU segments"
            )
    _VERIFIED = True


# ---- public API --------------------------------------------------------------------------
def matmul_u32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(…, M, K) @ (…, K, N) mod 2^32 for uint32 arrays (batched like np.matmul)."""
    a = np.asarray(a, np.uint32)
    b = np.asarray(b, np.uint32)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul_u32 needs operands of rank >= 2, got {a.shape} and {b.shape}")
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    nb = len(batch)
    axes = tuple(range(nb))
    return dot_general_u32(a, b, (axes, axes, (nb + 1,), (nb,)))


def batched_operands(lhs, rhs, dims):
    """dot_general operands as (B, M, K) and (B, K, N) arrays, and the result's shape.

    ``dims`` = (lhs_batch, rhs_batch, lhs_contract, rhs_contract) as tuples of axes. The
    result's axes are: batch, lhs free, rhs free (StableHLO's order).
    """
    lb, rb, lc, rc = (tuple(d) for d in dims)
    lf = _free_axes(lhs.ndim, lb, lc)
    rf = _free_axes(rhs.ndim, rb, rc)
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
    """stablehlo.dot_general mod 2^32 (``dims`` as in :func:`batched_operands`).

    A contracting axis may be a "terms" axis: with lhs[..., t] and rhs[..., t] both
    contracted, the result is Σ_t dot_general(lhs[..., t], rhs[..., t]) — a sum of ring
    products in the same two GEMMs (the FXP32 matmul kernel's local step).
    """
    verify_blas()
    lhs = np.asarray(lhs, np.uint32)
    rhs = np.asarray(rhs, np.uint32)
    return _dot_general(lhs, rhs, tuple(tuple(int(a) for a in d) for d in dims))


# ---- implementation ----------------------------------------------------------------------
def _free_axes(ndim: int, batch, contract) -> list:
    return [i for i in range(ndim) if i not in batch and i not in contract]


def _dot_general(lhs: np.ndarray, rhs: np.ndarray, dims) -> np.ndarray:
    """dot_general mod 2^32; contractions longer than _MAX_K terms are cut into chunks."""
    lc, rc = dims[2], dims[3]
    sizes = [lhs.shape[i] for i in lc]
    k = int(np.prod(sizes, dtype=np.int64))
    if k <= _MAX_K:
        return _dot_general_chunk(lhs, rhs, dims)
    # Cut one contracting axis so that each chunk contracts at most _MAX_K terms, in as
    # few (equal) pieces as possible; if no single axis suffices, cut the longest one
    # into single entries and let the recursion cut the rest.
    best = None
    for j, size in enumerate(sizes):
        rest = k // size
        if rest <= _MAX_K:
            pieces = -(-size // (_MAX_K // rest))
            if best is None or pieces < best[0]:
                best = (pieces, j)
    if best is None:
        j, step = int(np.argmax(sizes)), 1
    else:
        pieces, j = best
        step = -(-sizes[j] // pieces)
    out: np.ndarray | None = None
    for start in range(0, sizes[j], step):
        part = _dot_general(_slice(lhs, lc[j], start, step), _slice(rhs, rc[j], start, step), dims)
        if out is None:
            out = part
        else:
            out += part
    assert out is not None  # sizes[j] > 0
    return out


def _slice(x: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, start + length)
    return x[tuple(index)]


def _split_limbs(words: np.ndarray, out: np.ndarray) -> None:
    """out[0] = s_lo, out[1] = s_hi (float64) with s ≡ s_lo + 2^11·s_hi (mod 2^32):
    u = s + 2^10 (mod 2^32), s_lo = (u mod 2^11) − 2^10, s_hi = int32(u) >> 11."""
    u = _scratch("split_words", words.shape, np.uint32)
    np.add(words, _HALF_LO, out=u)
    np.bitwise_and(u, _LO_MASK, out=out[0])
    out[0] -= float(_HALF_LO)
    np.right_shift(u.view(np.int32), _SPLIT_BITS, out=out[1])


def _full_limbs(words: np.ndarray, out: np.ndarray) -> None:
    """out[0] = f_c (f read as int32), out[1] = f_lo = f mod 2^21 (float64)."""
    np.copyto(out[0], words.view(np.int32))
    np.bitwise_and(words, _F_LO_MASK, out=out[1])


def _dot_general_chunk(lhs: np.ndarray, rhs: np.ndarray, dims) -> np.ndarray:
    """dot_general mod 2^32 for a contraction of at most _MAX_K terms (see the module doc)."""
    lb, rb, lc, rc = dims
    lf = _free_axes(lhs.ndim, lb, lc)
    rf = _free_axes(rhs.ndim, rb, rc)
    batch_shape = tuple(lhs.shape[i] for i in lb)
    lf_shape = tuple(lhs.shape[i] for i in lf)
    rf_shape = tuple(rhs.shape[i] for i in rf)
    contract_shape = tuple(lhs.shape[i] for i in lc)
    bsz, m, n, k = (int(np.prod(s, dtype=np.int64)) for s in (batch_shape, lf_shape, rf_shape, contract_shape))
    out_shape = batch_shape + lf_shape + rf_shape
    if 0 in (bsz, m, n, k):
        return np.zeros(out_shape, np.uint32)

    # Both operands in GEMM order, as views: lhs (batch, free, contract), rhs (batch,
    # contract, free); the limb passes write them contiguously into L and R.
    lhs_words = lhs.transpose(list(lb) + lf + list(lc))
    rhs_words = rhs.transpose(list(rb) + list(rc) + rf)
    left = _scratch("left", (2, bsz, m, k))
    right = _scratch("right", (2, bsz, k, n))
    left_limbs = left.reshape((2,) + lhs_words.shape)
    right_limbs = right.reshape((2,) + rhs_words.shape)
    if lhs.size <= rhs.size:  # cut the smaller operand: its limb pass is the dearer one
        _split_limbs(lhs_words, left_limbs)
        _full_limbs(rhs_words, right_limbs)
    else:
        _full_limbs(lhs_words, left_limbs)
        _split_limbs(rhs_words, right_limbs)

    products = _scratch("products", (2, bsz, m, n))
    _PARTY_BLAS.register_current_thread()
    np.matmul(left, right, out=products)
    # |products| <= 2^53: exact as int64; the uint32 casts and the shift wrap mod 2^32.
    z = products[0].astype(np.int64).astype(np.uint32)
    high = products[1].astype(np.int64).astype(np.uint32)
    high <<= np.uint32(_SPLIT_BITS)
    z += high
    return z.reshape(out_shape)
