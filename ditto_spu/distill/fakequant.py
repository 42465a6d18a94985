"""A fast, jit-native fixed-point model for training: :func:`fake_quant`.

Why it exists: :func:`ditto_spu.quant.emulate` is the reference model of what the rings
compute (float64, range checks, wrap-around, host callbacks). On MiniLM (batch 32 ×
seq 64) one emulated forward takes ~13 s on 2 cores and the first one ~150 s of compile,
so a gradient step costs tens of seconds: too slow for a ≤ 20 minute distillation.
``fake_quant(fn, policy)`` re-evaluates ``fn``'s jaxpr in float32 inside the caller's jit
with the same ring rules as the emulator, minus what does not matter for training:

* each op runs in the widest ring of its float results (``policy.ring_for(dtype, scope)``,
  scopes built like the emulator's), operands in another ring are cast (rounded to
  nearest when losing fraction bits), constants are encoded toward zero;
* products (``mul``, ``dot_general``, ``square``, ``integer_pow``) are rounded to the
  ring's grid (the mean of SPU's truncation); exp, division, rsqrt use SPU's algorithms
  from :mod:`ditto_spu.quant.fxp` (Taylor exp, Goldschmidt, rsqrt polynomial); other
  transcendentals are exact then rounded;
* NOT modelled: wrap-around (the emulator reports and wraps), float64 exactness of
  FXP64 values (float32 keeps 24 significant bits: below FXP64's 2^-18 grid only for
  |x| ≥ 64), the denominator-broadcast rewrite of divisions.

Ranges: with ``ranges=True`` the wrapped function returns ``(outputs, RangeTaps)``: for
every value, product (before truncation), cast and secret input in a ring of at most
``range_bits`` bits (FXP32 by default), the largest magnitude seen (per scope and kind,
the emulator's :mod:`~ditto_spu.quant.report` rules and limits) and a differentiable
penalty ``Σ relu(|v| / L − 1)²`` over the elements above ``L = limit / 2^margin_bits``.
Adding the penalty to a training loss keeps the trained model inside the policy's rings
(what the secure run needs: there a value past the limit wraps).

Every rounding is straight-through (forward: ring value; backward: the exact op's
gradient), so ``jax.grad`` of a loss through ``fake_quant(fn, policy)`` is the QAD
gradient. Accuracy claims are made with the reference emulator, never with this.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..policy import load_policy
from ..quant import fxp
from ..quant.fxp import Fxp
from ..quant.report import limit_of

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
_PRODUCTS = {"mul", "dot_general", "square"}
_LOW_FLOATS = ("float16", "bfloat16")


def _is_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def _f32(dtype):
    return jnp.float32 if _is_float(dtype) else dtype


def _fix_params(params: dict) -> dict:
    p = dict(params)
    for key in ("new_dtype", "dtype", "preferred_element_type"):
        if key in p and p[key] is not None and _is_float(p[key]):
            p[key] = jnp.float32
    return p


def _bind(eqn, xs):
    out = eqn.primitive.bind(*xs, **_fix_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]


def _join(*parts) -> str:
    return "/".join(p for p in parts if p)


class _Val:
    __slots__ = ("x", "ring", "const")

    def __init__(self, x, ring, const):
        self.x, self.ring, self.const = x, ring, const


@jax.tree_util.register_pytree_node_class
class RangeTaps:
    """What ``fake_quant(..., ranges=True)`` reports next to the outputs (a pytree):
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


class _FakeQuant:
    def __init__(self, policy, exp_iters: int, div_iters: int, ranges=None):
        self.policy = policy
        self.exp_iters = exp_iters
        self.div_iters = div_iters
        self._rings: dict = {}
        self.ranges = ranges  # None, or (range_bits, margin_bits)
        self.penalty = jnp.zeros((), jnp.float32)
        self.max_abs: dict = {}
        self.index: dict = {}

    def tap(self, scope, ring, kind, x):
        """Record ``x`` (a value in ``ring``) against its limit; add its excess to the penalty."""
        if self.ranges is None or ring is None or ring.bits > self.ranges[0]:
            return
        x = jnp.asarray(x)
        if x.size == 0 or not _is_float(x.dtype):
            return
        limit = limit_of(ring, kind)
        a = jnp.abs(x.astype(jnp.float32))
        excess = jax.nn.relu(a * (2.0 ** self.ranges[1] / limit) - 1.0)
        self.penalty = self.penalty + jnp.sum(excess * excess)
        key = (scope, kind)
        m = jnp.max(jax.lax.stop_gradient(a))
        self.max_abs[key] = jnp.maximum(self.max_abs[key], m) if key in self.max_abs else m
        self.index[key] = (ring, limit)

    def ring_for(self, dtype, scope):
        key = (str(jnp.dtype(dtype)), scope)
        if key not in self._rings:
            self._rings[key] = self.policy.ring_for(key[0], scope)
        return self._rings[key]

    @staticmethod
    def widest(rings):
        rings = [r for r in rings if r is not None]
        return max(rings, key=lambda r: (r.bits, r.frac_bits)) if rings else None

    def eval_jaxpr(self, jaxpr, consts, args, prefix):
        env = {}

        def read(v):
            if isinstance(v, jax.core.Literal):
                val = np.asarray(v.val)
                return _Val(val.astype(np.float32) if _is_float(val.dtype) else val, None, True)
            return env[v]

        for var, c in zip(jaxpr.constvars, consts):
            c = np.asarray(c)
            env[var] = _Val(c.astype(np.float32) if _is_float(c.dtype) else c, None, True)
        for var, a in zip(jaxpr.invars, args):
            env[var] = a
        for eqn in jaxpr.eqns:
            outs = self.eval_eqn(eqn, [read(v) for v in eqn.invars], prefix)
            for var, o in zip(eqn.outvars, outs):
                if not isinstance(var, jax.core.DropVar):
                    env[var] = o
        return [read(v) for v in jaxpr.outvars]

    def eval_eqn(self, eqn, invals, prefix):
        prim = eqn.primitive.name
        stack = _join(prefix, str(eqn.source_info.name_stack))
        if prim in _CALL_PRIMS:
            sub = eqn.params[_CALL_PRIMS[prim]]
            inner = _join(stack, f"jit({eqn.params['name']})") if prim == "pjit" else stack
            jaxpr, consts = (sub.jaxpr, sub.consts) if hasattr(sub, "jaxpr") else (sub, ())
            return self.eval_jaxpr(jaxpr, consts, invals, inner)
        if any(isinstance(p, (jax.core.Jaxpr, jax.core.ClosedJaxpr)) for p in eqn.params.values()):
            raise NotImplementedError(
                f"fake_quant: primitive {prim!r} at {stack or 'top level'} carries a sub-program "
                "(cond / scan / while): use ditto_spu.quant.emulate for such functions"
            )
        scope = _join(stack, prim)
        out_float = [_is_float(v.aval.dtype) for v in eqn.outvars]
        if all(v.const for v in invals):  # public computation: exact
            return [_Val(o, None, True) for o in _bind(eqn, [v.x for v in invals])]
        ring = self.widest(self.ring_for(v.aval.dtype, scope) for v, f in zip(eqn.outvars, out_float) if f)
        in_float = [v.ring is not None or (v.const and _is_float(jnp.result_type(v.x))) for v in invals]
        if ring is None:
            ring = self.widest(v.ring for v in invals)
        xs = []
        for v, is_f in zip(invals, in_float):
            x = v.x
            if ring is not None and is_f:
                if v.const:
                    x = jnp.trunc(jnp.asarray(x, jnp.float32) * 2.0**ring.frac_bits) / 2.0**ring.frac_bits
                elif v.ring != ring:
                    if v.ring.frac_bits > ring.frac_bits:
                        x = fxp.round_to(x, ring.frac_bits, "nearest")
                    self.tap(scope, ring, "cast", x)
            xs.append(x)
        if ring is None or not any(in_float):
            outs = _bind(eqn, xs)
        else:
            outs = self.compute(eqn, prim, xs, invals, ring, scope)
            for o, f in zip(outs, out_float):
                if f:
                    self.tap(scope, ring, "value", o)
        return [_Val(o, ring if f else None, False) for o, f in zip(outs, out_float)]

    def product(self, F, ring, scope, out):
        self.tap(scope, ring, "product", out)
        return F.q(out)

    def compute(self, eqn, prim, xs, invals, ring, scope):
        F = Fxp(ring.frac_bits, "nearest")
        if prim in _PRODUCTS:
            return [self.product(F, ring, scope, o) for o in _bind(eqn, xs)]
        if prim == "integer_pow":
            y = eqn.params["y"]
            if y < 0:
                return [F.q(o) for o in _bind(eqn, xs)]
            acc, base, n = None, xs[0], y
            while n:
                if n & 1:
                    acc = base if acc is None else self.product(F, ring, scope, acc * base)
                n >>= 1
                if n:
                    base = self.product(F, ring, scope, base * base)
            return [jnp.ones_like(xs[0]) if acc is None else acc]
        if prim == "exp":
            return [F.exp_taylor(xs[0], self.exp_iters)]
        if prim == "div":
            a, b = xs
            if invals[1].const:
                c = np.asarray(invals[1].x, np.float64)
                if c.size == 1:
                    return [F.divide_by_public(a, float(c.reshape(-1)[0]))]
            return [F.divide(a, b, self.div_iters)]
        if prim == "rsqrt":
            return [F.rsqrt(xs[0])]
        if prim == "convert_element_type" and _is_float(eqn.params["new_dtype"]):
            return [F.q(o) for o in _bind(eqn, xs)]  # a down-cast rounds, an up-cast is exact
        outs = _bind(eqn, xs)
        if prim in ("tanh", "sqrt", "log", "log1p", "logistic", "erf", "erf_inv", "sin", "cos", "pow", "expm1"):
            outs = [F.q(o) if _is_float(o.dtype) else o for o in outs]
        return outs


def fake_quant(
    fn: Callable,
    policy=None,
    *,
    exp_iters: int = 5,
    div_iters: int = 2,
    ranges: bool = False,
    range_bits: int = 32,
    margin_bits: float = 1.0,
) -> Callable:
    """``fn`` (traced with its own dtypes) re-evaluated in float32 with the ring arithmetic of
    ``policy`` (a :class:`~ditto_spu.policy.Policy`, JSON path, config name or None for the
    default), straight-through gradients. Usable inside ``jax.jit`` / ``jax.grad``.
    ``exp_iters`` / ``div_iters``: SPU's Taylor exp iterations and Goldschmidt iterations
    (the emulator's defaults). ``ranges``: also return a :class:`RangeTaps` for the rings of
    at most ``range_bits`` bits, penalising values within ``margin_bits`` of their limit.
    See the module docstring for what is and is not modelled.
    """
    policy = load_policy(policy)
    cache: dict = {}

    def wrapped(*args):
        leaves, in_tree = jax.tree_util.tree_flatten(args)
        key = (in_tree, tuple((np.shape(x), str(jnp.result_type(x))) for x in leaves))
        if key not in cache:
            structs = jax.tree_util.tree_unflatten(
                in_tree, [jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)) for x in leaves]
            )
            closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*structs)
            with_path, _ = jax.tree_util.tree_flatten_with_path(structs)
            names = [jax.tree_util.keystr(p) for p, _ in with_path]
            cache[key] = (closed, jax.tree_util.tree_structure(out_shape), names)
        closed, out_tree, names = cache[key]
        interp = _FakeQuant(policy, exp_iters, div_iters, (range_bits, margin_bits) if ranges else None)
        args_v = []
        for var, name, x in zip(closed.jaxpr.invars, names, leaves):
            if _is_float(var.aval.dtype):
                ring = interp.ring_for(var.aval.dtype, name)
                x = fxp.round_to(jnp.asarray(x, jnp.float32), ring.frac_bits, "nearest")
                interp.tap(name, ring, "input", x)
                args_v.append(_Val(x, ring, False))
            else:
                args_v.append(_Val(x, None, False))
        outs = interp.eval_jaxpr(closed.jaxpr, closed.consts, args_v, "")
        result = jax.tree_util.tree_unflatten(out_tree, [o.x for o in outs])
        if ranges:
            return result, RangeTaps(interp.penalty, interp.max_abs, interp.index)
        return result

    wrapped.policy = policy  # type: ignore[attr-defined]
    return wrapped
