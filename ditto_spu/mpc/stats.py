"""Run statistics: what a plan cost, per step and per party, and in total."""

from __future__ import annotations

import dataclasses

from ..errors import DittoError


def _measured(steps) -> list:
    """``steps``, after checking each was measured: a segment run without SPU's profile has
    no byte or message counts, and a total over it would be silently low."""
    steps = list(steps)
    for s in steps:
        if s.bytes_sent is None or s.rounds is None:
            raise DittoError(
                f"step {s.name!r} ({s.kind}) has no communication counts: SPU's profiling was off "
                "(SpuOptions(profile=False)); turn it on to count bytes and rounds"
            )
    return steps


@dataclasses.dataclass
class RunStats:
    """Stats of one plan run: ``steps[rank]`` is that party's list of StepStats."""

    wall_s: float
    steps: list  # list (per rank) of list[StepStats]
    setup_bytes_sent: list = dataclasses.field(default_factory=list)
    link_setup_s: list = dataclasses.field(default_factory=list)  # per party; empty when links pre-exist

    @property
    def plan_wall_s(self) -> float:
        """Wall time of the plan itself: ``wall_s`` less the slowest party's link set-up
        (connecting a fresh brpc mesh, whose retries on a not-yet-listening peer add
        whole retry intervals that are not the plan's rounds)."""
        return self.wall_s - max(self.link_setup_s, default=0.0)

    @property
    def bytes_sent(self) -> list:
        """Bytes each party sent during the plan (SPU segments + kernels)."""
        return [sum(s.bytes_sent for s in _measured(party)) for party in self.steps]

    @property
    def kernel_rounds(self) -> int:
        """Rounds spent in kernel steps (the same for every party by construction)."""
        return max((sum(s.rounds for s in _measured(party) if s.kind != "segment") for party in self.steps), default=0)

    @property
    def segment_send_actions(self) -> int:
        """Largest number of messages one party sent inside SPU segments (bounds their rounds)."""
        return max((sum(s.rounds for s in _measured(party) if s.kind == "segment") for party in self.steps), default=0)

    @property
    def rounds(self) -> int:
        """Kernel rounds + SPU send actions: an upper bound on the communication rounds."""
        return self.kernel_rounds + self.segment_send_actions

    def by_kind(self) -> dict:
        """kind -> {'bytes_sent': [per party], 'wall_s': max over parties, 'count': n}."""
        out: dict = {}
        for rank, party in enumerate(self.steps):
            for s in _measured(party):
                entry = out.setdefault(
                    s.kind, {"bytes_sent": [0] * len(self.steps), "wall_s": 0.0, "count": 0}
                )
                entry["bytes_sent"][rank] += s.bytes_sent
                if rank == 0:
                    entry["count"] += 1
        for kind, entry in out.items():
            entry["wall_s"] = max(
                sum(s.wall_s for s in party if s.kind == kind) for party in self.steps
            )
        return out

    def step_table(self) -> list:
        """One row per step: name, kind, ring, max wall, bytes sent per party, rounds."""
        rows = []
        for i, s0 in enumerate(self.steps[0]):
            per_party = _measured(party[i] for party in self.steps)
            rows.append(
                {
                    "step": s0.name,
                    "kind": s0.kind,
                    "ring": s0.ring,
                    "wall_s": max(s.wall_s for s in per_party),
                    "bytes_sent": [s.bytes_sent for s in per_party],
                    "rounds": max(s.rounds for s in per_party),
                    "elements": s0.elements,
                }
            )
        return rows

    def summary(self) -> dict:
        return {
            "wall_s": self.wall_s,
            "bytes_sent": self.bytes_sent,
            "rounds": self.rounds,
            "kernel_rounds": self.kernel_rounds,
            "segment_send_actions": self.segment_send_actions,
            "by_kind": self.by_kind(),
        }
