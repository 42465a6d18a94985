"""Measure the non-linear and linear call kernels: error, communication, rounds, throughput.

The companion of :mod:`.cast_kernels` for the kernels the compiler hands ops to
(``matmul_fxp32``, ``multiply``, ``max_reduced_ring``, ``clamp_reduced_ring``,
``exp_taylor_fxp32``, ``divide_calibrated``, ``rsqrt_calibrated``, ``sum_local``,
``threshold_select``). Each runs through the real path — a one-step Plan on the 3-party
simulator — on inputs spread over its valid range (the bound or range the policy
calibrates), at the sizes of one BERT-base layer by default (``scale`` shrinks them), and
is compared with the exact function of the encoded inputs:

* the max and the cut-off: absolute error in ulps of the ring (stated bound 3·2^(f−r):
  the reduced values are off by up to 3 units of 2^−r);
* rsqrt: relative error against 1/√x (SPU's algorithm; its own polynomial error
  dominates, no bound is stated);
* the softmax division: ulps against the exact quotient of the encoded inputs (SPU's
  Goldschmidt reciprocal, two iterations: its own error dominates, no bound is stated);
* the matmul: ulps against the exact product rounded to the ring (the truncation is
  within 1.5 ulps), the bias added exactly;
* the sum: ulps against the exact sum (0: it is exact);
* the multiply: ulps against the exact product of the encoded inputs (the truncation is
  within 1.5 ulps);
* the threshold select (one of PUMA's GeLU steps, y·[x ≥ −1.95] in FXP64): ulps against
  the exact select of the encoded inputs, over the elements outside the window of
  2^(1−r) below the threshold where the kernel's step may take either value (stated: 0,
  exact);
* the softmax exp: absolute error against the Taylor form (1 + x/32)^32 of the encoded
  input (its own semantics, the kernel's module doc states the bound: 62 ulps of 2^−14).

Bits are counted over all parties per output element; rounds are the kernel's message
depth (the largest per-party count).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..plan import InputBinding, KernelCall, OutputBinding, Plan, VarInfo
from ..rings import FXP32, FXP64, RingSpec

LOW_RING = FXP32(8)  # where the compiler puts the comparisons and the matmuls
HIGH_RING = FXP64(18)  # LayerNorm's rsqrt and sums


@dataclasses.dataclass
class KernelMeasurement:
    kernel: str
    ring: str
    shape: str  # input shape(s)
    outputs: int
    max_error: float
    error_unit: str  # "ulps" or "relative"
    stated_max_error: float | None
    bits_per_output: float
    rounds: int
    outputs_per_second: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _run(simulator, kernel: str, ring: RingSpec, inputs: dict, dtype: str, params: dict, out_shape: tuple, input_ring=None):
    """One-step plan: returns (decoded output, stats of the step per party). ``input_ring``:
    the inputs' ring when it differs from the output's ``ring``."""
    from ..shares import reconstruct, share_values

    in_ring = input_ring or ring
    infos = {name: VarInfo(in_ring, tuple(v.shape), dtype) for name, v in inputs.items()}
    infos["y"] = VarInfo(ring, tuple(out_shape), dtype)
    input_rings = (in_ring,) * len(inputs) if in_ring != ring else ()
    plan = Plan(
        (KernelCall("k", kernel, tuple(inputs), ("y",), ring, params, input_rings),),
        tuple(InputBinding(name, infos[name]) for name in inputs),
        (OutputBinding("y", infos["y"]),),
        infos,
    ).validate()
    rng = np.random.default_rng(0)
    per_input = {name: share_values(v, in_ring, dtype, rng) for name, v in inputs.items()}
    shares = [{name: per_input[name][r] for name in inputs} for r in range(3)]
    outputs, stats = simulator.run_shares(plan, shares)
    return reconstruct([o["y"] for o in outputs]), [party[0] for party in stats.steps]


def _measurement(kernel, ring, shapes, y, steps, error, unit, stated) -> KernelMeasurement:
    seconds = max(s.wall_s for s in steps)
    outputs = int(np.size(y))
    return KernelMeasurement(
        kernel=kernel,
        ring=str(ring),
        shape=" × ".join(str(tuple(s)) for s in shapes),
        outputs=outputs,
        max_error=float(error),
        error_unit=unit,
        stated_max_error=stated,
        bits_per_output=8 * sum(s.bytes_sent for s in steps) / outputs,
        rounds=max(s.rounds for s in steps),
        outputs_per_second=outputs / seconds if seconds > 0 else float("inf"),
    )


def _quantized(x, ring: RingSpec):
    """The values the ring holds of ``x`` (its own encoding, decoded)."""
    return ring.decode(ring.encode(np.asarray(x, np.float64)))


def measure_max(simulator, rng, *, rows: int, keys: int = 128, bound: float = 2000.0, ring: RingSpec = LOW_RING):
    from ..kernels.reduce_max import DEFAULT_RESOLUTION_BITS, MAX_NAME

    x = rng.uniform(-bound, bound, (rows, keys))
    x[0, 0], x[-1, -1] = bound, -bound  # the ends of the calibrated range
    y, steps = _run(simulator, MAX_NAME, ring, {"x": x}, "float16", {"bound": bound, "axis": 1}, (rows,))
    error = np.abs(y - _quantized(x, ring).max(axis=1)).max() / ring.ulp
    stated = 3.0 * 2.0 ** (ring.frac_bits - DEFAULT_RESOLUTION_BITS)
    return _measurement(MAX_NAME, ring, [x.shape], y, steps, error, "ulps", stated)


def measure_clamp(simulator, rng, *, n: int, constant: float = -14.0, bound: float = 2000.0, ring: RingSpec = LOW_RING):
    from ..kernels.reduce_max import CLAMP_NAME, DEFAULT_RESOLUTION_BITS

    x = np.concatenate([rng.uniform(constant - 2, constant + 2, n // 2), rng.uniform(-bound / 2, bound / 2, n - n // 2)])
    params = {"bound": bound, "constant": constant}
    y, steps = _run(simulator, CLAMP_NAME, ring, {"x": x}, "float16", params, x.shape)
    error = np.abs(y - np.maximum(_quantized(x, ring), constant)).max() / ring.ulp
    stated = 3.0 * 2.0 ** (ring.frac_bits - DEFAULT_RESOLUTION_BITS)
    return _measurement(CLAMP_NAME, ring, [x.shape], y, steps, error, "ulps", stated)


def measure_rsqrt(simulator, rng, *, n: int, low: float = 2.0**-12, high: float = 2.0**16, ring: RingSpec = HIGH_RING):
    from ..kernels.rsqrt import NAME

    x = np.exp(rng.uniform(np.log(low), np.log(high), n))
    x[:2] = low, high
    y, steps = _run(simulator, NAME, ring, {"x": x}, "float32", {"low": low, "high": high}, x.shape)
    exact = 1.0 / np.sqrt(_quantized(x, ring))
    error = np.abs(y / exact - 1.0).max()
    return _measurement(NAME, ring, [x.shape], y, steps, error, "relative", None)


def measure_matmul(simulator, rng, *, m: int, k: int, n: int, ring: RingSpec = LOW_RING):
    from ..kernels.matmul import NAME

    x = rng.normal(0, 1, (m, k))
    w = rng.normal(0, 0.05, (k, n))
    b = rng.normal(0, 1, (n,))
    params = {"lhs_batch": [], "rhs_batch": [], "lhs_contract": [1], "rhs_contract": [0], "bias_dims": [1]}
    y, steps = _run(simulator, NAME, ring, {"x": x, "w": w, "b": b}, "float16", params, (m, n))
    scale = 2.0**ring.frac_bits
    xi, wi = (np.round(v * scale).astype(np.int64) for v in (x, w))
    exact = (xi @ wi) / scale**2 + _quantized(b, ring)  # integer products: exact
    error = np.abs(y - exact).max() / ring.ulp
    return _measurement(NAME, ring, [x.shape, w.shape, b.shape], y, steps, error, "ulps", 1.5)


def measure_sum(simulator, rng, *, rows: int, cols: int = 768, ring: RingSpec = HIGH_RING):
    from ..kernels.local_sum import NAME

    x = rng.normal(0, 3, (rows, cols))
    y, steps = _run(simulator, NAME, ring, {"x": x}, "float32", {"axes": [1]}, (rows,))
    error = np.abs(y - _quantized(x, ring).sum(axis=1)).max() / ring.ulp
    return _measurement(NAME, ring, [x.shape], y, steps, error, "ulps", 0.0)


def measure_multiply(simulator, rng, *, shape: tuple, ring: RingSpec, square: bool):
    """x·x (quad GeLU's square, FXP32) or x·y (LayerNorm's products, FXP64)."""
    from ..kernels.multiply import NAME

    x = rng.normal(0, 2, shape)
    inputs = {"x": x, "y": x} if square else {"x": x, "y": rng.normal(0, 2, shape)}
    dtype = "float16" if ring.field == "FM32" else "float32"
    y, steps = _run(simulator, NAME, ring, inputs, dtype, {}, shape)
    scale = 2.0**ring.frac_bits
    xi, yi = (np.round(v * scale) for v in inputs.values())
    error = np.abs(y - xi * yi / scale**2).max() / ring.ulp
    return _measurement(NAME, ring, [x.shape, x.shape], y, steps, error, "ulps", 1.5)


def measure_exp(simulator, rng, *, n: int, ring: RingSpec = LOW_RING, out_ring: RingSpec = HIGH_RING):
    """The softmax's exp on x − max after the cut-off: x in [−14, 0]."""
    from ..kernels.exp_taylor import FRAC_BITS, ITERS, NAME

    x = rng.uniform(-14.0, 0.0, n)
    x[:2] = -14.0, 0.0
    params = {"frac_bits": out_ring.frac_bits}
    y, steps = _run(simulator, NAME, out_ring, {"x": x}, "float32", params, x.shape, input_ring=ring)
    taylor = (1.0 + _quantized(x, ring) / 2**ITERS) ** (2**ITERS)
    error = np.abs(y - taylor).max() * 2.0**FRAC_BITS
    return _measurement(NAME, ring, [x.shape], y, steps, error, "ulps", 2.0 * (2**ITERS - 1))


def measure_divide(simulator, rng, *, rows: int, keys: int = 128, ring: RingSpec = HIGH_RING):
    """The softmax's division: exp(x − max) over its row sum, the sum's range the one
    the compiler derives for ``keys`` entries."""
    from ..kernels.divide import NAME, softmax_denominator_range
    from ..kernels.reduce_max import max_slack

    scores = rng.normal(0.0, 4.0, (rows, keys))
    e = np.exp(np.maximum(scores - scores.max(axis=1, keepdims=True), -14.0))
    e[0] = 1.0  # the widest row: every entry at the max (sum = keys)
    total = e.sum(axis=1)
    low, high = softmax_denominator_range(keys, max_slack({}))
    params = {"low": low, "high": high, "broadcast_dims": [0]}
    y, steps = _run(simulator, NAME, ring, {"a": e, "b": total}, "float32", params, e.shape)
    exact = _quantized(e, ring) / _quantized(total, ring)[:, None]
    error = np.abs(y - exact).max() / ring.ulp
    return _measurement(NAME, ring, [e.shape, total.shape], y, steps, error, "ulps", None)


def measure_threshold_select(simulator, rng, *, shape: tuple, constant: float = -1.95, bound: float = 2000.0,
                             ring: RingSpec = HIGH_RING):
    """One of PUMA's GeLU steps, y·[x ≥ c], at the GeLU's shape: x spread over [−8, 8]
    (a quarter of it within 1/4 of c), y its piece's size."""
    from ..kernels.threshold_select import DEFAULT_RESOLUTION_BITS, NAME, encode_threshold, window

    x = rng.uniform(-8.0, 8.0, shape)
    near = rng.random(shape) < 0.25
    x[near] = constant + rng.uniform(-0.25, 0.25, int(near.sum()))
    y_in = rng.normal(0.0, 2.0, shape)
    params = {"constant": constant, "strict": False, "below": False, "bound": bound,
              "resolution_bits": DEFAULT_RESOLUTION_BITS}
    y, steps = _run(simulator, NAME, ring, {"x": x, "y": y_in}, "float32", params, shape)
    xq = _quantized(x, ring)
    t = encode_threshold(constant, ring) * ring.ulp
    outside = (xq < t - window(params)) | (xq >= t)
    exact = np.where(xq >= t, _quantized(y_in, ring), 0.0)
    error = np.abs(y - exact)[outside].max() / ring.ulp
    return _measurement(NAME, ring, [x.shape, y_in.shape], y, steps, error, "ulps", 0.0)


#: One measurement per call kernel, as f(simulator, rng, rows) with rows = 128 × scale.
MEASUREMENTS = (
    lambda sim, rng, rows: measure_matmul(sim, rng, m=rows, k=768, n=768),
    lambda sim, rng, rows: measure_multiply(sim, rng, shape=(rows, 3072), ring=LOW_RING, square=True),
    lambda sim, rng, rows: measure_multiply(sim, rng, shape=(rows, 768), ring=HIGH_RING, square=False),
    lambda sim, rng, rows: measure_max(sim, rng, rows=12 * rows),
    lambda sim, rng, rows: measure_clamp(sim, rng, n=12 * rows * 128),
    lambda sim, rng, rows: measure_exp(sim, rng, n=12 * rows * 128),
    lambda sim, rng, rows: measure_divide(sim, rng, rows=12 * rows),
    lambda sim, rng, rows: measure_rsqrt(sim, rng, n=rows),
    lambda sim, rng, rows: measure_sum(sim, rng, rows=rows),
    lambda sim, rng, rows: measure_threshold_select(sim, rng, shape=(rows, 3072)),
)
JOBS = len(MEASUREMENTS)


def measure_all(scale: float = 1.0, seed: int = 0, progress=None) -> list:
    """Every call kernel at one BERT-base layer's sizes times ``scale`` (rows only)."""
    from ..mpc.simulator import Simulator

    rng = np.random.default_rng(seed)
    simulator = Simulator()
    rows = max(8, int(round(128 * scale)))
    results = []
    for measure in MEASUREMENTS:
        results.append(measure(simulator, rng, rows))
        if progress is not None:
            progress()
    return results
