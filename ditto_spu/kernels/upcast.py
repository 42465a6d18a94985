"""Upcast FXP32[f'] -> FXP64[f] (PROTOCOLS.md §2): one round, exact.

Variant: the 1-round 3-party OT of PROTOCOLS.md §2 step 4 (both receivers know the
choice bit), implemented in :mod:`.wrap`. With X = x·2^f' in Z_2^32 and B = 2^30:

    x' = X + B in [0, 2^31)       (public bias added to s0 by P0 and P2)
    s0' + s1 + s2 = x' + 2^32·t   (t = c + (m_a OR m_b), shared by the OT)
    Y = (lift(s0') + lift(s1) + lift(s2) - 2^32·t - B) · 2^(f-f')   in Z_2^64

Each party lifts its two components by zero-extension, subtracts 2^32 times its shares
of t, P0 and P2 subtract B from their copy of s0, and all shift left by f - f'.

Cost: one round; P0 sends 4 words, P1 and P2 one word each. Only 2^32·t mod 2^64 is
used, so t is shared modulo 2^32 and the words are 32-bit: 6·32 = 192 bits per element
over all parties (PROTOCOLS.md's 64-bit words give 384; the output is identical).

Valid range: -2^30 <= X < 2^30, i.e. |x| < 2^(30-f'); then the result is exact. Outside
it the result is garbage, so checked mode (tests/debugging only) opens x first (one
extra round, 32 bits per element per party, counted on the same link, and it REVEALS x
to all parties) and raises RangeError.

Security: see :mod:`.wrap`: P0 receives nothing; P1 and P2 each receive three words that
are uniform and independent of x given their own shares.

A second kernel covers f < f' (the destination has fewer fraction bits): the same
protocol with the components shifted right by d = f' - f before lifting; t is then
needed modulo 2^(32+d), so the words are 64-bit (384 bits per element) and the result
is within 1.5 ulps of FXP64[f].
"""

from __future__ import annotations

from typing import Callable

from ..rings import RingSpec
from ..shares import AShare
from .base import round_to_destination
from .rss import frac_bits_of, open_for_check, require_within
from .wrap import exact_convert

SRC_BITS = 32
DST_BITS = 64
MAX_LEFT_SHIFT = 32  # |X| < 2^30 times 2^32 stays inside SPU's FM64 safe range 2^62


def _wrap_input_bounds(right_shift: int) -> tuple:
    """Inclusive bounds on X for which x' = X + 2^30 + h has msb 0 (h the rounding half)."""
    half = (1 << (right_shift - 1)) if right_shift > 0 else 0
    bias = 1 << (SRC_BITS - 2)
    return -bias - half, bias - half - 1


def _check_input_range(kernel, ctx, share: AShare, dst: RingSpec, right_shift: int) -> None:
    low, high = _wrap_input_bounds(right_shift)
    require_within(
        ctx,
        open_for_check(ctx, share),
        low,
        high,
        kernel=kernel.name,
        src=share.ring,
        dst=dst,
        frac_bits=share.frac_bits,
        advice=(
            "The upcast is exact only for |x·2^f'| < 2^30 of the FXP32 source; make the "
            "value smaller before it reaches FXP32 or use fewer FXP32 fraction bits for it."
        ),
    )


class _UpcastBase:
    # provided by each concrete upcast kernel (declared here for the type checker)
    name: str
    applies: Callable[[RingSpec, RingSpec], bool]
    rounds = 1

    def emulate(self, x, src, dst, round_nearest):
        """Semantics: :func:`~.base.round_to_destination` (centred error, mean = nearest)."""
        return round_to_destination(x, src, dst, round_nearest)

    def valid_scaled_bounds(self, src: RingSpec, dst: RingSpec) -> tuple:
        """Inclusive bounds on x·2^f' (fixed-point tensors) for which the bound holds."""
        return _wrap_input_bounds(max(src.frac_bits - dst.frac_bits, 0))

    def valid_range(self, src: RingSpec, dst: RingSpec) -> float:
        """Largest |x| (real, fixed-point tensors) for which the stated error bound holds."""
        low, high = self.valid_scaled_bounds(src, dst)
        return min(-low, high) * 2.0 ** -src.frac_bits

    def __call__(self, ctx, share: AShare, dst: RingSpec) -> AShare:
        if not self.applies(share.ring, dst):
            raise ValueError(f"{self.name} does not convert {share.ring} to {dst}")
        shift = frac_bits_of(dst, share.dtype) - share.frac_bits
        right, left = max(-shift, 0), max(shift, 0)
        if ctx.checked:
            _check_input_range(self, ctx, share, dst, right)
        components = exact_convert(
            ctx, share.components, dst_bits=DST_BITS, right_shift=right, left_shift=left
        )
        return AShare(dst, share.shape, share.dtype, components)


class UpcastFXP32ToFXP64(_UpcastBase):
    """FXP32[f'] -> FXP64[f], 0 <= f - f' <= 32: exact, 1 round, 192 bits per element."""

    name = "upcast_fxp32_to_fxp64"
    max_error_ulps = 0.0
    bits_per_element = 6 * 32

    def applies(self, src: RingSpec, dst: RingSpec) -> bool:
        return (
            src.field == "FM32"
            and dst.field == "FM64"
            and 0 <= dst.frac_bits - src.frac_bits <= MAX_LEFT_SHIFT
        )


class UpcastFXP32ToFXP64FewerFracBits(_UpcastBase):
    """FXP32[f'] -> FXP64[f], f < f': 1 round, 384 bits per element, <= 1.5 ulps of FXP64[f]."""

    name = "upcast_fxp32_to_fxp64_fewer_frac_bits"
    max_error_ulps = 1.5
    bits_per_element = 6 * 64

    def applies(self, src: RingSpec, dst: RingSpec) -> bool:
        return src.field == "FM32" and dst.field == "FM64" and dst.frac_bits < src.frac_bits


upcast_fxp32_to_fxp64 = UpcastFXP32ToFXP64()
upcast_fxp32_to_fxp64_fewer_frac_bits = UpcastFXP32ToFXP64FewerFracBits()
