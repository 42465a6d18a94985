"""Rescale within one ring: FXPl[f] -> FXPl[g] (same field, different fraction bits).

More fraction bits (g >= f): local, each party shifts both components left by g - f.
Exact while the result fits a signed l-bit word, |x·2^g| <= 2^(l-1) - 1.

Fewer fraction bits (g < f, d = f - g): a truncation PROTOCOL. The local shift that
makes the downcast work fails here (PROTOCOLS.md §1 note: the wrap term w·2^(l-d)
survives mod 2^l), so we remove the wrap explicitly with the wrap-count protocol of
:mod:`.wrap` (the upcast's machinery, source and destination ring equal):

    x' = X + 2^(l-2) + 2^(d-1),  s0' + s1 + s2 = x' + 2^l·t  (t shared in one round)
    Y  = sum_i floor(s_i'/2^d) - 2^(l-d)·t - 2^(l-2-d) + 1   (mod 2^l)

Y - X/2^d lies in (-1.5, +1.5] ulps of FXPl[g], deterministically (no failure
probability, unlike probabilistic truncation). Only 2^(l-d)·t mod 2^l matters, i.e.
t mod 2^d, so t travels in 32-bit words when d <= 32 and 64-bit words otherwise.

Cost: one round; 6·w bits per element with w the smallest word in {8, 16, 32, 64} that
holds d bits (:func:`.wrap.word_bits_for`): 48 bits for d <= 8, 96 for d <= 16, 192 for
d <= 32, 384 for FXP64 with d > 32. One registered kernel per word width, so each states
its exact cost.
Valid range: -2^(l-2) - 2^(d-1) <= X < 2^(l-2) - 2^(d-1) (X = x·2^f), i.e. SPU's whole
safe range |x·2^f| < 2^(l-2) minus half a destination ulp.

Checked mode (tests/debugging only) opens x in one extra counted round, which REVEALS x
to all parties, and raises RangeError outside the valid range. Integer tensors are
unscaled, so for them a rescale is the identity.

Security: the up direction sends nothing; the down direction sends exactly the
wrap-count messages, which are uniform and independent of x from each receiver's view
(see :mod:`.wrap`).
"""

from __future__ import annotations

from ..rings import RingSpec
from ..shares import AShare
from .base import round_to_destination
from .rss import frac_bits_of, open_for_check, require_within, shift_left
from .wrap import exact_convert


def _truncation_bounds(bits: int, right_shift: int) -> tuple:
    """Inclusive bounds on X for which x' = X + 2^(l-2) + 2^(d-1) has msb 0."""
    half = 1 << (right_shift - 1)
    bias = 1 << (bits - 2)
    return -bias - half, bias - half - 1


class RescaleUp:
    """FXPl[f] -> FXPl[g], g >= f, same field: local shift, exact, 0 rounds, 0 bits."""

    name = "rescale_more_frac_bits"
    max_error_ulps = 0.0

    rounds = 0
    bits_per_element = 0

    def emulate(self, x, src, dst, round_nearest):
        """Semantics (for the emulator and the training model): exact."""
        return x

    def applies(self, src: RingSpec, dst: RingSpec) -> bool:
        return src.field == dst.field and dst.frac_bits >= src.frac_bits

    @staticmethod
    def _bounds(bits: int, shift: int) -> tuple:
        """Inclusive bounds on X = x·2^f for which X·2^shift fits a signed l-bit word."""
        bound = ((1 << (bits - 1)) - 1) >> shift
        return -bound, bound

    def valid_scaled_bounds(self, src: RingSpec, dst: RingSpec) -> tuple:
        """Inclusive bounds on x·2^f (fixed-point tensors) for which the result is exact."""
        return self._bounds(dst.bits, dst.frac_bits - src.frac_bits)

    def valid_range(self, src: RingSpec, dst: RingSpec) -> float:
        """Largest |x| for which x·2^g still fits a signed l-bit word."""
        low, high = self.valid_scaled_bounds(src, dst)
        return min(-low, high) * 2.0 ** -src.frac_bits

    def __call__(self, ctx, share: AShare, dst: RingSpec) -> AShare:
        if not self.applies(share.ring, dst):
            raise ValueError(f"{self.name} does not convert {share.ring} to {dst}")
        shift = frac_bits_of(dst, share.dtype) - share.frac_bits
        if ctx.checked:
            low, high = self._bounds(dst.bits, shift)
            require_within(
                ctx,
                open_for_check(ctx, share),
                low,
                high,
                kernel=self.name,
                src=share.ring,
                dst=dst,
                frac_bits=share.frac_bits,
                advice="The result would overflow the ring: use fewer destination fraction bits.",
            )
        return AShare(dst, share.shape, share.dtype, shift_left(share.components, shift))


class RescaleDown:
    """FXPl[f] -> FXPl[g], g < f, same field: wrap-count truncation, 1 round, <= 1.5 ulps."""

    rounds = 1
    max_error_ulps = 1.5

    def emulate(self, x, src, dst, round_nearest):
        """Semantics: :func:`~.base.round_to_destination` (centred error, mean = nearest)."""
        return round_to_destination(x, src, dst, round_nearest)

    def __init__(self, name: str, field: str, min_shift: int, max_shift: int, word_bits: int):
        self.name = name
        self.field = field
        self.min_shift = min_shift
        self.max_shift = max_shift
        self.bits_per_element = 6 * word_bits

    def applies(self, src: RingSpec, dst: RingSpec) -> bool:
        d = src.frac_bits - dst.frac_bits
        return src.field == dst.field == self.field and self.min_shift <= d <= self.max_shift

    def valid_scaled_bounds(self, src: RingSpec, dst: RingSpec) -> tuple:
        """Inclusive bounds on x·2^f (fixed-point tensors) for which the bound holds."""
        return _truncation_bounds(src.bits, src.frac_bits - dst.frac_bits)

    def valid_range(self, src: RingSpec, dst: RingSpec) -> float:
        """Largest |x| (real, fixed-point tensors) for which the error bound holds."""
        low, high = self.valid_scaled_bounds(src, dst)
        return min(-low, high) * 2.0 ** -src.frac_bits

    def __call__(self, ctx, share: AShare, dst: RingSpec) -> AShare:
        if not self.applies(share.ring, dst):
            raise ValueError(f"{self.name} does not convert {share.ring} to {dst}")
        d = share.frac_bits - frac_bits_of(dst, share.dtype)
        if d == 0:  # integer tensors carry no fraction bits
            return AShare(dst, share.shape, share.dtype, share.components)
        if ctx.checked:
            low, high = _truncation_bounds(share.ring.bits, d)
            require_within(
                ctx,
                open_for_check(ctx, share),
                low,
                high,
                kernel=self.name,
                src=share.ring,
                dst=dst,
                frac_bits=share.frac_bits,
                advice=(
                    f"Truncation needs |x·2^f| < 2^{share.ring.bits - 2} (SPU's safe range); "
                    "the value already overflowed its ring upstream."
                ),
            )
        components = exact_convert(ctx, share.components, dst_bits=share.ring.bits, right_shift=d)
        return AShare(dst, share.shape, share.dtype, components)


rescale_more_frac_bits = RescaleUp()
rescale_fewer_frac_bits_fxp32_w8 = RescaleDown("rescale_fewer_frac_bits_fxp32_w8", "FM32", 1, 8, word_bits=8)
rescale_fewer_frac_bits_fxp32_w16 = RescaleDown("rescale_fewer_frac_bits_fxp32_w16", "FM32", 9, 16, word_bits=16)
rescale_fewer_frac_bits_fxp32 = RescaleDown("rescale_fewer_frac_bits_fxp32", "FM32", 17, 28, word_bits=32)
rescale_fewer_frac_bits_fxp64_w8 = RescaleDown("rescale_fewer_frac_bits_fxp64_w8", "FM64", 1, 8, word_bits=8)
rescale_fewer_frac_bits_fxp64_w16 = RescaleDown("rescale_fewer_frac_bits_fxp64_w16", "FM64", 9, 16, word_bits=16)
rescale_fewer_frac_bits_fxp64 = RescaleDown("rescale_fewer_frac_bits_fxp64", "FM64", 17, 32, word_bits=32)
rescale_fewer_frac_bits_fxp64_wide = RescaleDown("rescale_fewer_frac_bits_fxp64_wide", "FM64", 33, 60, word_bits=64)
