"""Measure every registered cast kernel: error, communication, rounds and throughput.

Each kernel runs through the real path (a one-step Plan on the 3-party simulator) on N
values spread over its whole valid range, boundaries and zero included.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..kernels.casts import registered_cast_kernels
from ..plan import InputBinding, KernelStep, OutputBinding, Plan, VarInfo
from ..rings import FXP32, FXP64, RingSpec

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


def sample_elements(src: RingSpec, limit: float, n: int, rng) -> np.ndarray:
    """n signed ring integers X with |X·2^-f| < limit: both ends, ±1 ulp, 0, uniform rest."""
    top = int(np.floor(limit * 2.0**src.frac_bits))
    if top * 2.0**-src.frac_bits >= limit:  # the bound itself is exclusive
        top -= 1
    top = min(top, 2 ** (src.bits - 1) - 1)
    edges = np.array([top, -top, 0, 1, -1, top - 1, -top + 1], dtype=np.int64)
    body = rng.integers(-top, top, size=max(n - edges.size, 0), dtype=np.int64, endpoint=True)
    return np.concatenate([edges, body])[: max(n, 1)]


def _max_error_ulps(x: np.ndarray, y: np.ndarray, src: RingSpec, dst: RingSpec) -> float:
    """max |y·2^-f_dst - x·2^-f_src| in ulps of dst, computed exactly with Python ints."""
    fs, fd = src.frac_bits, dst.frac_bits
    worst = 0
    for xi, yi in zip(x.tolist(), y.tolist()):
        worst = max(worst, abs(yi * 2**fs - xi * 2**fd))
    return worst / 2**fs


def measure_kernel_on(kernel, src: RingSpec, dst: RingSpec, n: int, rng, simulator) -> CastMeasurement:
    from ..shares import reconstruct_elements, share_ring_elements

    limit = float(kernel.valid_range(src, dst))
    x = sample_elements(src, limit, n, rng)
    info_src = VarInfo(src, (x.size,), "float32")
    info_dst = VarInfo(dst, (x.size,), "float32")
    plan = Plan(
        (KernelStep("cast", "cast", "x", "y", src, dst),),
        (InputBinding("x", info_src),),
        (OutputBinding("y", info_dst),),
        {"x": info_src, "y": info_dst},
    ).validate()
    shares = share_ring_elements(x.astype(src.signed_dtype).view(src.dtype), src, "float32", rng)
    outputs, stats = simulator.run_shares(plan, [{"x": s} for s in shares])
    y = reconstruct_elements([o["y"] for o in outputs]).view(dst.signed_dtype).astype(np.int64)
    err_ulps = _max_error_ulps(x, y, src, dst)
    steps = [party[0] for party in stats.steps]
    total_bits = 8 * sum(s.bytes_sent for s in steps)
    seconds = max(s.wall_s for s in steps)
    return CastMeasurement(
        kernel=kernel.name,
        src=str(src),
        dst=str(dst),
        n=int(x.size),
        max_err_ulps=err_ulps,
        stated_max_err_ulps=float(kernel.max_error_ulps),
        bits_per_element=total_bits / x.size,
        stated_bits_per_element=float(kernel.bits_per_element),
        rounds=max(s.rounds for s in steps),
        elements_per_second=x.size / seconds if seconds > 0 else float("inf"),
        valid_range=limit,
    )


def measure_all(n: int = 100_000, seed: int = 0, pairs=None, progress=None) -> list:
    """Measure every registered kernel on every standard pair it applies to."""
    from ..mpc.simulator import Simulator

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
