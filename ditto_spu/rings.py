"""Rings: which fixed-point ring a value lives in.

A :class:`RingSpec` names an SPU field (FM32 or FM64) and a number of fraction bits.
A real ``v`` is stored as ``round(v * 2**frac_bits) mod 2**bits``. Values must stay in
SPU's safe range ``|v * 2**frac_bits| < 2**(bits - 2)``; anything larger is an error to
detect, never a silent wrap.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from .errors import RangeError, RingError

_FIELD_BITS = {"FM32": 32, "FM64": 64}
_NAME_TO_FIELD = {"FXP32": "FM32", "FXP64": "FM64"}
_FIELD_TO_NAME = {v: k for k, v in _NAME_TO_FIELD.items()}
_SPEC_RE = re.compile(r"^\s*(FXP32|FXP64)\s*\[\s*f\s*=\s*(\d+)\s*\]\s*$")


@dataclasses.dataclass(frozen=True, order=True)
class RingSpec:
    """A fixed-point ring: SPU field ``FM32``/``FM64`` and ``frac_bits`` fraction bits.

    ``str(RingSpec("FM64", 18)) == "FXP64[f=18]"``; :meth:`parse` inverts it.
    Hashable and ordered, so it can key runtimes and kernels.
    """

    field: str
    frac_bits: int

    def __post_init__(self):
        if self.field not in _FIELD_BITS:
            raise RingError(
                f"unknown field {self.field!r}: ditto-spu supports FM32 (FXP32) and FM64 (FXP64)"
            )
        if not isinstance(self.frac_bits, (int, np.integer)) or isinstance(self.frac_bits, bool):
            raise RingError(f"frac_bits must be an int, got {self.frac_bits!r}")
        object.__setattr__(self, "frac_bits", int(self.frac_bits))
        if not 0 <= self.frac_bits <= self.bits - 4:
            raise RingError(
                f"{self.field} with {self.frac_bits} fraction bits leaves no integer part: "
                f"use 0..{self.bits - 4} fraction bits"
            )

    # ---- descriptive properties -------------------------------------------------
    @property
    def bits(self) -> int:
        """Ring width l: elements live in Z_{2^l}."""
        return _FIELD_BITS[self.field]

    @property
    def name(self) -> str:
        return _FIELD_TO_NAME[self.field]

    @property
    def dtype(self) -> np.dtype:
        """Unsigned numpy dtype of one share component."""
        return np.dtype(np.uint32) if self.bits == 32 else np.dtype(np.uint64)

    @property
    def signed_dtype(self) -> np.dtype:
        return np.dtype(np.int32) if self.bits == 32 else np.dtype(np.int64)

    @property
    def ulp(self) -> float:
        """Value of one unit in the last place: 2^-frac_bits."""
        return 2.0 ** -self.frac_bits

    @property
    def max_abs(self) -> float:
        """Largest magnitude SPU's fixed point handles safely: 2^(l-2-f)."""
        return 2.0 ** (self.bits - 2 - self.frac_bits)

    def with_frac_bits(self, frac_bits: int) -> "RingSpec":
        return RingSpec(self.field, frac_bits)

    def __str__(self) -> str:
        return f"{self.name}[f={self.frac_bits}]"

    @classmethod
    def parse(cls, text: str) -> "RingSpec":
        """Parse ``"FXP32[f=10]"`` / ``"FXP64[f=18]"``."""
        if isinstance(text, RingSpec):
            return text
        m = _SPEC_RE.match(str(text))
        if not m:
            raise RingError(
                f"cannot parse ring {text!r}: expected e.g. 'FXP32[f=10]' or 'FXP64[f=18]'"
            )
        return cls(_NAME_TO_FIELD[m.group(1)], int(m.group(2)))

    # ---- SPU glue ----------------------------------------------------------------
    def spu_field(self):
        from spu import libspu

        return getattr(libspu.FieldType, self.field)

    # ---- plaintext fixed-point encoding (used by tests, the emulator, checked mode) --
    def encode(self, values, *, check: bool = True) -> np.ndarray:
        """Real values -> ring elements (unsigned), rounding to nearest 2^-f.

        With ``check`` a value outside the safe range raises :class:`RangeError`.
        """
        v = np.asarray(values, dtype=np.float64)
        if check:
            self.check_range(v, what="encode")
        scaled = np.rint(v * 2.0**self.frac_bits)
        return scaled.astype(np.int64).astype(self.signed_dtype).view(self.dtype)

    def decode(self, elements, *, integer: bool = False) -> np.ndarray:
        """Ring elements (unsigned) -> reals (or integers with ``integer``)."""
        signed = np.asarray(elements).astype(self.dtype).view(self.signed_dtype)
        if integer:
            return signed.astype(np.int64)
        return signed.astype(np.float64) / 2.0**self.frac_bits

    def check_range(self, values, *, what: str = "value", limit_bits: int | None = None):
        """Raise :class:`RangeError` if any |v·2^f| >= 2^limit_bits (default l-2)."""
        limit_bits = self.bits - 2 if limit_bits is None else limit_bits
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return
        if not np.all(np.isfinite(v)):
            raise RangeError(f"{what}: non-finite value cannot be stored in {self}")
        worst = float(np.max(np.abs(v)))
        if worst * 2.0**self.frac_bits >= 2.0**limit_bits:
            raise RangeError(
                f"{what}: |value| up to {worst:.6g} does not fit {self} "
                f"(limit {2.0 ** (limit_bits - self.frac_bits):.6g}); use fewer fraction "
                f"bits or a wider ring"
            )


def FXP32(frac_bits: int = 8) -> RingSpec:
    """FM32 ring with ``frac_bits`` fraction bits (SPU's FM32 default is 8)."""
    return RingSpec("FM32", frac_bits)


def FXP64(frac_bits: int = 18) -> RingSpec:
    """FM64 ring with ``frac_bits`` fraction bits (SPU's FM64 default is 18)."""
    return RingSpec("FM64", frac_bits)
