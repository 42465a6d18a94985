"""The two arithmetics the interpreter can run with: one definition of fixed point, two uses.

A ring value is held as a floating array of reals on the grid 2^-f of its RingSpec. What
happens to it — encoding, products truncated after 2f fraction bits, casts, the range
limits of :mod:`.report` — is written once in :class:`Arithmetic`; the two subclasses
differ only in what they can afford:

* :class:`CheckedArithmetic` (the emulator): float64, which holds every FXP32 value and
  product and every FXP64 value below 2^35 exactly, so the only error left is the
  truncation applied on purpose. A value or product that leaves its ring is wrapped
  modulo 2^l as the ring does (``mode="wrap"``), raised (``"raise"``) or only recorded
  (``"record"``); every record feeds the per-scope :class:`~.report.RangeReport`.
* :class:`TrainingArithmetic` (distillation): float32 inside the caller's ``jax.jit``,
  straight-through gradients. float32 cannot wrap (its 24-bit mantissa does not hold a
  ring element), so a value leaving its ring is *reported* instead: ``taps`` hold the
  largest magnitude per (scope, kind) and a differentiable penalty
  ``Σ relu(|v|·2^margin / L − 1)²`` over rings of at most ``range_bits`` bits.
  float32 rounding: below FXP64's 2^-18 grid only for |x| ≥ 64; FXP32 values with
  f ≤ 15 and |x| < 2^8 are exact, a product before truncation carries a relative error
  of at most 2^-24.

Both round a truncation to nearest by default: SPU's probabilistic truncation and our
kernels' wrap-count truncation are within ±1 (±1.5) ulp of the exact quotient and
centred on it; ``truncation="floor"`` models a deterministic floor instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DittoError
from ..rings import RingSpec
from . import fxp
from .fxp import Fxp
from .report import is_kernel_limit, limit_of

WRAP_MODES = ("wrap", "raise", "record")


class SemanticsError(DittoError):
    """A program or option the fixed-point semantics cannot evaluate."""


class Arithmetic:
    """Ring arithmetic on floating arrays. Subclasses set ``dtype`` and override
    :meth:`record` and :meth:`wrap` (what to do with a value outside its ring)."""

    dtype = jnp.float64
    truncation = "nearest"

    def __init__(self):
        self.recording = True  # False inside while loops: records cannot leave the loop
        self.unrecorded: set = set()

    # -- what subclasses decide -------------------------------------------------------------
    def record(self, scope: str, ring: RingSpec, kind: str, x) -> None:
        """Check ``x`` (a ``kind`` record in ``ring``, see :mod:`.report`) against its limit."""

    def wrap(self, x, ring: RingSpec, scale_bits: int):
        """What the ring holds of ``x`` at scale 2^scale_bits (identity: no wrap model)."""
        return x

    # -- shared semantics ---------------------------------------------------------------------
    def fxp(self, ring: RingSpec) -> Fxp:
        return Fxp(ring.frac_bits, self.truncation)

    def asfloat(self, x):
        return jnp.asarray(x, self.dtype)

    def check_range(self, scope, ring, kind, x):
        """Record ``x`` (a ``kind`` record in ``ring``) unless inside a while loop."""
        if not self.recording:
            self.unrecorded.add(scope)
            return
        self.record(scope, ring, kind, x)

    def fit(self, x, ring: RingSpec, scope: str, kind: str = "value"):
        """A value in ``ring``: recorded against the ring's limit, then what the ring holds."""
        self.check_range(scope, ring, kind, x)
        return self.wrap(x, ring, ring.frac_bits)

    def product(self, out, ring: RingSpec, scope: str):
        """A product before truncation (exact at scale 2^(2f)): recorded against
        2^(l−2−2f), wrapped at 2f, truncated to 2^-f."""
        self.check_range(scope, ring, "product", out)
        out = self.wrap(out, ring, 2 * ring.frac_bits)
        return self.fxp(ring).q(out)

    def encode_input(self, x, ring: RingSpec, name: str):
        """A secret input as the client encodes it: rounded to nearest."""
        x = fxp.round_to(self.asfloat(x), ring.frac_bits, "nearest")
        return self.fit(x, ring, name, "input")

    def encode_const(self, c, ring: RingSpec, scope: str):
        """A public constant as SPU encodes it in the ring of the op using it: toward
        zero, infinities saturated to the ring's largest element. Saturated infinities
        (the identity of a max / min) are sentinels, not values: they are not range-checked."""
        c = self.asfloat(c)
        finite = jnp.isfinite(c)
        big = (2.0 ** (ring.bits - 1) - 1) / 2.0**ring.frac_bits
        c = jnp.clip(jnp.nan_to_num(c, nan=0.0, posinf=big, neginf=-big), -big, big)
        c = fxp.round_to(c, ring.frac_bits, "zero")
        self.check_range(scope, ring, "const", jnp.where(finite, c, 0.0))
        return self.wrap(c, ring, ring.frac_bits)

    def round_nearest(self, x, frac_bits: int):
        return fxp.round_to(x, frac_bits, "nearest")

    def cast(self, x, src: RingSpec, dst: RingSpec, scope: str):
        """``x`` moved from ``src`` to ``dst`` by the registered cast kernel, whose own
        emulation (declared next to its protocol) says what it computes."""
        if src == dst:
            return x
        from ..kernels.casts import find_cast_kernel

        x = find_cast_kernel(src, dst).emulate(x, src, dst, self.round_nearest)
        return self.fit(x, dst, scope, "cast")


class CheckedArithmetic(Arithmetic):
    """float64, bit-exact for the ring values; overflow wrapped, raised or recorded."""

    dtype = jnp.float64

    def __init__(self, mode: str = "wrap", truncation: str = "nearest"):
        super().__init__()
        if mode not in WRAP_MODES:
            raise SemanticsError(f"mode must be one of {WRAP_MODES}, got {mode!r}")
        if truncation not in ("nearest", "floor"):
            raise SemanticsError(f"truncation must be 'nearest' or 'floor', got {truncation!r}")
        self.mode = mode
        self.truncation = truncation
        self.stats: dict = {}  # (scope, ring, kind) -> [(max, n_over), ...] traced values

    def record(self, scope, ring, kind, x):
        x = jnp.asarray(x, jnp.float64)
        if x.size == 0:
            return
        m, n = fxp.max_and_count(x, limit_of(ring, kind))
        self.stats.setdefault((scope, ring, kind), []).append((m, n))

    def wrap(self, x, ring, scale_bits):
        if self.mode == "wrap":
            return fxp.wrap(x, ring.bits, scale_bits)
        return x

    def collected_stats(self) -> dict:
        """{(scope, ring str, kind): (max, n_over)} reduced over every record of the key."""
        out = {}
        for (scope, ring, kind), items in self.stats.items():
            m = items[0][0]
            n = items[0][1]
            for mi, ni in items[1:]:
                m, n = jnp.maximum(m, mi), n + ni
            out[(scope, str(ring), kind)] = (m, n)
        return out


@jax.tree_util.register_pytree_node_class
class RangeTaps:
    """What the training arithmetic reports next to the outputs (a pytree):
    ``penalty`` (scalar, differentiable; 0 when everything fits with the margin) and
    ``max_abs``: ``{(scope, kind): largest |v|}`` (no gradient). ``index`` (static):
    ``{(scope, kind): (ring, limit)}`` with the limit before the margin."""

    def __init__(self, penalty, max_abs: dict, index: dict):
        self.penalty, self.max_abs, self.index = penalty, max_abs, index

    def tree_flatten(self):
        keys = tuple(sorted(self.max_abs))
        index = tuple((k, self.index[k]) for k in keys)  # hashable: part of the tree structure
        return (self.penalty, tuple(self.max_abs[k] for k in keys)), (keys, index)

    @classmethod
    def tree_unflatten(cls, aux, children):
        keys, index = aux
        penalty, maxes = children
        return cls(penalty, dict(zip(keys, maxes)), dict(index))

    def headroom_bits(self) -> dict:
        """``{(scope, kind): log2(limit / max |v|)}`` (negative: over the limit)."""
        out = {}
        for key, m in self.max_abs.items():
            m = float(m)
            out[key] = float("inf") if m <= 0 else float(np.log2(self.index[key][1] / m))
        return out


class TrainingArithmetic(Arithmetic):
    """float32, jit-native, straight-through; values leaving their ring are reported
    (``taps``) and penalised, not wrapped. ``ranges``: None (no taps) or
    ``(range_bits, margin_bits)``."""

    dtype = jnp.float32

    def __init__(self, ranges=None):
        super().__init__()
        self.ranges = ranges
        self.penalty = jnp.zeros((), jnp.float32)
        self.max_abs: dict = {}
        self.index: dict = {}

    def record(self, scope, ring, kind, x):
        if self.ranges is None or ring.bits > self.ranges[0]:
            return
        x = jnp.asarray(x)
        if x.size == 0 or not jnp.issubdtype(x.dtype, jnp.floating):
            return
        limit = limit_of(ring, kind)
        # a kernel's calibrated limit (bound / range) is the safe magnitude itself, as the
        # emulator and calibration read it: no margin on top (only ring limits get one)
        margin_bits = 0.0 if is_kernel_limit(kind) else self.ranges[1]
        a = jnp.abs(x.astype(jnp.float32))
        excess = jax.nn.relu(a * (2.0**margin_bits / limit) - 1.0)
        self.penalty = self.penalty + jnp.sum(excess * excess)
        key = (scope, kind)
        m = jnp.max(jax.lax.stop_gradient(a))
        self.max_abs[key] = jnp.maximum(self.max_abs[key], m) if key in self.max_abs else m
        self.index[key] = (ring, limit)

    def taps(self) -> RangeTaps:
        return RangeTaps(self.penalty, self.max_abs, self.index)
