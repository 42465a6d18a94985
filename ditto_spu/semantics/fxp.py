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

* SPU's own algorithms for the other transcendentals (source: secretflow/spu tag 0.9.5rc1,
  libspu/kernel/hal/fxp_approx.cc; verified in tests/semantics/test_spu_algorithms.py):
  ``tanh`` (degree-17 Chebyshev on [−5, 5], clamped; up to ~5e-3 from the exact tanh),
  ``logistic`` (reciprocal(1 + exp(−x))), ``log`` / ``log1p`` (LOG_MINMAX: bit
  normalisation + degree-8 polynomial), ``erf`` (Abramowitz–Stegun 7.1.27 with a Goldschmidt
  reciprocal), ``expm1``, ``sin`` / ``cos`` (degree-9 Chebyshev), ``atan2`` (division +
  minimax polynomial), ``pow`` (Padé exp2 of y·log|x|).

Not modelled: tan and cbrt (SPU 0.9.5 has no kernel for them: "Unhandled intrinsic call
mhlo.tan"); SPU's own acos / asin kernels (unreachable from jax: its asin / acos / atan are
chlo ops that XLA expands into atan2, sqrt and arithmetic, which are modelled); erfc, hence
jax's exact GeLU (XLA expands erfc into its own rational approximation with exp and division
before SPU sees it); the EXP_PADE / EXP_PRIME / LOG_PADE / LOG_NEWTON / SIGMOID_MM1 /
SIGMOID_SEG3 modes (not our settings). Note that the chlo ops (erf, erfc, asin, atan, ...)
reach SPU only through XLA HLO (stock ``spu.utils.simulation``); SPU's StableHLO parser
rejects them.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import jax.scipy.special  # noqa: F401  (erf)
import numpy as np

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

    # =========================================================================================
    # SPU 0.9.5's own approximations of the other transcendentals (libspu/kernel/hal/
    # fxp_approx.cc at tag 0.9.5rc1 = the 0.9.5 release branch; defaults resolved by
    # core/config.cc populateRuntimeConfig). Verified against the 3-party simulation in
    # tests/semantics/test_spu_algorithms.py.
    # =========================================================================================

    def _c32(self, c):
        """A public constant SPU declares as a C++ ``float``: rounded to float32 first, then
        encoded toward zero like every constant."""
        return self.const(float(np.float32(c)))

    def _powers(self, x, degree: int):
        """[x, x^2, ..., x^degree] as SPU's ``detail::polynomial`` builds them: in
        ceil(log2(degree)) doubling rounds, x^(L+j) = x^j · x^L (j = 1..), each truncated."""
        pows = [x]
        rounds = math.ceil(math.log2(degree)) if degree > 1 else 0
        for _ in range(rounds):
            n = len(pows)
            last = pows[-1]
            pows += [self.q(pows[j] * last) for j in range(min(n, degree - n))]
        return pows

    def _poly(self, x, coeffs):
        """SPU's ``detail::polynomial`` with float coefficients c0..cn: the products
        c_i · x^i are exact at scale 2^(2f), summed, and truncated once."""
        cs = [self._c32(c) for c in coeffs]
        pows = self._powers(x, len(cs) - 1)
        acc = cs[0] + sum(c * p for c, p in zip(cs[1:], pows))
        return self.q(acc)

    def _cheb_odd(self, t, coeffs):
        """Σ c_k T_(2k+1)(t) as SPU's compute_chebyshev_polynomials + f_mmul: y = 4·t² − 2
        (= 2·T_2), T_1 = t, T_3 = t·(y − 1), T_(2k+1) = y·T_(2k−1) − T_(2k−3), each product
        truncated; then one truncation of the (public row × secret column) matmul."""
        y = 4.0 * self.q(t * t) - 2.0
        polys = [t, self.q(t * (y - 1.0))]
        for _ in range(2, len(coeffs)):
            polys.append(self.q(y * polys[-1]) - polys[-2])
        cs = [self._c32(c) for c in coeffs]
        return self.q(sum(c * p for c, p in zip(cs, polys)))

    # -- tanh ---------------------------------------------------------------------------------
    _TANH_CHEB = (
        1.2514045938932097, -0.3655987797163166, 0.17253141478140663,
        -0.08943445792774211, 0.047703017901250824, -0.025830290571688078,
        0.014338801903468182, -0.008541730970059077, 0.0061230685785789475,
    )

    def tanh(self, x):
        """SPU's ``f_tanh`` = ``tanh_chebyshev`` (the Padé variant is compiled out): clamp to
        [−5, 5], t = trunc(0.2·x), degree-17 odd Chebyshev series in t (9 coefficients)."""
        xc = jnp.clip(sg(x), -5.0, 5.0)
        t = self.q(self._c32(0.2) * xc)
        out = self._cheb_odd(t, self._TANH_CHEB)
        return ste(sg(out), jnp.tanh(x))

    # -- logistic -----------------------------------------------------------------------------
    def logistic(self, x, exp_iters: int, div_iters: int):
        """``jax.nn.sigmoid`` on SPU: jax 0.4.34 lowers it to 1 / (1 + exp(−x)), which SPU's
        compiler turns into ``reciprocal(1 + exp(−x))``; ``stablehlo.logistic`` itself runs
        ``f_sigmoid`` with the default sigmoid_mode, which config.cc resolves to
        SIGMOID_REAL = the same reciprocal(1 + exp(−x)). exp: Taylor; reciprocal: Goldschmidt."""
        e = sg(self.exp_taylor(-sg(x), exp_iters))
        out = self.reciprocal(1.0 + e, div_iters)
        return ste(sg(out), jax.nn.sigmoid(x))

    # -- log / log1p ----------------------------------------------------------------------------
    _LOG_MINMAX = (
        0.0, 0.9999964239, -0.4998741238, 0.3317990258, -0.2407338084,
        0.1676540711, -0.0953293897, 0.0360884937, -0.0064535442,
    )

    def _log_minmax(self, x):
        f = self.f
        xs = sg(x)
        p = highest_bit_exponent(jnp.abs(xs), f)  # 2^p <= x·2^f < 2^(p+1)
        # factor = bitrev(2^p) over 2f+1 bits = 2^(f−p) as a fixed-point value (0 if p > 2f)
        factor = jnp.where(p <= 2 * f, 2.0 ** (f - p), 0.0)
        norm = self.q(xs * factor)  # in [1, 2)
        log_norm = self._poly(norm - 1.0, self._LOG_MINMAX)
        # (p − f) comes as arithmetic shares shifted left by f: both shares are multiples of
        # 2^f, so are their products with the public ln 2, and ABY3's truncation (TruncAPr2:
        # share-wise shift + 1) then returns the exact value plus one ulp, deterministically.
        log_e = (p - f) * self.const(math.log(2.0)) + 2.0**-f
        return log_norm + log_e

    def log(self, x):
        """SPU's ``f_log`` with fxp_log_mode LOG_DEFAULT → LOG_MINMAX (log_iters / log_orders
        only matter for LOG_NEWTON): x = norm · 2^(p−f), norm ∈ [1, 2) from the highest set
        bit p; log(norm) by a degree-8 minimax polynomial in norm − 1, plus (p − f)·ln 2.
        Valid for 0 < x < 2^(f+1)."""
        return ste(sg(self._log_minmax(x)), jnp.log(x))

    def log1p(self, x):
        """SPU's ``f_log1p``: ``f_log(1 + x)`` (no extra accuracy for small x)."""
        return ste(sg(self._log_minmax(1.0 + sg(x))), jnp.log1p(x))

    # -- erf ------------------------------------------------------------------------------------
    _ERF = (1.0, 0.278393, 0.230389, 0.000972, 0.078108)

    def erf(self, x, div_iters: int):
        """SPU's ``f_erf`` (Abramowitz–Stegun 7.1.27): a = |x|, z = (1 + 0.278393a +
        0.230389a² + 0.000972a³ + 0.078108a⁴)⁴ (two truncated squarings), erf = 1 − 1/z by a
        Goldschmidt reciprocal; 1 where a >= 3; the sign of x restored. Reached from jax's
        ``erf`` (chlo.erf → HLO erf → ``mhlo.erf`` intrinsic); jax's exact GeLU uses erfc,
        which XLA expands into its own polynomial before SPU sees it."""
        xs = sg(x)
        a = jnp.abs(xs)
        z = self._poly(a, self._ERF)
        z = self.q(z * z)
        z = self.q(z * z)
        e = 1.0 - sg(self.reciprocal(z, div_iters))
        e = jnp.where(a < 3.0, e, 1.0)
        out = jnp.where(xs < 0, -e, e)
        return ste(out, jax.scipy.special.erf(x))

    # -- expm1 ----------------------------------------------------------------------------------
    def expm1(self, x, exp_iters: int):
        """SPU's ``Expm1`` kernel: exp(x) − 1 with the configured exp (Taylor)."""
        return ste(sg(self.exp_taylor(x, exp_iters)) - 1.0, jnp.expm1(x))

    # -- sin / cos ------------------------------------------------------------------------------
    _SIN_CHEB = (
        -0.07570787578233389, -0.8532364056408055, 0.2474789050491474,
        -0.02719844932262742, 0.0016750058127101841,
    )

    def _sin_chebyshev(self, x):
        # reduce to [−π, π): x − 2π·floor((x + π) / 2π), every constant encoded toward zero
        n = jnp.floor(self.q((x + self.const(math.pi)) * self.const(1.0 / (2.0 * math.pi))))
        xr = x - self.q(n * self.const(2.0 * math.pi))
        t = self.q(self._c32(0.25464790894703254) * xr)  # 1 / (1.25π)
        return self._cheb_odd(t, self._SIN_CHEB)

    def sin(self, x):
        """SPU's ``f_sine`` (secret input): range reduction to [−π, π), then a degree-9 odd
        Chebyshev series on [−1.25π, 1.25π] (5 coefficients)."""
        return ste(sg(self._sin_chebyshev(sg(x))), jnp.sin(x))

    def cos(self, x):
        """SPU's ``f_cosine``: sin(π/2 − x) with the same Chebyshev series."""
        return ste(sg(self._sin_chebyshev(self.const(math.pi / 2) - sg(x))), jnp.cos(x))

    # -- atan2 ----------------------------------------------------------------------------------
    _ATAN_SMALL = (
        6.3893490851163976e-06, 0.99938232039482577, 0.0096717091887422429,
        -0.38851091678439126, 0.13850820695354954, 0.065822467870128534,
        -0.039488402923576769,
    )
    _ATAN_LARGE = (
        7.3035884235708622e-09, 0.99999906394905635, 3.5324890092487464e-05,
        -0.33393042345794194, 0.0054765660426422556, 0.16982068444578205,
        0.10531189733914688, -0.37905943050720364, 0.32946653597875702,
        -0.1337452245060563, 0.022023163399866309,
    )

    def atan2(self, y, x, div_iters: int):
        """SPU's ``f_atan2`` (atan2_minimax): t = min(|x|,|y|) / max(|x|,|y|) by Goldschmidt
        division, atan(t) by a degree-6 minimax polynomial (degree 10 when f > 20), then
        π/2 − θ if |y| > |x|, π − θ if x < 0, −θ if y < 0."""
        xs, ys = sg(x), sg(y)
        ax, ay = jnp.abs(xs), jnp.abs(ys)
        swap = ax < ay
        big = jnp.where(swap, ay, ax)
        small = ax + ay - big
        t = sg(self.divide(small, big, div_iters))
        theta = self._poly(t, self._ATAN_SMALL if self.f <= 20 else self._ATAN_LARGE)
        theta = jnp.where(swap, self.const(math.pi / 2) - theta, theta)
        theta = jnp.where(xs < 0, self.const(math.pi) - theta, theta)
        theta = jnp.where(ys < 0, -theta, theta)
        return ste(theta, jnp.arctan2(y, x))

    # -- pow ------------------------------------------------------------------------------------
    def _exp2_pade(self, u):
        """SPU's ``exp2_pade`` (valid for |u| < 32): 2^frac(u) by a degree-5 polynomial
        (powers built one by one), times 2^(floor(u) mod 32) exactly; for u < 0 the result
        is that over 2^32 (one 32-bit truncation)."""
        fl = jnp.floor(u)
        fr = u - fl
        p = [float(v) for v in (
            np.float32(0.100000007744302) * np.float32(10), np.float32(0.693147180426163),
            np.float32(0.240226510710170), np.float32(0.555040686204663) / np.float32(10),
            np.float32(0.961834122588046) / np.float32(100),
            np.float32(0.133273035928143) / np.float32(100),
        )]
        cs = [self.const(c) for c in p]
        pows = [fr]
        for _ in range(4):
            pows.append(self.q(fr * pows[-1]))
        ret = self.q(sum(c * pw for c, pw in zip(cs[1:], pows))) + cs[0]
        ret = ret * 2.0 ** jnp.mod(fl, 32.0)
        recip = self.q(ret * 2.0**-32)
        return jnp.where(u < 0, recip, ret)

    def pow(self, x, y):
        """SPU's ``hal::power`` for fixed-point x (secret x): |x|^y = exp_pade(y · log(|x|))
        with log by LOG_MINMAX (whatever fxp_log_mode says) and exp by the Padé exp2
        (whatever fxp_exp_mode says): u = y·log|x| · log2(e), 2^u; negative when x < 0 and
        floor(y) is odd. Valid while |y·log2|x|| < 32."""
        xs, ys = sg(x), sg(y)
        lg = self._log_minmax(jnp.abs(xs))
        t = self.q(ys * lg)
        log2e = float(np.log2(np.exp(np.float32(1.0))).astype(np.float32))
        u = self.q(t * self.const(log2e))
        val = self._exp2_pade(u)
        odd = jnp.mod(jnp.floor(ys), 2.0) == 1.0
        out = jnp.where((xs < 0) & odd, -val, val)
        return ste(out, jnp.power(x, y))
