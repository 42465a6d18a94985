"""Fixed-point arithmetic of SPU's rings, in plaintext float64 JAX (the emulator's kernels).

A ring value is held as a float64 array of reals on the grid 2^-f of its
:class:`~ditto_spu.rings.RingSpec`. float64 is needed, float32 is not enough: an FXP64[f=18]
value of magnitude 10^3 has 28 significant bits and a product before truncation 2f = 36
fraction bits; float64's 53-bit mantissa holds every FXP32 value and product and every
FXP64 value below 2^35 exactly, so additions, products and dot products of grid values are
exact and the only error left is the truncation we apply on purpose.

Every function is differentiable with a straight-through estimator: the forward value is the
fixed-point result, the gradient is that of the exact operation (:func:`ste`).

What SPU 0.9.5 does, and what is modelled here (verified against the 3-party simulation,
see tests/quant/test_emulator_secure.py):

* encoding: secret inputs round to nearest (``RingSpec.encode``); public constants truncate
  toward zero (SPU's constant encoding: 0.3 in FXP32[f=8] becomes 76/256, not 77/256);
* products (``mul``, ``dot_general``): exact in the ring at scale 2^(2f), wrapped modulo
  2^l, then truncated by f. SPU's ABY3 truncation is probabilistic (result within ±1 ulp,
  unbiased); we model it as round-to-nearest (``truncation="nearest"``) or floor;
* exp (Taylor): ``r = trunc_n(x) + 1`` then n squarings, each truncated;
* division / reciprocal: Goldschmidt exactly as SPU's ``div_goldschmidt`` (normalisation by
  the highest set bit, initial guess 2.9142 − 2c, ``iters`` refinements, each product
  truncated); division by a public constant is ``x · trunc0(1/c)``;
* rsqrt: SPU's ``f_rsqrt``: normalised u ∈ [0.25, 0.5), degree-4 polynomial, power-of-two
  compensation with the √2 constant truncated to an integer (no Newton step); sqrt: one
  Goldschmidt step on top of it.

Not modelled (the emulator computes them exactly and rounds): tanh (SPU 0.9.5's differs from
the exact one by up to ~5e-3), log, erf, logistic and other transcendentals.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


@jax.jit
def max_and_count(x, limit):
    """(max |x| as float32, number of |x| >= limit as int32): one record of the report."""
    a = jnp.abs(sg(x))
    return jnp.max(a).astype(jnp.float32), jnp.sum(a >= limit).astype(jnp.int32)


def ste(emulated, exact):
    """``emulated`` in the forward pass, the gradient of ``exact`` in the backward pass.

    Written as ``sg(emulated) + (exact − sg(exact))`` (not ``exact + sg(emulated − exact)``)
    so the forward value is bit-for-bit ``emulated``; non-finite ``exact`` entries get no
    gradient instead of turning the value into NaN.
    """
    exact = jnp.where(jnp.isfinite(exact), exact, 0.0)
    return sg(emulated) + (exact - sg(exact))


@functools.partial(jax.jit, static_argnames=("frac_bits", "mode"))
def round_to(x, frac_bits: int, mode: str = "nearest"):
    """x on the grid 2^-frac_bits: ``nearest`` (SPU's probabilistic truncation, mean model),
    ``floor`` (deterministic truncation), ``zero`` (toward zero: SPU's constant encoding)."""
    s = 2.0**frac_bits
    v = sg(x) * s
    if mode == "nearest":
        r = jnp.round(v)
    elif mode == "floor":
        r = jnp.floor(v)
    elif mode == "zero":
        r = jnp.trunc(v)
    else:
        raise ValueError(f"unknown rounding {mode!r}: nearest, floor or zero")
    return ste(r / s, x)


@functools.partial(jax.jit, static_argnames=("bits", "scale_bits"))
def wrap(x, bits: int, scale_bits: int):
    """x·2^scale_bits reduced to the signed range [−2^(bits−1), 2^(bits−1)) and scaled back:
    what an l-bit ring holds of a value that does not fit."""
    s = 2.0**scale_bits
    half = 2.0 ** (bits - 1)
    X = sg(x) * s
    w = jnp.mod(X + half, 2.0 * half) - half
    return ste(jnp.where(jnp.abs(X) < half, sg(x), w / s), x)


@functools.partial(jax.jit, static_argnames=("frac_bits",))
def highest_bit_exponent(x_abs, frac_bits: int):
    """p with 2^p <= x·2^f < 2^(p+1) for the ring element of x_abs > 0 (p >= 0)."""
    X = jnp.maximum(jnp.floor(sg(x_abs) * 2.0**frac_bits + 0.5), 1.0)
    p = jnp.floor(jnp.log2(X))
    # log2 of an integer near a power of two can round the wrong way: fix it up exactly.
    p = jnp.where(2.0**p > X, p - 1, p)
    p = jnp.where(2.0 ** (p + 1) <= X, p + 1, p)
    return sg(p)


class Fxp:
    """Arithmetic of one ring (``frac_bits``; ``trunc`` is the truncation model)."""

    def __init__(self, frac_bits: int, trunc: str = "nearest"):
        self.f = frac_bits
        self.trunc = trunc

    def q(self, x):
        return round_to(x, self.f, self.trunc)

    def const(self, c):
        """A public constant as SPU encodes it (truncation toward zero)."""
        return float(math.trunc(c * 2.0**self.f)) / 2.0**self.f

    def mul(self, a, b):
        return self.q(a * b)

    # -- exp ---------------------------------------------------------------------------------
    def exp_taylor(self, x, iters: int):
        r = round_to(x / 2.0**iters, self.f, self.trunc) + 1.0
        for _ in range(iters):
            r = self.mul(r, r)
        return ste(sg(r), jnp.exp(x))

    # -- Goldschmidt ------------------------------------------------------------------------
    def _normalize(self, b_abs):
        """factor = 2^(f−1−p) (exact power of two, 0 when p >= 2f) and c = b·factor ∈ [0.5, 1)."""
        p = highest_bit_exponent(b_abs, self.f)
        factor = jnp.where(p < 2 * self.f, 2.0 ** (self.f - 1 - p), 0.0)
        factor = jnp.where(factor >= 2.0**-self.f, factor, 0.0)
        c = self.q(b_abs * factor)
        return sg(factor), c

    def _recip_normalized(self, c, iters: int, trunc=None):
        q = (lambda v: round_to(v, self.f, trunc)) if trunc else self.q
        w = self.const(2.9142) - 2.0 * c
        r = w
        e = 1.0 - q(c * w)
        for i in range(iters):
            r = q(r * (e + 1.0))
            if i + 1 < iters:
                e = q(e * e)
        return r

    def reciprocal(self, b, iters: int):
        sign = jnp.where(sg(b) < 0, -1.0, 1.0)
        factor, c = self._normalize(jnp.abs(b))
        r = self.q(self._recip_normalized(c, iters) * factor)
        return ste(sign * sg(r), 1.0 / b)

    def divide(self, a, b, iters: int):
        sign = jnp.where(sg(b) < 0, -1.0, 1.0)
        factor, c = self._normalize(jnp.abs(b))
        r = self._recip_normalized(c, iters)
        r = self.q(r * a)
        r = self.q(r * factor)
        return ste(sign * sg(r), a / b)

    def divide_by_public(self, a, c):
        """``a / c`` with a public constant c: a times 1/c encoded toward zero, truncated."""
        inv = jnp.trunc(1.0 / c * 2.0**self.f) / 2.0**self.f
        return ste(sg(self.q(a * inv)), a / c)

    # -- rsqrt / sqrt ---------------------------------------------------------------------------
    def rsqrt(self, x):
        f = self.f
        p = highest_bit_exponent(jnp.abs(x), f)
        u = self.q(x * 2.0 ** (f - 2 - p))
        coeffs = [self.const(c) for c in (-15.47994394, 38.4714796, -49.86605845, 26.02942339)]
        x_pow = u
        acc = x_pow * coeffs[0]
        for c in coeffs[1:]:
            x_pow = self.q(x_pow * u)
            acc = acc + x_pow * c
        r = self.q(acc) + self.const(4.14285016)
        k = f // 2 if f % 2 == 0 else (f + 1) // 2
        e2 = p + 2 - f  # rsqrt(x) = rsqrt(u) · 2^(−e2/2)
        odd = jnp.mod(e2, 2) == 1
        sqrt2 = math.floor(2.0**k * math.sqrt(2.0)) / 2.0**k
        comp = jnp.where(odd, 2.0 ** (-(e2 - 1) / 2) / 2.0 * sqrt2, 2.0 ** (-e2 / 2))
        comp = jnp.floor(comp * 2.0**f) / 2.0**f  # an exact ring integer in SPU
        out = self.q(r * sg(comp))
        return ste(sg(out), jax.lax.rsqrt(x))

    def sqrt(self, x):
        y0 = self.rsqrt(x)
        g = self.mul(x, y0)
        h = self.mul(y0, 0.5)
        r = 1.5 - self.mul(g, h)
        g = self.mul(g, r)
        return ste(sg(g), jnp.sqrt(x))
