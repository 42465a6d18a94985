"""The MPC runtime: how one party runs a Plan, and three parties in one process.

* :mod:`.runtime` — :class:`~.runtime.PartyRuntime`: one SPU runtime per ring over ONE
  link; runs Segment steps with SPU and kernel steps with our protocols (:mod:`ditto_spu.kernels`);
* :mod:`.simulator` — :class:`~.simulator.Simulator`: three PartyRuntimes in threads over
  in-memory links (the public face is :mod:`ditto_spu.simulation`);
* :mod:`.segments` — the one StableHLO → SPU executable compile helper and its options;
* :mod:`.stats` — per-step and per-run wall time, bytes and rounds;
* :mod:`.profile_log` — SPU's own communication figures, read from its profile log.
"""
