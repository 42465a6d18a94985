"""Measure every registered cast kernel: error, communication, rounds and throughput.

Each kernel runs through the real path (a one-step Plan on the 3-party simulator) on N
values spread over its whole valid range, boundaries and zero included.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .kernels.base import registered_cast_kernels
from .plan import InputBinding, KernelStep, OutputBinding, Plan, VarInfo
from .rings import FXP32, FXP64, RingSpec

#: Ring pairs the report tries; each kernel is measured on the pairs it applies to.
STANDARD_PAIRS = [
    (FXP64(18), FXP32(8)),
    (FXP64(18), FXP32(12)),
    (FXP32(8), FXP64(18)),
    (FXP32(12), FXP64(18)),
    (FXP64(18), FXP64(12)),
    (FXP64(12), FXP64(18)),
    (FXP32(12), FXP32(8)),
    (FXP32(8), FXP32(12)),
]


@dataclasses.dataclass
class CastMeasurement:
    kernel: str
    src: str
    dst: str
    n: int
    max_err_ulps: float
    stated_max_err_ulps: float
    bits_per_element: float
    stated_bits_per_element: float
    rounds: int
    elements_per_second: float
    valid_range: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def sample_values(src: RingSpec, limit: float, n: int, rng) -> np.ndarray:
    """n values in [-limit, limit] on src's grid, with both ends, ±1 ulp and 0."""
    top = np.floor(limit * 2.0**src.frac_bits) * 2.0**-src.frac_bits
    # strictly inside the valid range: the bound itself is exclusive
    if top >= limit:
        top -= src.ulp
    edges = np.array([top, -top, 0.0, src.ulp, -src.ulp, top - src.ulp, -top + src.ulp])
    body = rng.uniform(-top, top, max(n - edges.size, 0))
    values = np.concatenate([edges, body])[:n] if n >= edges.size else edges[:n]
    return np.round(values * 2.0**src.frac_bits) * 2.0**-src.frac_bits


def measure_kernel_on(kernel, src: RingSpec, dst: RingSpec, n: int, rng, simulator) -> CastMeasurement:
    limit = float(kernel.valid_range(src, dst))
    values = sample_values(src, limit, n, rng)
    info_src = VarInfo(src, (values.size,), "float32")
    info_dst = VarInfo(dst, (values.size,), "float32")
    plan = Plan(
        (KernelStep("cast", "cast", "x", "y", src, dst),),
        (InputBinding("x", info_src),),
        (OutputBinding("y", info_dst),),
        {"x": info_src, "y": info_dst},
    ).validate()
    out, stats = simulator.run(plan, {"x": values}, rng)
    err_ulps = float(np.max(np.abs(out["y"] - values)) / dst.ulp) if values.size else 0.0
    steps = [party[0] for party in stats.steps]
    total_bits = 8 * sum(s.bytes_sent for s in steps)
    seconds = max(s.wall_s for s in steps)
    return CastMeasurement(
        kernel=kernel.name,
        src=str(src),
        dst=str(dst),
        n=int(values.size),
        max_err_ulps=err_ulps,
        stated_max_err_ulps=float(kernel.max_error_ulps),
        bits_per_element=total_bits / values.size,
        stated_bits_per_element=float(kernel.bits_per_element),
        rounds=max(s.rounds for s in steps),
        elements_per_second=values.size / seconds if seconds > 0 else float("inf"),
        valid_range=limit,
    )


def measure_all(n: int = 100_000, seed: int = 0, pairs=None, progress=None) -> list:
    """Measure every registered kernel on every standard pair it applies to."""
    from .simulation import Simulator

    rng = np.random.default_rng(seed)
    simulator = Simulator()
    jobs = []
    for kernel in registered_cast_kernels():
        for src, dst in pairs or STANDARD_PAIRS:
            if kernel.applies(src, dst):
                jobs.append((kernel, src, dst))
    results = []
    for kernel, src, dst in jobs:
        results.append(measure_kernel_on(kernel, src, dst, n, rng, simulator))
        if progress is not None:
            progress()
    return results
