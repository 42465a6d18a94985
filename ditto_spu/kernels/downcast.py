"""Downcast FXP64[f] -> FXP32[f'] (PROTOCOLS.md §1): local, zero communication.

Let d = f - f' (<= 32; integers have f = f' = 0). Each party maps each of its two
uint64 components s to s' = floor(s / 2^d) mod 2^32 (a logical shift, keep the low 32
bits). Over the integers s0 + s1 + s2 = X + w·2^64 (X the ring element of x·2^f, w in
{0,1,2}); floor((X + w·2^64)/2^d) = floor(X/2^d) + w·2^(64-d) and 2^(64-d) = 0 mod 2^32
for d <= 32, so the wrap (and the sign of a negative x) drops out:

    sum_i s_i' = floor(X / 2^d) - delta  (mod 2^32),   delta in {0, 1, 2}.

Public constants centre the error: h = 2^(d-1) added to s0 before the shift turns the
floor into a rounding, and 1 added after it offsets delta. Result: the destination
element R satisfies R - X/2^d in (-1.5, +1.5] ulps of FXP32[f'] (PROTOCOLS.md adds only
the 1 and gets (-2, +1]; the half-ulp costs nothing). d = 0 is exact (no constants).
If f < f' (more fraction bits in the 32-bit ring) the low 32 bits of each component are
shifted left by f' - f: exact. A public constant added to s0 is added by both holders
of s0 (P0 column 0, P2 column 1).

Valid range: the result must fit a signed 32-bit word, |X / 2^d| <= 2^31 - 2
(2^31 - 1 when exact). Checked mode opens x (one extra round, reveals x: tests and
debugging only) and raises RangeError outside it.

Security: each party applies a public deterministic map to components it already holds
and sends nothing. Components of a fresh sharing are uniform, so the new ones are too.
"""

from __future__ import annotations

import numpy as np

from ..rings import RingSpec
from ..shares import AShare
from .base import round_to_destination
from .rss import add_public_to_s0, frac_bits_of, open_for_check, require_within, shift_left, shift_right

MAX_RIGHT_SHIFT = 32


class DowncastFXP64ToFXP32:
    """FXP64[f] -> FXP32[f'] for f - f' <= 32: local, 0 rounds, 0 bits, <= 1.5 ulps."""

    name = "downcast_fxp64_to_fxp32"
    max_error_ulps = 1.5

    rounds = 0
    bits_per_element = 0

    def emulate(self, x, src, dst, round_nearest):
        """Semantics: :func:`~.base.round_to_destination` (centred error, mean = nearest)."""
        return round_to_destination(x, src, dst, round_nearest)

    def applies(self, src: RingSpec, dst: RingSpec) -> bool:
        return (
            src.field == "FM64"
            and dst.field == "FM32"
            and src.frac_bits - dst.frac_bits <= MAX_RIGHT_SHIFT
        )

    @staticmethod
    def _bounds(shift: int) -> tuple:
        """Inclusive bounds on X = x·2^f for which the result fits a signed 32-bit word.

        |X / 2^d| <= 2^31 - 2 when rounding (d > 0), <= 2^31 - 1 when exact (d <= 0),
        compared in source units without rounding and clipped to the int64 range.
        """
        limit = (1 << 31) - 2 if shift > 0 else (1 << 31) - 1
        bound = min(limit << shift if shift >= 0 else limit >> -shift, (1 << 63) - 1)
        return -bound, bound

    def valid_scaled_bounds(self, src: RingSpec, dst: RingSpec) -> tuple:
        """Inclusive bounds on x·2^f_src (fixed-point tensors) for which the bound holds."""
        return self._bounds(src.frac_bits - dst.frac_bits)

    def valid_range(self, src: RingSpec, dst: RingSpec) -> float:
        """Largest |x| (real, fixed-point tensors) for which the error bound holds."""
        low, high = self.valid_scaled_bounds(src, dst)
        return min(-low, high) * 2.0 ** -src.frac_bits

    def __call__(self, ctx, share: AShare, dst: RingSpec) -> AShare:
        if not self.applies(share.ring, dst):
            raise ValueError(f"{self.name} does not convert {share.ring} to {dst}")
        src_f = share.frac_bits
        dst_f = frac_bits_of(dst, share.dtype)
        d = src_f - dst_f
        if ctx.checked:
            self._check(ctx, share, dst, d)

        if d > 0:
            rounded = add_public_to_s0(share.components, ctx.rank, 1 << (d - 1))
            low = shift_right(rounded, d).astype(np.uint32)
            low = add_public_to_s0(low, ctx.rank, 1)
        else:
            low = shift_left(share.components.astype(np.uint32), -d)
        return AShare(dst, share.shape, share.dtype, low)

    def _check(self, ctx, share: AShare, dst: RingSpec, d: int) -> None:
        low, high = self._bounds(d)
        scaled = open_for_check(ctx, share)
        require_within(
            ctx,
            scaled,
            low,
            high,
            kernel=self.name,
            src=share.ring,
            dst=dst,
            frac_bits=share.frac_bits,
            advice=(
                f"The result would not fit a signed 32-bit word with {frac_bits_of(dst, share.dtype)} "
                "fraction bits: use fewer FXP32 fraction bits for this value, keep it in FXP64, "
                "or clip it before the cast."
            ),
        )


downcast_fxp64_to_fxp32 = DowncastFXP64ToFXP32()
