"""Network cost model: what a measured run would take on a LAN or a WAN.

This machine has no latency shaping (no tc netem), so LAN/WAN times are modelled, not
measured::

    time = compute + max_party(bytes_sent) / bandwidth + rounds × RTT

* ``compute`` — the measured wall time of the 3-party simulation on this machine (its
  in-memory links are effectively free, so this is the compute part);
* ``bytes_sent`` — per party, exact: SPU's profiler for segments, our link counters for
  kernels; parties send in parallel over their own links, so the slowest one counts;
* ``rounds`` — kernel rounds (exact) plus party 0's SPU send actions (each ABY3 step
  sends one message to a neighbour, so messages bound rounds from above).

Settings from the Ditto paper (REFERENCE.md): LAN 5 Gbps / 0.4 ms RTT, WAN 400 Mbps /
40 ms RTT.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Network:
    name: str
    bandwidth_bps: float
    rtt_s: float

    def estimate(self, compute_s: float, bytes_sent: list, rounds: int) -> float:
        """Modelled wall time (seconds) of a run on this network."""
        transfer = 8.0 * max(bytes_sent, default=0) / self.bandwidth_bps
        return compute_s + transfer + rounds * self.rtt_s

    def describe(self) -> str:
        return f"{self.name}: {self.bandwidth_bps / 1e9:g} Gbps, {self.rtt_s * 1e3:g} ms RTT"


LAN = Network("LAN", 5e9, 0.4e-3)
WAN = Network("WAN", 400e6, 40e-3)

MODEL_FORMULA = "time = measured compute + max_party(bytes sent) / bandwidth + rounds × RTT"
