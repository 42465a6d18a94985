"""Kernel vocabulary: the party context, counted message exchange, the cast-kernel protocol.

A kernel is protocol code run by all three parties in lock step. It receives a
:class:`PartyContext` (rank, counted link, pairwise PRG, stats, checked flag) and never
touches SPU runtimes. The registries are :mod:`.casts` (cast kernels per (source ring,
destination ring) pattern) and :mod:`.registry` (call kernels by name); kernel modules
import this module only, so the registries sit above every kernel.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np

from ..rings import RingSpec
from ..shares import AShare

WORLD_SIZE = 3


@dataclasses.dataclass
class CommStats:
    """Communication of one party: bytes and messages sent/received, rounds."""

    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    rounds: int = 0

    def add(self, other: "CommStats") -> None:
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.messages_sent += other.messages_sent
        self.rounds += other.rounds

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def snapshot(self) -> "CommStats":
        return dataclasses.replace(self)

    def since(self, before: "CommStats") -> "CommStats":
        """Traffic counted after ``before`` (a :meth:`snapshot`)."""
        return CommStats(
            self.bytes_sent - before.bytes_sent,
            self.bytes_received - before.bytes_received,
            self.messages_sent - before.messages_sent,
            self.rounds - before.rounds,
        )


class CountedLink:
    """A party's view of the link for kernel messages, counting every byte and round.

    ``raw`` is a ``libspu.link.Context`` (in-memory or brpc); the same link carries SPU's
    own traffic, so every party must call :meth:`exchange` in the same order.
    """

    def __init__(self, raw, stats: CommStats | None = None):
        self.raw = raw
        self.rank = raw.rank
        self.stats = stats if stats is not None else CommStats()

    def exchange(self, sends: dict, recv_from: list) -> dict:
        """One communication round: send ``{dst: bytes}``, then receive from each src.

        Counts one round when this party sends or receives anything.
        """
        for dst, payload in sends.items():
            if dst == self.rank:
                raise ValueError(f"party {self.rank} tried to send to itself")
            data = bytes(payload)
            self.raw.send_async(dst, data)
            self.stats.bytes_sent += len(data)
            self.stats.messages_sent += 1
        received = {}
        for src in recv_from:
            data = self.raw.recv(src)
            self.stats.bytes_received += len(data)
            received[src] = data
        if sends or recv_from:
            self.stats.rounds += 1
        return received


@dataclasses.dataclass
class PartyContext:
    """Everything a kernel may use on one party."""

    rank: int
    link: CountedLink
    prg: "object"  # kernels.prg.PairwisePRG (or a test double with the same methods)
    checked: bool = False

    rotation: int = 0  # advanced identically on every party by protocols with roles

    def next_rotation(self) -> int:
        """The role offset for the next asymmetric protocol call (0, 1, 2, 0, ...)."""
        r = self.rotation
        self.rotation = (r + 1) % WORLD_SIZE
        return r

    @property
    def next_rank(self) -> int:
        return (self.rank + 1) % WORLD_SIZE

    @property
    def prev_rank(self) -> int:
        return (self.rank - 1) % WORLD_SIZE


@dataclasses.dataclass(frozen=True)
class KernelResult:
    share: AShare
    comm: CommStats
    seconds: float


class CastKernel(Protocol):
    """A registered ring conversion.

    Attributes state its contract: ``name``; ``max_error_ulps`` (in ulps of the
    destination ring); ``rounds``; ``bits_per_element`` (all parties together).
    ``applies(src, dst)`` says whether it handles that pair; calling it runs the protocol.
    """

    name: str
    max_error_ulps: float
    rounds: int
    bits_per_element: int

    def applies(self, src: RingSpec, dst: RingSpec) -> bool: ...

    def __call__(self, ctx: PartyContext, share: AShare, dst: RingSpec) -> AShare: ...

    def emulate(self, x, src: RingSpec, dst: RingSpec, round_nearest: Callable):
        """What the protocol computes, on plaintext ring values (floats on the 2^-f grid of
        ``src``): the fixed-point semantics (:mod:`ditto_spu.semantics`) calls this, so a
        kernel's semantics is written once, next to its protocol. ``round_nearest(x, f)``
        rounds to the 2^-f grid in the caller's arithmetic."""
        ...


def round_to_destination(x, src: RingSpec, dst: RingSpec, round_nearest: Callable):
    """The semantics of a cast kernel whose error is centred within ±1.5 ulps of the
    destination (downcast, rescale down, upcast to fewer fraction bits): ``x`` rounded to
    the destination grid (the mean of the protocol's result); exact when ``dst`` has at
    least ``src``'s fraction bits."""
    return round_nearest(x, dst.frac_bits) if dst.frac_bits < src.frac_bits else x


def as_array(data: bytes, dtype, shape) -> np.ndarray:
    """Decode a received message into an array of known dtype and shape."""
    return np.frombuffer(data, dtype=dtype).reshape(shape)


CastFn = Callable[[PartyContext, AShare, RingSpec], AShare]
