"""Correlated randomness for the kernels: pairwise PRG seeds and counter-mode pads.

Seed convention (set once per session, :meth:`PairwisePRG.setup`): party ``i`` samples
a 128-bit seed ``k_i`` with :mod:`secrets` and sends it to its previous neighbour
``i-1``. So the pair {i-1, i} shares ``k_i``:

    P0–P1 share k_1 (sampled by P1),  P1–P2 share k_2 (by P2),  P2–P0 share k_0 (by P0).

The third party never sees a pair's seed, which is what makes a pad drawn from it a
one-time pad from that party's point of view (semi-honest, honest majority).

Pads come from numpy's Philox-4x64 used as a keyed counter-mode generator: key = the
pair's seed, counter = (call index) · 2^192. Each :meth:`shared` call for a peer takes
the next call index of that pair, so both holders derive the same pad when they make the
same calls in the same order, and no two calls ever share a Philox block (a call would
need 2^192 blocks to reach the next call's counter). A pad is never reused.

Kernels take every random value from ``ctx.prg``; tests swap in
:meth:`PairwisePRG.from_seeds` (deterministic, no link) without changing a kernel.
"""

from __future__ import annotations

import secrets
from typing import Sequence

import numpy as np

WORLD_SIZE = 3
SEED_BYTES = 16
_CALL_INDEX_SHIFT = 192  # call index lives in the top 64-bit word of Philox's counter


def _philox_bytes(key: int, call_index: int, nbytes: int) -> np.ndarray:
    """``nbytes`` pseudo-random bytes from Philox(key) starting at block call_index·2^192."""
    words = -(-nbytes // 8)
    generator = np.random.Philox(key=key, counter=call_index << _CALL_INDEX_SHIFT)
    return generator.random_raw(words).view(np.uint8)[:nbytes]


def _check_integer_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        raise TypeError(f"pads are integer words; got dtype {dtype} (use uint32/uint64/...)")
    return dtype


class PairwisePRG:
    """One party's correlated randomness: a seed shared with each neighbour, one private.

    ``shared(peer, shape, dtype)`` is uniform over the dtype's full range and identical on
    this party and ``peer`` when both call it in the same order; the third party cannot
    predict it. ``private(shape, dtype)`` is known to this party only.
    """

    def __init__(self, rank: int, pair_seeds: dict, private_seed: int):
        if rank not in range(WORLD_SIZE):
            raise ValueError(f"rank must be 0, 1 or 2, got {rank}")
        expected = {(rank - 1) % WORLD_SIZE, (rank + 1) % WORLD_SIZE}
        if set(pair_seeds) != expected:
            raise ValueError(
                f"party {rank} needs seeds for peers {sorted(expected)}, got {sorted(pair_seeds)}"
            )
        self.rank = rank
        self._pair_seeds = {int(p): int(s) for p, s in pair_seeds.items()}
        self._pair_calls = {p: 0 for p in self._pair_seeds}
        self._private_seed = int(private_seed)
        self._private_calls = 0

    # ---- construction ------------------------------------------------------------
    @classmethod
    def setup(cls, link) -> "PairwisePRG":
        """Agree on pairwise seeds over ``link`` (a CountedLink): one round, 16 bytes sent.

        Party i sends its fresh seed k_i to party i-1 and receives k_{i+1} from i+1.
        """
        rank = link.rank
        prev_rank, next_rank = (rank - 1) % WORLD_SIZE, (rank + 1) % WORLD_SIZE
        own_seed = secrets.randbits(8 * SEED_BYTES)
        received = link.exchange({prev_rank: own_seed.to_bytes(SEED_BYTES, "little")}, [next_rank])
        payload = received[next_rank]
        if len(payload) != SEED_BYTES:
            raise ValueError(
                f"party {rank}: PRG seed from party {next_rank} has {len(payload)} bytes, "
                f"expected {SEED_BYTES}; are all three parties running the same setup?"
            )
        seeds = {prev_rank: own_seed, next_rank: int.from_bytes(payload, "little")}
        return cls(rank, seeds, secrets.randbits(8 * SEED_BYTES))

    @classmethod
    def from_seeds(cls, rank: int, seeds: Sequence[int], private_seed: int | None = None):
        """Deterministic test double: ``seeds = (k_0, k_1, k_2)`` as in the module convention.

        Party ``rank`` shares k_rank with rank-1 and k_{rank+1} with rank+1. Building all
        three parties from the same ``seeds`` gives consistent PRGs without a link.
        """
        if len(seeds) != WORLD_SIZE:
            raise ValueError(f"from_seeds needs 3 seeds (k_0, k_1, k_2), got {len(seeds)}")
        prev_rank, next_rank = (rank - 1) % WORLD_SIZE, (rank + 1) % WORLD_SIZE
        pair_seeds = {prev_rank: seeds[rank], next_rank: seeds[next_rank]}
        if private_seed is None:
            private_seed = (int(seeds[rank]) * 0x9E3779B97F4A7C15 + rank + 1) % (1 << 128)
        return cls(rank, pair_seeds, private_seed)

    @classmethod
    def deterministic_trio(cls, master_seed: int) -> list:
        """Three consistent test PRGs derived from one integer (tests only, not secure)."""
        rng = np.random.Generator(np.random.Philox(key=master_seed))
        words = rng.integers(0, 2**63, size=(4, 2), dtype=np.uint64)
        seeds = [int(w[0]) << 64 | int(w[1]) for w in words]
        return [cls.from_seeds(r, seeds[:3], private_seed=seeds[3] + r) for r in range(WORLD_SIZE)]

    # ---- drawing -----------------------------------------------------------------
    def shared(self, peer_rank: int, shape, dtype=np.uint64) -> np.ndarray:
        """A pad known to this party and ``peer_rank`` only (same call order on both)."""
        if peer_rank not in self._pair_seeds:
            raise ValueError(
                f"party {self.rank} shares no seed with party {peer_rank} "
                f"(peers: {sorted(self._pair_seeds)})"
            )
        call_index = self._pair_calls[peer_rank]
        self._pair_calls[peer_rank] = call_index + 1
        return self._draw(self._pair_seeds[peer_rank], call_index, shape, dtype)

    def private(self, shape, dtype=np.uint64) -> np.ndarray:
        """Randomness known to this party only."""
        call_index = self._private_calls
        self._private_calls += 1
        return self._draw(self._private_seed, call_index, shape, dtype)

    def calls_with(self, peer_rank: int) -> int:
        """How many pads this party has drawn with ``peer_rank`` (for step checks)."""
        return self._pair_calls[peer_rank]

    @staticmethod
    def _draw(key: int, call_index: int, shape, dtype) -> np.ndarray:
        dtype = _check_integer_dtype(dtype)
        shape = tuple(int(d) for d in np.atleast_1d(np.asarray(shape, dtype=np.int64)))
        count = int(np.prod(shape, dtype=np.int64))
        raw = _philox_bytes(key, call_index, count * dtype.itemsize)
        return raw.view(dtype).reshape(shape)

    def __repr__(self) -> str:
        calls = ", ".join(f"P{p}: {n} calls" for p, n in sorted(self._pair_calls.items()))
        return f"PairwisePRG(rank={self.rank}, {calls})"
