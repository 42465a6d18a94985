"""ditto-spu: quantization-aware secure Transformer inference on SPU with mixed rings.

Vocabulary: :class:`~ditto_spu.rings.RingSpec` (FXP32 / FXP64), :class:`~ditto_spu.shares.AShare`
(one party's replicated share), :class:`~ditto_spu.plan.Plan` (segments and kernel steps),
:class:`~ditto_spu.mpc.runtime.PartyRuntime` (one party's executor) and
:class:`~ditto_spu.simulation.Simulator` (three parties in threads).
"""

from .errors import DittoError
from .plan import KernelStep, Plan, Segment, VarInfo
from .rings import FXP32, FXP64, RingSpec

__version__ = "0.1.0"


def __getattr__(name):
    # The compiler front end pulls in JAX and the passes: import it on first use.
    if name in ("compile", "Program"):
        from . import frontend

        return getattr(frontend, name)
    if name == "sim_jax":
        from .simulation import sim_jax

        return sim_jax
    raise AttributeError(f"module 'ditto_spu' has no attribute {name!r}")

__all__ = [
    "compile",
    "sim_jax",
    "DittoError",
    "FXP32",
    "FXP64",
    "KernelStep",
    "Plan",
    "RingSpec",
    "Segment",
    "VarInfo",
]
