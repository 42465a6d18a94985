"""The fixed-point emulator: what the rings compute for a policy, in plaintext JAX.

``emulate(fn, policy)`` traces ``fn`` to a jaxpr and re-evaluates it equation by equation
in float64, giving every floating value the ring the compiler would give it and applying
that ring's arithmetic (see :mod:`.fxp` for the arithmetic and what is modelled of SPU):

* rings are assigned by the compiler's rule (``passes.annotate_rings``): an op runs in the
  widest of ``policy.ring_for(dtype, scope)`` over its float results, where ``scope`` is
  the jax name stack plus the primitive name (``.../attention/self/query/dot_general``,
  nested ``jit``\\ s as ``jit(name)``: the same string the StableHLO locations carry);
  ops defining no float take the widest ring of their float operands; function arguments
  take ``policy.ring_for(dtype, argument path)``;
* an operand living in another ring is cast first, as the compiler's cast steps do:
  up-casts and rescales to more fraction bits are exact, down-casts and rescales to fewer
  round to the destination grid (the kernels are within ±1.5 ulp; modelled as nearest);
  the cast result is checked against the destination ring;
* public constants (literals, constants, ops on constants only) are computed exactly and
  encoded, toward zero, in the ring of the op using them;
* inputs are encoded by rounding; additions, comparisons, max, reshapes, selects ... are
  exact; products and dot products are exact at scale 2^(2f), checked against
  2^(l−2) (``product`` records), optionally wrapped mod 2^l, then truncated;
* exp, division, reciprocal, rsqrt and sqrt follow SPU's algorithms; other
  transcendental primitives (tanh, log, erf, logistic, sin, ...) are computed exactly and
  rounded (listed in ``report.exact_ops``). SPU 0.9.5's tanh is NOT modelled: it differs
  from the exact tanh by up to ~5e-3 on [−5, 5] (measured), and from the clamp + Padé form
  of later SPU versions too;
* every float result is checked against its ring's safe range ``|v|·2^f < 2^(l−2)``.

Overflow handling (``EmulatorOptions.mode``): ``"wrap"`` (default) reduces values and
products (at scale 2^(2f), before truncation) modulo 2^l like the ring does, so the output
is what a secure run gives (measured: an FXP32[f=14] product 3.75·4 comes out as −1 in
both; when the wrapped element itself lies outside ±2^(l−2), SPU's probabilistic
truncation may in addition be off by a multiple of 2^(l−f): such results are garbage either
way); ``"raise"`` raises
:class:`RingOverflowError` naming the scope, value and limit; ``"record"`` keeps exact
values (an unbounded ring) and only records. In every mode the per-scope maxima are
accumulated in ``emulated.report`` (:class:`~.report.RangeReport`).

Control flow: ``pjit`` / ``closed_call`` / ``custom_jvp_call`` / ``custom_vjp_call`` /
``remat`` are entered (their scopes extend the name stack like the lowering does);
``cond`` evaluates every branch and selects (what SPU does with a secret predicate);
``scan`` is unrolled; ``while`` runs as a ``lax.while_loop`` whose body is emulated but not
recorded (its scopes are listed in ``report.unrecorded``).

Gradients: ``emulated(*args)`` is differentiable (``jax.grad`` works through it, jitted or
not). Every quantization is straight-through (forward: the ring value; backward: the
gradient of the exact op at the quantized inputs). The float64 work runs under
``jax.experimental.enable_x64`` inside a ``custom_vjp``, so the caller's x64 setting does
not matter; float results come back as float32 (use :meth:`EmulatedFunction.evaluate` for
float64 numpy results).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import enable_x64

from ..errors import DittoError, RangeError
from ..policy import Policy, load_policy
from ..rings import RingSpec
from . import fxp
from .fxp import Fxp, sg, ste
from .report import RangeReport, limit_of

MODES = ("wrap", "raise", "record")


class EmulationError(DittoError):
    """The emulator cannot evaluate a program (unsupported primitive, bad option)."""


class RingOverflowError(RangeError):
    """A value or product left its ring (mode="raise", or :func:`ditto_spu.quant.check`)."""

    def __init__(self, message: str, records=()):
        super().__init__(message)
        self.records = list(records)


@dataclasses.dataclass(frozen=True)
class EmulatorOptions:
    """How the emulator models SPU.

    ``mode``: ``"wrap"`` | ``"raise"`` | ``"record"`` (module docstring).
    ``truncation``: ``"nearest"`` (default: the mean of SPU's probabilistic truncation, which
    is within ±1 ulp of it) or ``"floor"``.
    ``nonlinear``: ``"spu"`` (SPU's algorithms for exp / division / rsqrt / sqrt) or
    ``"exact"`` (exact result rounded to the ring: the error of the rings alone).
    ``exp_iters`` / ``div_iters``: SPU's ``fxp_exp_iters`` / ``fxp_div_goldschmidt_iters``
    (defaults of :class:`~ditto_spu.spu_config.SpuOptions`).
    ``denominator_broadcast``: the SPU compiler option our segments use
    (``x / broadcast(y)`` → ``x · broadcast(1/y)``).
    """

    mode: str = "wrap"
    truncation: str = "nearest"
    nonlinear: str = "spu"
    exp_iters: int = 5
    div_iters: int = 2
    denominator_broadcast: bool = True

    def __post_init__(self):
        if self.mode not in MODES:
            raise EmulationError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.truncation not in ("nearest", "floor"):
            raise EmulationError(f"truncation must be 'nearest' or 'floor', got {self.truncation!r}")
        if self.nonlinear not in ("spu", "exact"):
            raise EmulationError(f"nonlinear must be 'spu' or 'exact', got {self.nonlinear!r}")

    @classmethod
    def from_spu_options(cls, spu_options=None, **overrides) -> "EmulatorOptions":
        """Options matching a :class:`~ditto_spu.spu_config.SpuOptions` (default one)."""
        from ..spu_config import SpuOptions

        o = spu_options or SpuOptions()
        if o.fxp_exp_mode not in ("EXP_TAYLOR", "EXP_DEFAULT"):
            overrides.setdefault("nonlinear", "exact")
        base = dict(exp_iters=o.fxp_exp_iters, div_iters=o.fxp_div_goldschmidt_iters)
        base.update(overrides)
        return cls(**base)

    def replace(self, **kw) -> "EmulatorOptions":
        return dataclasses.replace(self, **kw)


# ---- helpers -------------------------------------------------------------------------------

_FLOAT_KINDS = ("f",)


def _is_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def _widest(rings):
    rings = [r for r in rings if r is not None]
    return max(rings, key=lambda r: (r.bits, r.frac_bits)) if rings else None


def _join(*parts) -> str:
    return "/".join(p for p in parts if p)


def _to64(x):
    x = jnp.asarray(x)
    return x.astype(jnp.float64) if _is_float(x.dtype) else x


@dataclasses.dataclass
class _V:
    """A value during interpretation: its array (float64 for floats), ring, constness."""

    x: object
    ring: Optional[RingSpec]
    const: bool
    is_float: bool


_CALL_PRIMS = {
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
}

# Results exactly representable when the operands are: evaluated as they are.
_EXACT_PRIMS = {
    "add", "sub", "neg", "abs", "sign", "max", "min", "reduce_sum", "reduce_max", "reduce_min",
    "cumsum", "cummax", "cummin", "reshape", "broadcast_in_dim", "transpose", "squeeze",
    "expand_dims", "slice", "dynamic_slice", "dynamic_update_slice", "concatenate", "pad",
    "gather", "scatter", "scatter-add", "scatter_add", "select_n", "rev", "copy", "copy_p",
    "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor", "argmax", "argmin", "sort",
    "clamp", "iota", "floor", "ceil", "round", "stop_gradient", "reduce_and", "reduce_or",
    "shift_left", "shift_right_logical", "shift_right_arithmetic", "rem", "population_count",
    "convert_element_type", "reduce_precision", "bitcast_convert_type", "split",
}

# Transcendentals with no SPU model here: exact, then rounded to the ring.
_ROUNDED_EXACT_PRIMS = {
    "log", "log1p", "expm1", "exp2", "logistic", "erf", "erfc", "erf_inv", "sin", "cos", "tan",
    "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh", "atanh", "pow", "cbrt",
    "lgamma", "digamma", "igamma", "is_finite", "nextafter",
}


def _fix_params(params: dict) -> dict:
    p = dict(params)
    for key in ("new_dtype", "dtype", "preferred_element_type"):
        if key in p and p[key] is not None and _is_float(p[key]):
            p[key] = jnp.float64
    return p


def _bind(eqn, xs):
    out = eqn.primitive.bind(*xs, **_fix_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


# ---- the interpreter ------------------------------------------------------------------------


class _Interpreter:
    """Evaluates one jaxpr under a policy; collects per-scope maxima as traced values."""

    def __init__(self, policy: Policy, options: EmulatorOptions):
        self.policy = policy
        self.options = options
        self.stats: dict = {}  # (scope, ring, kind) -> list of (max, n_over)
        self.exact_ops: set = set()
        self.unrecorded: set = set()
        self._recording = True
        self._ring_cache: dict = {}

    # -- rings ------------------------------------------------------------------------------
    def ring_for(self, dtype, scope: str):
        key = (str(jnp.dtype(dtype)), scope)
        r = self._ring_cache.get(key)
        if r is None and key not in self._ring_cache:
            r = self.policy.ring_for(key[0], scope)
            self._ring_cache[key] = r
        return r

    def fxp(self, ring: RingSpec) -> Fxp:
        return Fxp(ring.frac_bits, self.options.truncation)

    # -- recording / range ----------------------------------------------------------------------
    def record(self, scope, ring, kind, x):
        if not self._recording:
            self.unrecorded.add(scope)
            return
        x = jnp.asarray(x, jnp.float64)
        if x.size == 0:
            return
        m, n = fxp.max_and_count(x, limit_of(ring, kind))
        self.stats.setdefault((scope, ring, kind), []).append((m, n))

    def fit(self, x, ring, scope, kind="value"):
        """Record x against its ring and wrap it (mode "wrap")."""
        self.record(scope, ring, kind, x)
        if self.options.mode == "wrap":
            x = fxp.wrap(x, ring.bits, ring.frac_bits)
        return x

    def product(self, out, ring, scope):
        """A product before truncation: check at scale 2^(2f), wrap, truncate to 2^-f."""
        self.record(scope, ring, "product", out)
        if self.options.mode == "wrap":
            out = fxp.wrap(out, ring.bits, 2 * ring.frac_bits)
        return self.fxp(ring).q(out)

    def encode_input(self, x, ring, name):
        x = fxp.round_to(x, ring.frac_bits, "nearest")
        return self.fit(x, ring, name, "input")

    def encode_const(self, c, ring, scope):
        c = jnp.asarray(c, jnp.float64)
        big = (2.0 ** (ring.bits - 1) - 1) / 2.0**ring.frac_bits
        c = jnp.clip(jnp.nan_to_num(c, nan=0.0, posinf=big, neginf=-big), -big, big)
        c = fxp.round_to(c, ring.frac_bits, "zero")
        return self.fit(c, ring, scope, "const")

    def cast(self, x, src: RingSpec, dst: RingSpec, scope):
        if src == dst:
            return x
        if dst.frac_bits < src.frac_bits:
            x = fxp.round_to(x, dst.frac_bits, "nearest")
        return self.fit(x, dst, scope, "cast")

    # -- evaluation -----------------------------------------------------------------------------
    def run(self, closed, arg_names, inputs):
        """Top level: encode inputs in their rings, evaluate, return float64 outputs."""
        args = []
        for var, name, x in zip(closed.jaxpr.invars, arg_names, inputs):
            if _is_float(var.aval.dtype):
                ring = self.ring_for(var.aval.dtype, name)
                args.append(_V(self.encode_input(x, ring, name), ring, False, True))
            else:
                args.append(_V(x, None, False, False))
        outs = self.eval_jaxpr(closed.jaxpr, closed.consts, args, "", top=True)
        return [o.x for o in outs]

    def eval_jaxpr(self, jaxpr, consts, args, prefix, top=False):
        env: dict = {}
        producers: dict = {}

        def read(v):
            if isinstance(v, jax.core.Literal):
                val = np.asarray(v.val)
                f = _is_float(val.dtype)
                return _V(val.astype(np.float64) if f else val, None, True, f)
            return env[v]

        for var, c in zip(jaxpr.constvars, consts):
            c = np.asarray(c)
            f = _is_float(c.dtype)
            env[var] = _V(c.astype(np.float64) if f else c, None, True, f)
        for var, a in zip(jaxpr.invars, args):
            env[var] = a
        for eqn in jaxpr.eqns:
            invals = [read(v) for v in eqn.invars]
            outs = self.eval_eqn(eqn, invals, prefix, producers)
            for var, o in zip(eqn.outvars, outs):
                if not isinstance(var, jax.core.DropVar):
                    env[var] = o
                    producers[var] = eqn
        return [read(v) for v in jaxpr.outvars]

    def eval_eqn(self, eqn, invals, prefix, producers):
        prim = eqn.primitive.name
        stack = _join(prefix, str(eqn.source_info.name_stack))
        if prim in _CALL_PRIMS:
            sub = eqn.params[_CALL_PRIMS[prim]]
            inner = _join(stack, f"jit({eqn.params['name']})") if prim == "pjit" else stack
            if hasattr(sub, "jaxpr"):
                jaxpr, consts = sub.jaxpr, sub.consts
            else:
                jaxpr, consts = sub, ()
            n_skip = eqn.params.get("num_consts", 0) if prim == "custom_vjp_call_jaxpr" else 0
            del n_skip
            return self.eval_jaxpr(jaxpr, consts, invals, inner)
        if prim == "cond":
            return self._cond(eqn, invals, stack)
        if prim == "scan":
            return self._scan(eqn, invals, stack)
        if prim == "while":
            return self._while(eqn, invals, stack)
        if any(isinstance(p, (jax.core.Jaxpr, jax.core.ClosedJaxpr)) for p in eqn.params.values()) and prim not in ("reduce",):
            raise EmulationError(
                f"primitive {prim!r} at {stack or 'top level'} carries a sub-program the emulator "
                "does not know how to enter; emulate a function without it"
            )
        scope = _join(stack, prim)
        out_float = [_is_float(v.aval.dtype) for v in eqn.outvars]

        if all(v.const for v in invals):  # public computation: exact, encoded where used
            outs = _bind(eqn, [v.x for v in invals])
            return [_V(o, None, True, f) for o, f in zip(outs, out_float)]

        ring = _widest(self.ring_for(v.aval.dtype, scope) for v, f in zip(eqn.outvars, out_float) if f)
        if ring is None:
            ring = _widest(v.ring for v in invals if v.is_float and not v.const)
        xs = []
        for v in invals:
            x = v.x
            if v.is_float and ring is not None:
                if v.const:
                    x = self.encode_const(x, ring, scope)
                elif v.ring != ring:
                    x = self.cast(x, v.ring, ring, scope)
            elif v.const:
                x = jnp.asarray(x)
            xs.append(x)
        outs = self.compute(eqn, prim, xs, invals, ring, scope, producers)
        result = []
        for o, f in zip(outs, out_float):
            if f and ring is not None:
                result.append(_V(self.fit(o, ring, scope), ring, False, True))
            else:
                result.append(_V(o, ring if f else None, False, f))
        return result

    def compute(self, eqn, prim, xs, invals, ring, scope, producers):
        floats = ring is not None and any(v.is_float for v in invals)
        if not floats or prim in _EXACT_PRIMS:
            return _bind(eqn, xs)
        F = self.fxp(ring)
        spu = self.options.nonlinear == "spu"
        if prim == "mul":
            return [self.product(xs[0] * xs[1], ring, scope)]
        if prim == "dot_general":
            return [self.product(_bind(eqn, xs)[0], ring, scope)]
        if prim == "square":
            return [self.product(xs[0] * xs[0], ring, scope)]
        if prim == "integer_pow":
            return [self._integer_pow(xs[0], eqn.params["y"], ring, scope)]
        if prim == "div":
            return [self._div(eqn, xs, invals, ring, scope, producers)]
        if prim == "exp" and spu:
            out = F.exp_taylor(xs[0], self.options.exp_iters)
            self.record(scope, ring, "product", out)
            return [out]
        if prim == "rsqrt" and spu:
            return [F.rsqrt(xs[0])]
        if prim == "sqrt" and spu:
            return [F.sqrt(xs[0])]
        if prim in ("exp", "rsqrt", "sqrt", "tanh") or prim in _ROUNDED_EXACT_PRIMS:
            self.exact_ops.add(prim)
            return [F.q(o) if _is_float(o.dtype) else o for o in _bind(eqn, xs)]
        raise EmulationError(
            f"no fixed-point model for primitive {prim!r} at {scope}; supported: products, "
            "exact ops, exp/div/rsqrt/sqrt/tanh and rounded transcendentals"
        )

    def _integer_pow(self, x, y, ring, scope):
        if y == 0:
            return jnp.ones_like(x)
        n = abs(y)
        acc, base = None, x
        while n:
            if n & 1:
                acc = base if acc is None else self.product(acc * base, ring, scope)
            n >>= 1
            if n:
                base = self.product(base * base, ring, scope)
        if y < 0:
            acc = self.fxp(ring).reciprocal(acc, self.options.div_iters)
        return acc

    def _div(self, eqn, xs, invals, ring, scope, producers):
        a, b = xs
        F = self.fxp(ring)
        if self.options.nonlinear == "exact":
            self.exact_ops.add("div")
            return F.q(a / b)
        if invals[1].const:
            # Public divisor: SPU multiplies by 1/c (encoded toward zero) and truncates.
            self.record(scope, ring, "product", a / b)
            return F.divide_by_public(a, b)
        bvar = eqn.invars[1]
        broadcast = not isinstance(bvar, jax.core.Literal) and (
            tuple(bvar.aval.shape) != tuple(eqn.outvars[0].aval.shape)
            or getattr(producers.get(bvar), "primitive", None) is jax.lax.broadcast_in_dim_p
        )
        if self.options.denominator_broadcast and broadcast:
            r = F.reciprocal(b, self.options.div_iters)
            return self.product(a * r, ring, scope)
        self.record(scope, ring, "product", a * 2.0)  # r·a with r = 1/c ∈ (1, 2]
        return F.divide(a, b, self.options.div_iters)

    # -- control flow ----------------------------------------------------------------------------
    def _cond(self, eqn, invals, stack):
        index, ops = invals[0], invals[1:]
        branches = eqn.params["branches"]
        outs = [self.eval_jaxpr(b.jaxpr, b.consts, ops, stack) for b in branches]
        if index.const:
            return outs[int(np.clip(np.asarray(index.x), 0, len(branches) - 1))]
        result = []
        for i in range(len(outs[0])):
            vals = [o[i] for o in outs]
            ring = _widest(v.ring for v in vals)
            xs = [v.x if v.ring in (None, ring) else self.cast(v.x, v.ring, ring, stack) for v in vals]
            idx = jnp.clip(jnp.asarray(index.x).astype(jnp.int32), 0, len(branches) - 1)
            x = jax.lax.select_n(idx, *xs) if len(xs) > 1 else xs[0]
            result.append(_V(x, ring, all(v.const for v in vals), vals[0].is_float))
        return result

    def _scan(self, eqn, invals, stack):
        p = eqn.params
        nc, ncar, length = p["num_consts"], p["num_carry"], p["length"]
        body = p["jaxpr"]
        consts, carry, xs = invals[:nc], invals[nc : nc + ncar], invals[nc + ncar :]
        ys_steps = []
        order = range(length - 1, -1, -1) if p["reverse"] else range(length)
        for i in order:
            x_i = [_V(v.x[i], v.ring, v.const, v.is_float) for v in xs]
            out = self.eval_jaxpr(body.jaxpr, body.consts, consts + carry + x_i, stack)
            new_carry = out[:ncar]
            carry = [
                _V(self.cast(n.x, n.ring, c.ring, stack), c.ring, False, c.is_float)
                if (n.is_float and c.ring is not None and n.ring not in (None, c.ring))
                else n
                for n, c in zip(new_carry, carry)
            ]
            ys_steps.append(out[ncar:])
        if p["reverse"]:
            ys_steps = ys_steps[::-1]
        ys = []
        for j in range(len(eqn.outvars) - ncar):
            vals = [s[j] for s in ys_steps]
            ys.append(_V(jnp.stack([jnp.asarray(v.x) for v in vals]), vals[0].ring, False, vals[0].is_float))
        return carry + ys

    def _while(self, eqn, invals, stack):
        p = eqn.params
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        cconsts, bconsts, init = invals[:cn], invals[cn : cn + bn], invals[cn + bn :]
        rings = [v.ring for v in init]
        meta = [(v.is_float, v.const) for v in init]
        was = self._recording
        self._recording = False

        def wrapv(xs):
            return [_V(x, r, False, f) for x, r, (f, _) in zip(xs, rings, meta)]

        def cond_fn(xs):
            cj = p["cond_jaxpr"]
            return self.eval_jaxpr(cj.jaxpr, cj.consts, cconsts + wrapv(xs), stack)[0].x

        def body_fn(xs):
            bj = p["body_jaxpr"]
            outs = self.eval_jaxpr(bj.jaxpr, bj.consts, bconsts + wrapv(xs), stack)
            return [
                self.cast(o.x, o.ring, r, stack) if (o.is_float and r is not None and o.ring not in (None, r)) else jnp.asarray(o.x, jnp.asarray(x0.x).dtype)
                for o, r, x0 in zip(outs, rings, init)
            ]

        try:
            out = jax.lax.while_loop(cond_fn, body_fn, [jnp.asarray(v.x) for v in init])
        finally:
            self._recording = was
        return wrapv(out)

    def collected_stats(self) -> dict:
        """{(scope, ring str, kind): (max, n_over)} reduced over every record of the key."""
        out = {}
        for (scope, ring, kind), items in self.stats.items():
            m = functools.reduce(jnp.maximum, [i[0] for i in items])
            n = functools.reduce(jnp.add, [i[1] for i in items])
            out[(scope, str(ring), kind)] = (m, n)
        return out


# ---- the public wrapper ------------------------------------------------------------------------


@dataclasses.dataclass
class _Entry:
    closed: object
    arg_names: list
    out_tree: object
    in_dtypes: list
    out_dtypes: list
    exact_ops: set
    unrecorded: set
    arg_uses: dict
    run64: Callable  # flat float64/int inputs -> (outputs float64, stats)
    core: Callable  # custom_vjp: flat inputs -> (outputs float32, stats)


def _static_arg_uses(closed, arg_names) -> dict:
    """{argument path: scopes of the top-level ops reading it} (calls entered: their ops)."""
    names = {v: n for v, n in zip(closed.jaxpr.invars, arg_names)}
    uses: dict = {}

    def walk(jaxpr, prefix, alias):
        for eqn in jaxpr.eqns:
            stack = _join(prefix, str(eqn.source_info.name_stack))
            prim = eqn.primitive.name
            if prim in _CALL_PRIMS:
                sub = eqn.params[_CALL_PRIMS[prim]]
                inner = _join(stack, f"jit({eqn.params['name']})") if prim == "pjit" else stack
                sj = sub.jaxpr if hasattr(sub, "jaxpr") else sub
                inner_alias = {
                    iv: alias[v] for iv, v in zip(sj.invars, eqn.invars)
                    if not isinstance(v, jax.core.Literal) and v in alias
                }
                walk(sj, inner, inner_alias)
                continue
            for v in eqn.invars:
                if not isinstance(v, jax.core.Literal) and v in alias:
                    uses.setdefault(alias[v], set()).add(_join(stack, prim))

    walk(closed.jaxpr, "", names)
    return uses


def _signature(args, static_argnums):
    parts = []
    for i, a in enumerate(args):
        if i in static_argnums:
            parts.append(("static", a))
        else:
            leaves, tree = jax.tree_util.tree_flatten(a)
            parts.append((str(tree), tuple((tuple(np.shape(x)), str(getattr(x, "dtype", None) or np.asarray(x).dtype)) for x in leaves)))
    return tuple(parts)


class EmulatedFunction:
    """``fn`` under a policy's fixed-point arithmetic. Call it like ``fn``.

    * ``emulated(*args)``: differentiable JAX outputs (floats as float32);
    * ``emulated.evaluate(*args)``: float64 numpy outputs (exact emulation values);
    * ``emulated.report``: the :class:`~.report.RangeReport` accumulated over calls
      (``reset_report()`` starts a new one);
    * ``emulated.arg_uses(*args)``: {argument path: consumer scopes} (calibration uses it).
    """

    def __init__(self, fn, policy=None, options: EmulatorOptions | None = None, static_argnums=(), jit=False):
        self.fn = fn
        self.jit = bool(jit)
        self.policy = load_policy(policy)
        self.options = options or EmulatorOptions()
        self.static_argnums = tuple(static_argnums)
        self.report = RangeReport()
        self.last_call_report = RangeReport()
        self._tracing = False
        self._cache: dict = {}
        functools.update_wrapper(self, fn)

    def reset_report(self) -> RangeReport:
        old, self.report = self.report, RangeReport()
        return old

    # -- tracing -------------------------------------------------------------------------------------
    def _dynamic(self, args):
        return tuple(a for i, a in enumerate(args) if i not in self.static_argnums)

    def _entry(self, args) -> _Entry:
        key = _signature(args, self.static_argnums)
        try:
            entry = self._cache.get(key)
        except TypeError:
            entry = None
        if entry is not None:
            return entry
        with enable_x64(False):
            closed, out_shape = jax.make_jaxpr(self.fn, static_argnums=self.static_argnums, return_shape=True)(*args)
        dynamic = self._dynamic(args)
        with_path, _ = jax.tree_util.tree_flatten_with_path(dynamic)
        arg_names = [jax.tree_util.keystr(p) for p, _ in with_path]
        out_leaves, out_tree = jax.tree_util.tree_flatten(out_shape)
        in_dtypes = [v.aval.dtype for v in closed.jaxpr.invars]
        out_dtypes = [o.dtype for o in out_leaves]
        policy, options = self.policy, self.options
        entry_ref: list = []

        info: dict = {"exact_ops": set(), "unrecorded": set()}

        def interpret(flat):
            it = _Interpreter(policy, options)
            outs = it.run(closed, arg_names, flat)
            stats = it.collected_stats()
            info["exact_ops"] |= it.exact_ops
            info["unrecorded"] |= it.unrecorded
            return outs, stats

        with enable_x64():
            jitted = jax.jit(interpret) if self.jit else interpret

        def run64(flat):
            with enable_x64():
                return jitted([_to64(x) for x in flat])

        float_out = [_is_float(d) for d in out_dtypes]
        float_in = [_is_float(d) for d in in_dtypes]
        fidx = [i for i, f in enumerate(float_in) if f]

        def _vjp64(xs, cts):
            def f_of_floats(*fl):
                full = list(xs)
                for i, v in zip(fidx, fl):
                    full[i] = v
                outs, _ = interpret(full)
                return [o for o, f in zip(outs, float_out) if f]

            _, vjp = jax.vjp(f_of_floats, *[xs[i] for i in fidx])
            return vjp(list(cts))

        with enable_x64():
            vjp_jitted = jax.jit(_vjp64) if self.jit else _vjp64

        out_structs = [
            jax.ShapeDtypeStruct(o.shape, jnp.float32 if f else o.dtype)
            for o, f in zip(out_leaves, float_out)
        ]
        dyn_leaves = jax.tree_util.tree_leaves(dynamic)
        grad_structs = [
            jax.ShapeDtypeStruct(np.shape(dyn_leaves[i]), in_dtypes[i]) for i in fidx
        ]
        emulated = self

        # The float64 work runs on the host (pure_callback) so that neither the caller's
        # x64 setting nor an enclosing jit / grad ever sees a float64 value.
        def host_forward(*flat):
            outs, stats = run64(flat)
            call = emulated._absorb(entry_ref[0], stats)
            emulated.last_call_report = call
            if emulated.options.mode == "raise" and emulated._tracing:
                raise_on_overflow(call)
            return [np.asarray(o, np.float32) if f else np.asarray(o) for o, f in zip(outs, float_out)]

        def host_backward(*flat_and_cts):
            flat, cts = flat_and_cts[: len(in_dtypes)], flat_and_cts[len(in_dtypes) :]
            with enable_x64():
                grads = vjp_jitted([_to64(x) for x in flat], [jnp.asarray(c, jnp.float64) for c in cts])
            return [np.asarray(g, in_dtypes[i]) for g, i in zip(grads, fidx)]

        @jax.custom_vjp
        def core(*flat):
            return jax.pure_callback(host_forward, out_structs, *flat)

        def core_fwd(*flat):
            return core(*flat), flat

        def core_bwd(flat, out_cts):
            cts = [c for c, f in zip(out_cts, float_out) if f]
            grads = jax.pure_callback(host_backward, grad_structs, *flat, *cts) if fidx else []
            res = [None] * len(flat)
            for i, g in zip(fidx, grads):
                res[i] = g
            return tuple(res)

        core.defvjp(core_fwd, core_bwd)
        entry = _Entry(
            closed, arg_names, out_tree, in_dtypes, out_dtypes,
            info["exact_ops"], info["unrecorded"], _static_arg_uses(closed, arg_names),
            run64, core,
        )
        entry_ref.append(entry)
        try:
            self._cache[key] = entry
        except TypeError:
            pass
        return entry

    # -- recording -------------------------------------------------------------------------------
    def _absorb(self, entry: _Entry, stats: dict) -> RangeReport:
        call = RangeReport()
        for (scope, ring, kind), (m, n) in stats.items():
            call.add(scope, RingSpec.parse(ring), kind, float(np.asarray(m)), int(np.asarray(n)))
        call.exact_ops |= entry.exact_ops
        call.unrecorded |= entry.unrecorded
        self.report.merge(call)
        return call

    # -- calling ---------------------------------------------------------------------------------
    def evaluate(self, *args):
        """Outputs as float64 numpy arrays (``fn``'s structure); updates ``report``.
        Not differentiable: use the call for that."""
        entry = self._entry(args)
        flat = jax.tree_util.tree_leaves(self._dynamic(args))
        outs, stats = entry.run64(flat)
        self.last_call_report = call = self._absorb(entry, stats)
        if self.options.mode == "raise":
            raise_on_overflow(call)
        return jax.tree_util.tree_unflatten(entry.out_tree, [np.asarray(o) for o in outs])

    def __call__(self, *args):
        entry = self._entry(args)
        flat = jax.tree_util.tree_leaves(self._dynamic(args))
        self._tracing = any(isinstance(x, jax.core.Tracer) for x in flat)
        outs = entry.core(*flat)
        if not self._tracing and self.options.mode == "raise":
            raise_on_overflow(self.last_call_report)
        return jax.tree_util.tree_unflatten(entry.out_tree, list(outs))

    def arg_uses(self, *args) -> dict:
        """{argument path: set of scopes of the ops that read it} for these argument shapes."""
        return self._entry(args).arg_uses

    def arg_names(self, *args) -> list:
        return list(self._entry(args).arg_names)

    def jaxpr(self, *args):
        return self._entry(args).closed


def raise_on_overflow(report: RangeReport, *, margin_bits: float = 0.0, fields: Sequence[str] | None = None):
    """Raise :class:`RingOverflowError` if a record of ``report`` has less than
    ``margin_bits`` of headroom (only rings of ``fields``, e.g. ``("FM32",)``, if given)."""
    bad = sorted(
        (r for r in report.records if r.headroom_bits < margin_bits and (fields is None or r.ring.field in fields)),
        key=lambda r: r.headroom_bits,
    )
    if not bad:
        return
    w = bad[0]
    what = "product before truncation" if w.kind == "product" else w.kind
    more = f" (and {len(bad) - 1} more: {', '.join(sorted({b.scope for b in bad[1:6]}))}...)" if len(bad) > 1 else ""
    margin = f" with {margin_bits:g} bit(s) of margin" if margin_bits else ""
    raise RingOverflowError(
        f"{w.scope}: {what} |v| up to {w.max_abs:.6g} does not fit {w.ring}{margin} "
        f"(limit {w.limit * 2.0 ** -margin_bits:.6g}; {w.n_over} element(s) at or over the ring's "
        f"limit {w.limit:.6g}){more}. Give this scope fewer fraction bits (ditto-spu calibrate) "
        f"or a wider ring.",
        bad,
    )


def emulate(fn, policy=None, *, options: EmulatorOptions | None = None, static_argnums=(), jit: bool = False) -> EmulatedFunction:
    """``fn`` evaluated with the fixed-point arithmetic the rings of ``policy`` give it.

    ``policy``: a :class:`~ditto_spu.policy.Policy`, a JSON path, a config name or None
    (default policy). ``options``: :class:`EmulatorOptions` (mode wrap/raise/record, ...).
    Returns an :class:`EmulatedFunction`; its ``report`` holds the per-scope maxima.

    ``jit``: compile the float64 interpretation with XLA (worth it for many calls with the
    same shapes, e.g. distillation: a tiny BERT takes ~30 s to compile, then ~0.03 s per
    call) instead of evaluating it op by op (default: the first call of a shape compiles
    each small kernel once, ~10 s for a tiny BERT, shared by every emulator in the
    process; then ~0.2 s per call).
    """
    return EmulatedFunction(fn, policy, options, static_argnums, jit)
