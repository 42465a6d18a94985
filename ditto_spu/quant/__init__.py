"""Layer-wise static dyadic quantization: a fixed-point emulator and fraction-bit calibration.

* :func:`emulate` - ``fn`` evaluated in plaintext with the arithmetic of the rings a
  :class:`~ditto_spu.policy.Policy` gives it (rounding, truncation after products, wrap-around,
  casts, SPU's exp / division / rsqrt), differentiable (straight-through), with a per-scope
  :class:`RangeReport` of magnitudes against each ring's limit.
* :func:`calibrate` - the largest FXP32 fraction bits per layer that no calibration input
  overflows, written as per-scope overrides of a new Policy.
* :func:`check` - flags inputs that overflow a policy's rings.
"""

from ..semantics.report import KINDS, RangeReport, Record, layer_of, limit_of
from .calibrate import CalibrationError, CalibrationResult, calibrate, calibrate_detailed, check, max_frac_bits
from .emulator import (
    EmulatedFunction,
    EmulationError,
    EmulatorOptions,
    RingOverflowError,
    emulate,
    raise_on_overflow,
)

__all__ = [
    "KINDS",
    "CalibrationError",
    "CalibrationResult",
    "EmulatedFunction",
    "EmulationError",
    "EmulatorOptions",
    "RangeReport",
    "Record",
    "RingOverflowError",
    "calibrate",
    "calibrate_detailed",
    "check",
    "max_frac_bits",
    "emulate",
    "layer_of",
    "limit_of",
    "raise_on_overflow",
]
