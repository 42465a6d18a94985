"""A small hand-built mixed-ring plan: FXP32 matmul -> upcast -> FXP64 exp -> downcast
-> FXP32 matmul. It exercises every piece of the runtime (two SPU rings on one link,
both cast kernels) without the compiler, and has an exact plaintext reference."""

from __future__ import annotations

import numpy as np

from .mpc.segments import segment_from_jax
from .plan import InputBinding, KernelStep, OutputBinding, Plan, VarInfo
from .rings import FXP32, FXP64, RingSpec

_LOW, _HIGH = FXP32(10), FXP64(18)


def build_mixed_ring_plan(
    rows: int = 32,
    dim: int = 64,
    low: RingSpec = _LOW,
    high: RingSpec = _HIGH,
) -> Plan:
    import jax.numpy as jnp

    f16 = np.zeros((rows, dim), np.float16)
    w16 = np.zeros((dim, dim), np.float16)
    f32 = np.zeros((rows, dim), np.float32)
    seg1 = segment_from_jax("matmul1", low, lambda x, w: x @ w, (f16, w16), ["x", "w1"], ["h"])
    seg2 = segment_from_jax("exp", high, lambda h: jnp.exp(h), (f32,), ["h64"], ["e64"])
    seg3 = segment_from_jax("matmul2", low, lambda e, w: e @ w, (f16, w16), ["e", "w2"], ["y"])
    variables = {
        "x": VarInfo(low, (rows, dim), "float16"),
        "w1": VarInfo(low, (dim, dim), "float16"),
        "w2": VarInfo(low, (dim, dim), "float16"),
        "h": VarInfo(low, (rows, dim), "float16"),
        "h64": VarInfo(high, (rows, dim), "float32"),
        "e64": VarInfo(high, (rows, dim), "float32"),
        "e": VarInfo(low, (rows, dim), "float16"),
        "y": VarInfo(low, (rows, dim), "float16"),
    }
    steps = [
        seg1,
        KernelStep("upcast_h", "cast", "h", "h64", low, high),
        seg2,
        KernelStep("downcast_e", "cast", "e64", "e", high, low),
        seg3,
    ]
    inputs = [
        InputBinding("x", variables["x"], "client"),
        InputBinding("w1", variables["w1"], "model_owner"),
        InputBinding("w2", variables["w2"], "model_owner"),
    ]
    outputs = [OutputBinding("y", variables["y"], "client")]
    return Plan(tuple(steps), tuple(inputs), tuple(outputs), variables).validate()


def demo_inputs(rows: int = 32, dim: int = 64, seed: int = 0) -> dict:
    """Inputs whose intermediate values stay in range: |h| < ~2, exp(h) < ~8."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (rows, dim))
    w1 = rng.normal(0, 0.6 / np.sqrt(dim), (dim, dim))
    w2 = rng.normal(0, 1.0 / np.sqrt(dim), (dim, dim))
    return {"x": x, "w1": w1, "w2": w2}


def plaintext_reference(inputs: dict) -> np.ndarray:
    h = inputs["x"] @ inputs["w1"]
    return np.exp(h) @ inputs["w2"]
