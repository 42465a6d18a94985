"""Run a function on three parties in threads over SPU in-memory links (test helper).

``run_three_parties(fn)`` creates a fresh in-memory link session (the three
``libspu.link.create_mem`` calls run concurrently, one thread per party), builds a
:class:`PartyContext` per party and calls ``fn(ctx)`` on each in its own thread. It
returns the three results in rank order, or re-raises the first party's exception
(lowest rank first) after all threads have finished. ``recv_timeout_ms`` makes a
protocol bug fail instead of hanging.
"""

from __future__ import annotations

import threading
import uuid

import numpy as np
from spu import libspu

from ditto_spu.kernels.base import CountedLink, PartyContext
from ditto_spu.kernels.prg import PairwisePRG

WORLD_SIZE = 3


class RecordingLink(CountedLink):
    """A CountedLink that also keeps every payload this party received, by source."""

    def __init__(self, raw, stats=None):
        super().__init__(raw, stats)
        self.received: list = []  # [(src, bytes)] in arrival order

    def exchange(self, sends: dict, recv_from: list) -> dict:
        got = super().exchange(sends, recv_from)
        self.received.extend(sorted(got.items()))
        return got


def create_mem_links(recv_timeout_ms: int = 20000) -> list:
    """Three connected in-memory link contexts (one session id per call)."""
    desc = libspu.link.Desc()
    desc.id = f"ditto-test-{uuid.uuid4().hex}"
    desc.recv_timeout_ms = recv_timeout_ms
    for rank in range(WORLD_SIZE):
        desc.add_party(f"id_{rank}", f"thread_{rank}")
    links: list = [None] * WORLD_SIZE
    errors: list = [None] * WORLD_SIZE

    def create(rank):
        try:
            links[rank] = libspu.link.create_mem(desc, rank)
        except BaseException as exc:  # surfaced below
            errors[rank] = exc

    _join_all([threading.Thread(target=create, args=(r,)) for r in range(WORLD_SIZE)])
    for exc in errors:
        if exc is not None:
            raise exc
    return links


def run_three_parties(
    fn,
    *,
    checked: bool = False,
    prgs: list | None = None,
    link_class=CountedLink,
    recv_timeout_ms: int = 20000,
) -> list:
    """Call ``fn(ctx)`` on parties 0, 1, 2 concurrently; results in rank order.

    ``prgs``: three PRG objects (e.g. ``PairwisePRG.deterministic_trio(seed)``); by
    default each party runs :meth:`PairwisePRG.setup` over its link first (that round is
    counted in ``ctx.link.stats``; measure kernels with before/after differences or
    ``base.run_cast``).
    """
    raw_links = create_mem_links(recv_timeout_ms)
    results: list = [None] * WORLD_SIZE
    errors: list = [None] * WORLD_SIZE

    def party(rank):
        try:
            link = link_class(raw_links[rank])
            prg = prgs[rank] if prgs is not None else PairwisePRG.setup(link)
            ctx = PartyContext(rank=rank, link=link, prg=prg, checked=checked)
            results[rank] = fn(ctx)
        except BaseException as exc:  # re-raised in the caller's thread
            errors[rank] = exc

    _join_all([threading.Thread(target=party, args=(r,), name=f"party{r}") for r in range(WORLD_SIZE)])
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def _join_all(threads):
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---- message views (security tests) ---------------------------------------------------------
class PadDouble:
    """A PRG test double whose pairwise pads come from ``rewrite(inner, peer, shape, dtype)``:
    deliberately broken variants of correlated randomness (a missing mask, a reused pad)."""

    def __init__(self, inner, rewrite):
        self.inner = inner
        self.rewrite = rewrite

    def shared(self, peer_rank, shape, dtype=np.uint64):
        return self.rewrite(self.inner, peer_rank, shape, dtype)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def zero_pads(dtype):
    """Rewrite: every pad of ``dtype`` is zero (a missing mask)."""

    def rewrite(inner, peer, shape, d):
        pad = inner.shared(peer, shape, d)
        return np.zeros_like(pad) if np.dtype(d) == np.dtype(dtype) else pad

    return rewrite


def pads_from_stream_of(dtype, peer_used, peer_meant):
    """Rewrite: pads of ``dtype`` meant for ``peer_meant`` are drawn from the stream shared
    with ``peer_used`` instead (a reused pad: ``peer_used`` knows them)."""

    def rewrite(inner, peer, shape, d):
        if np.dtype(d) == np.dtype(dtype) and peer == peer_meant:
            return inner.shared(peer_used, shape, d)
        return inner.shared(peer, shape, d)

    return rewrite


def fixed_view_shares(values, ring, dtype, receiver=2, constants=(0x2545F491, 0x3A8F05C5)):
    """RSS of ``values`` in which ``receiver``'s own two components are the same constants
    whatever the secret: only the component it never holds carries it."""
    from ditto_spu.shares import AShare

    values = np.asarray(values)
    word = ring.dtype
    comps = [None] * WORLD_SIZE
    comps[receiver] = np.full(values.shape, constants[0] % (1 << ring.bits), dtype=word)
    comps[(receiver + 1) % WORLD_SIZE] = np.full(values.shape, constants[1] % (1 << ring.bits), dtype=word)
    hidden = (receiver + 2) % WORLD_SIZE
    comps[hidden] = ring.encode(values) - comps[receiver] - comps[(receiver + 1) % WORLD_SIZE]
    return [AShare(ring, values.shape, dtype, np.stack([comps[r], comps[(r + 1) % 3]], -1)) for r in range(WORLD_SIZE)]


def received_messages(fn, shares, prgs, receiver=2) -> list:
    """[(source, payload bytes)] that ``receiver`` got while every party ran
    ``fn(ctx, its share)``, in arrival order."""
    out = run_three_parties(
        lambda ctx: fn(ctx, shares[ctx.rank]) and ctx.link.received,
        link_class=RecordingLink,
        prgs=prgs,
    )
    return out[receiver]


def without_bit_pad(payload: bytes, pad: np.ndarray) -> bytes:
    """A message of packed bit lanes with the receiver's own packed pad XORed out."""
    return (np.frombuffer(payload, np.uint8) ^ pad.ravel().astype(np.uint8)).tobytes()


def normalisation_view(got: list, seed: int, values: int, thresholds: int, p_hi: int) -> list:
    """Party 2's view of a highest-bit normalisation (:mod:`ditto_spu.kernels.normalize`)
    and what follows it, as ``[(source, byte values)]``: every message as received, plus
    the first one (party 0's sharing of A for the threshold comparisons: p_hi + 3 packed
    lanes over ``values`` × ``thresholds`` comparisons) with party 2's own pad with party 0
    removed (its stream from ``PairwisePRG.deterministic_trio(seed)``)."""
    from ditto_spu.kernels.prg import PairwisePRG

    lanes = (p_hi + 3, -(-values * thresholds // 8))
    own = PairwisePRG.deterministic_trio(seed)[2].shared(0, lanes, np.uint8)
    assert got[0][0] == 0
    view = got + [("0, own pad removed", without_bit_pad(got[0][1], own))]
    return [(src, np.frombuffer(p, np.uint8).astype(np.float64)) for src, p in view]


def assert_views_alike(a: list, b: list, broken) -> None:
    """Two receiver views ``[(source, samples)]`` for two secrets: the same messages, and
    each sample set with the same distribution (KS p > 1e-4) — or, for a deliberately
    ``broken`` variant, some set clearly different (p < 1e-8)."""
    from scipy.stats import ks_2samp

    assert [s for s, _ in a] == [s for s, _ in b]
    p = min(ks_2samp(x, y).pvalue for (_, x), (_, y) in zip(a, b))
    if broken is not None:
        assert p < 1e-8, p
    else:
        assert p > 1e-4, p


def reshare_from_party_0_view(payload: bytes, seed: int, n: int, dtype=np.uint32) -> list:
    """Party 2's view of the reshare message c_0 = z_0 + r_20 − r_01 it receives from party
    0, given what party 2 knows: its first two pads with party 0 from its own stream
    (``PairwisePRG.deterministic_trio(seed)``). c_0 − r_20 is masked by r_01, which party 2
    cannot draw; with r_01 taken from the wrong stream (party 0's next pad with party 2),
    c_0 − r_20 + that pad is z_0 itself."""
    from ditto_spu.kernels.prg import PairwisePRG

    own = PairwisePRG.deterministic_trio(seed)[2]
    first, second = own.shared(0, (n,), dtype), own.shared(0, (n,), dtype)
    message = np.frombuffer(payload, dtype)
    scale = 2.0 ** (8 * np.dtype(dtype).itemsize)
    return [
        ("0, own pad removed", (message - first) / scale),
        ("0, own pads removed", (message - first + second) / scale),
    ]
