"""The FXP32 matmul kernel: exact ring products, correctness, cost and what parties see."""

import numpy as np
import pytest
from scipy.stats import ks_2samp
from threeparty import RecordingLink, run_three_parties

from ditto_spu.kernels import ring_matmul
from ditto_spu.kernels.matmul import matmul_fxp32
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.rings import FXP32
from ditto_spu.shares import reconstruct, share_values

MATMUL = {"lhs_batch": [], "rhs_batch": [], "lhs_contract": [1], "rhs_contract": [0]}
ATTENTION = {"lhs_batch": [0, 1], "rhs_batch": [0, 1], "lhs_contract": [3], "rhs_contract": [3]}


def _exact(a, b):
    return (a.astype(object) @ b.astype(object)) % (1 << 32)


@pytest.mark.parametrize("shape", [(3, 5, 4), (64, 300, 17), (1, 1, 1)])
def test_ring_matmul_is_exact_mod_2_32(shape):
    m, k, n = shape
    rng = np.random.default_rng(m * k * n)
    a = rng.integers(0, 2**32, (m, k), dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, (k, n), dtype=np.uint64).astype(np.uint32)
    got = ring_matmul.matmul_u32(a, b)
    assert got.dtype == np.uint32
    assert np.array_equal(got.astype(object), _exact(a, b))


def test_ring_matmul_splits_long_contractions(monkeypatch):
    monkeypatch.setattr(ring_matmul, "_MAX_K", 7)
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**32, (4, 30), dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, (30, 5), dtype=np.uint64).astype(np.uint32)
    assert np.array_equal(ring_matmul.matmul_u32(a, b).astype(object), _exact(a, b))


_EXTREMES = [0, 1, 0x3FF, 0x400, 0x7FFFFC00, 0x7FFFFFFF, 0x80000000, 0x801FFFFF, 0x001FFFFF, 0xFFFFFFFF]


@pytest.mark.parametrize("lhs_rows", [1, 3])  # 1: the lhs is cut into limbs, 3: the rhs is
def test_ring_matmul_is_exact_at_the_limb_bound(lhs_rows):
    """Limb values at their extremes over the longest unchunked contraction (2^12 terms):
    the float64 sums reach 2^53 and must still be exact, whichever operand is cut."""
    k = ring_matmul._MAX_K
    for v in _EXTREMES:
        a = np.full((lhs_rows, k), v, np.uint32)
        a[0, -1] ^= np.uint32(5)
        b = np.tile(np.array([_EXTREMES], np.uint32), (k, 1))[:, : 4 - lhs_rows]
        assert np.array_equal(ring_matmul.matmul_u32(a, b).astype(object), _exact(a, b)), hex(v)


def test_ring_matmul_chunks_long_and_multi_axis_contractions(monkeypatch):
    rng = np.random.default_rng(6)
    a = rng.integers(0, 2**32, (3, 9000), dtype=np.uint64).astype(np.uint32)
    b = rng.integers(0, 2**32, (9000, 4), dtype=np.uint64).astype(np.uint32)
    assert np.array_equal(ring_matmul.matmul_u32(a, b).astype(object), _exact(a, b))
    monkeypatch.setattr(ring_matmul, "_MAX_K", 16)
    for shape in [(6, 7), (5, 5, 5)]:  # one axis cut suffices / none does: cut, then recurse
        a = rng.integers(0, 2**32, (2,) + shape, dtype=np.uint64).astype(np.uint32)
        b = rng.integers(0, 2**32, shape + (3,), dtype=np.uint64).astype(np.uint32)
        axes = tuple(range(len(shape)))
        got = ring_matmul.dot_general_u32(a, b, ((), (), tuple(i + 1 for i in axes), axes))
        want = np.tensordot(a.astype(object), b.astype(object), (tuple(i + 1 for i in axes), axes)) % (1 << 32)
        assert np.array_equal(got.astype(object), want)


def test_dot_general_batch_and_contract_layout():
    rng = np.random.default_rng(4)
    q = rng.integers(0, 2**32, (2, 3, 4, 8), dtype=np.uint64).astype(np.uint32)
    k = rng.integers(0, 2**32, (2, 3, 5, 8), dtype=np.uint64).astype(np.uint32)
    got = ring_matmul.dot_general_u32(q, k, ((0, 1), (0, 1), (3,), (3,)))
    want = np.einsum("bhqd,bhkd->bhqk", q.astype(object), k.astype(object)) % (1 << 32)
    assert got.shape == (2, 3, 4, 5) and np.array_equal(got.astype(object), want)


def _secure_matmul(x, y, ring, params, **kw):
    xs, ys = share_values(x, ring, "float16"), share_values(y, ring, "float16")
    outs = run_three_parties(lambda ctx: (matmul_fxp32(ctx, [xs[ctx.rank], ys[ctx.rank]], params)[0], ctx.link), **kw)
    return reconstruct([o for o, _ in outs]), [link for _, link in outs]


@pytest.mark.parametrize("frac_bits", [8, 12])
def test_secure_matmul_matches_the_fixed_point_product(frac_bits):
    ring = FXP32(frac_bits)
    rng = np.random.default_rng(frac_bits)
    x = rng.uniform(-2, 2, (16, 48))
    y = rng.uniform(-0.5, 0.5, (48, 24))
    xq = np.round(x * 2**frac_bits) / 2**frac_bits
    yq = np.round(y * 2**frac_bits) / 2**frac_bits
    out, links = _secure_matmul(x, y, ring, MATMUL)
    # truncation of the exact ring product: within 1.5 ulps
    assert np.max(np.abs(out - xq @ yq)) <= 1.5 * ring.ulp
    # negatives, zeros and the batched attention layout
    q, k = rng.uniform(-1, 1, (1, 2, 6, 8)), rng.uniform(-1, 1, (1, 2, 7, 8))
    out, _ = _secure_matmul(q, k, ring, ATTENTION)
    qq, kq = (np.round(v * 2**frac_bits) / 2**frac_bits for v in (q, k))
    assert np.max(np.abs(out - np.einsum("bhqd,bhkd->bhqk", qq, kq))) <= 1.5 * ring.ulp


def test_cost_two_rounds_and_192_bits_per_output_element():
    # reshare 3·32 bits + truncation by f = 10 bits: the wrap count in 16-bit words, 6·16
    ring = FXP32(10)
    x, y = np.ones((8, 16)), np.ones((16, 4))
    xs, ys = share_values(x, ring, "float16"), share_values(y, ring, "float16")
    prgs = PairwisePRG.deterministic_trio(7)

    def party(ctx):
        before = (ctx.link.stats.bytes_sent, ctx.link.stats.rounds)
        matmul_fxp32(ctx, [xs[ctx.rank], ys[ctx.rank]], MATMUL)
        return ctx.link.stats.bytes_sent - before[0], ctx.link.stats.rounds - before[1]

    costs = run_three_parties(party, prgs=prgs)
    assert all(rounds == 2 for _, rounds in costs)
    assert 8 * sum(b for b, _ in costs) == 192 * 8 * 4


def test_overflowing_product_is_detected_in_checked_mode():
    from ditto_spu.errors import RangeError

    ring = FXP32(12)
    x, y = np.full((2, 64), 4.0), np.full((64, 2), 4.0)  # 1024 · 2^24 > 2^30
    with pytest.raises(RangeError):
        _secure_matmul(x, y, ring, MATMUL, checked=True)


class _NoPadWithParty2:
    """Broken PRG double for party 1: its pad shared with party 2 is zero, so the reshare
    c_1 = z_1 + r_01 − r_12 loses the mask party 0 cannot remove."""

    def __init__(self, inner):
        self.inner = inner

    def shared(self, peer_rank, shape, dtype=np.uint64):
        pad = self.inner.shared(peer_rank, shape, dtype)
        return np.zeros_like(pad) if peer_rank == 2 else pad

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _ReusedPad:
    """Broken PRG double for party 1: the pad it should share with party 2 is the one it
    shares with party 0 (a reused pad), so c_1 = z_1 + r_01 − r_01 = z_1 reaches party 0
    unmasked."""

    def __init__(self, inner):
        self.inner = inner

    def shared(self, peer_rank, shape, dtype=np.uint64):
        if peer_rank == 2:
            return self._last
        self._last = self.inner.shared(peer_rank, shape, dtype)
        return self._last

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _fixed_view_shares(value, rank_shares_seed=7):
    """ABY3 shares of ``value`` (n × 1, FXP32[f=8]) in which parties 0's own components
    (s_0, s_1) are the same constants whatever the secret: only s_2 carries it."""
    from ditto_spu.shares import AShare

    ring = FXP32(8)
    rng = np.random.default_rng(rank_shares_seed)
    s0, s1 = (np.full(value.shape, rng.integers(0, 2**32), dtype=np.uint32) for _ in range(2))
    enc = (np.round(value * 2**8).astype(np.int64) % 2**32).astype(np.uint32)
    s2 = enc - s0 - s1
    comps = [s0, s1, s2]
    return [AShare(ring, value.shape, "float16", np.stack([comps[r], comps[(r + 1) % 3]], -1)) for r in range(3)]


def _party0_reshare_view(value, seed, broken=None):
    """Party 0's view of party 1's reshare, its own shares held fixed: the message c_1 as
    received and c_1 − r_01 (r_01: party 0's own pad with party 1, which it knows)."""
    n = 4000
    xs = _fixed_view_shares(np.full((n, 1), value))
    ys = _fixed_view_shares(np.ones((1, 1)), rank_shares_seed=8)
    prgs = PairwisePRG.deterministic_trio(seed)
    if broken is not None:
        prgs[1] = broken(prgs[1])
    out = run_three_parties(
        lambda ctx: matmul_fxp32(ctx, [xs[ctx.rank], ys[ctx.rank]], MATMUL) and ctx.link.received,
        link_class=RecordingLink,
        prgs=prgs,
    )
    src, payload = out[0][0]  # no PRG set-up round: the first message is the reshare
    assert src == 1
    c1 = np.frombuffer(payload, dtype=np.uint32).reshape(n, 1)
    mine = PairwisePRG.deterministic_trio(seed)[0]  # party 0 replays its own pad draws
    mine.shared(2, (n, 1), np.uint32)
    r01 = mine.shared(1, (n, 1), np.uint32)
    return [(c1.astype(np.float64) / 2**32).ravel(), ((c1 - r01).astype(np.float64) / 2**32).ravel()]


@pytest.mark.parametrize("broken", [None, _NoPadWithParty2, _ReusedPad])
def test_reshare_messages_do_not_depend_on_the_secret(broken):
    """Party 0 receives c_1 = z_1 + r_01 − r_12 from party 1. Given everything party 0
    knows — its own shares (held fixed here) and its PRG streams (r_01 removed) — neither
    the message nor what is left of it may depend on the secret; with the r_12 mask
    missing, or the r_01 pad reused for it, one of them does."""
    zero, large = _party0_reshare_view(0.0, 1, broken), _party0_reshare_view(100.0, 2, broken)
    p = min(ks_2samp(a, b).pvalue for a, b in zip(zero, large))
    if broken is not None:
        assert p < 1e-8, p
    else:
        assert p > 1e-4, p
