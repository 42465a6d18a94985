"""THE fixed-point interpreter: a jaxpr evaluated with the arithmetic of its rings.

One interpreter serves the emulator (:class:`~.arith.CheckedArithmetic`: float64, wrap /
raise / record, range report) and the training model (:class:`~.arith.TrainingArithmetic`:
float32 in the caller's jit, straight-through gradients, range taps). It follows the
compiler's decisions equation by equation:

* **rings**: the rule of :mod:`.rules`, under the scope the StableHLO op carries (jax's
  name stack, nested ``jit``\\ s as ``jit(name)``, plus the op's name,
  :func:`~.rules.hlo_op_name`). Every float-touching equation outside a region is logged
  in :attr:`Interpreter.op_rings` as (scope, ring), one to one with the ops
  :mod:`passes.annotate_rings` places, so the two can be compared;
* **control flow** (``while``, ``scan``, ``cond``): one ring for the whole op, the widest
  of everything it defines, as the compiler places it; the body computes in that ring.
  ``cond`` evaluates every branch and selects (what SPU does with a secret predicate);
  ``scan`` is unrolled; ``while`` runs as ``lax.while_loop`` (its records cannot leave the
  loop: its scopes are listed as unrecorded);
* **casts**: an operand from another ring goes through the registered cast kernel's own
  emulation (:meth:`~ditto_spu.kernels.base.CastKernel.emulate`);
* **kernels**: a ``dot_general`` that :func:`ditto_spu.kernels.matmul.selects` accepts is
  evaluated by that kernel's emulation; a product ``convert(x ≷ c) · y`` that the compiler
  hands to :mod:`ditto_spu.kernels.threshold_select` exactly (the 0/1 indicator is an
  integer share: no truncation, no product record); other products as SPU computes them
  (exact at 2^(2f), truncated);
* **SPU's rewrites and algorithms**: ``x / broadcast(y)`` → ``x · broadcast(1/y)`` (the
  compiler option our segments set), division by a public constant as a product with its
  encoded inverse, and exp / division / reciprocal / rsqrt / sqrt / tanh / logistic / log
  / log1p / erf / expm1 / sin / cos / atan2 / pow by SPU's own algorithms
  (:data:`SPU_ALGORITHMS`, models in :class:`~.fxp.Fxp`); any other transcendental is
  computed exactly and rounded, and listed in :attr:`Interpreter.exact_ops`.

Public constants (literals, captured constants, ops on constants only) are computed
exactly and encoded toward zero in the ring of the op using them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..policy import Policy
from ..rings import RingSpec
from .arith import Arithmetic, SemanticsError
from .rules import argument_ring, hlo_op_name, op_ring


@dataclasses.dataclass(frozen=True)
class SpuSemantics:
    """The SPU settings the semantics depends on (defaults: our runtimes' settings,
    :class:`~ditto_spu.spu_config.SpuOptions`, and the segments' compiler options).

    ``nonlinear``: ``"spu"`` (SPU's algorithms) or ``"exact"`` (exact result rounded to
    the ring: the error of the rings alone). ``kernels``: whether FXP32 matmuls run as
    our kernel (``compile(..., kernels=...)``)."""

    exp_iters: int = 5
    div_iters: int = 2
    denominator_broadcast: bool = True
    nonlinear: str = "spu"
    kernels: bool = True

    def __post_init__(self):
        if self.nonlinear not in ("spu", "exact"):
            raise SemanticsError(f"nonlinear must be 'spu' or 'exact', got {self.nonlinear!r}")


CALL_PRIMITIVES = {
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
}
CONTROL_FLOW = ("cond", "scan", "while")

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

# Ops SPU computes with an algorithm of its own: (Fxp of the ring, operands, SpuSemantics)
# -> SPU's result (models in :mod:`.fxp`, each checked against secure runs in
# tests/semantics/test_spu_algorithms.py).
SPU_ALGORITHMS = {
    "exp": lambda F, xs, s: F.exp_taylor(xs[0], s.exp_iters),
    "rsqrt": lambda F, xs, s: F.rsqrt(xs[0]),
    "sqrt": lambda F, xs, s: F.sqrt(xs[0]),
    "tanh": lambda F, xs, s: F.tanh(xs[0]),
    "logistic": lambda F, xs, s: F.logistic(xs[0], s.exp_iters, s.div_iters),
    "log": lambda F, xs, s: F.log(xs[0]),
    "log1p": lambda F, xs, s: F.log1p(xs[0]),
    "erf": lambda F, xs, s: F.erf(xs[0], s.div_iters),
    "expm1": lambda F, xs, s: F.expm1(xs[0], s.exp_iters),
    "sin": lambda F, xs, s: F.sin(xs[0]),
    "cos": lambda F, xs, s: F.cos(xs[0]),
    "atan2": lambda F, xs, s: F.atan2(xs[0], xs[1], s.div_iters),
    "pow": lambda F, xs, s: F.pow(xs[0], xs[1]),
}

_PRODUCTS = ("mul", "dot_general", "square")
_THRESHOLD_COMPARISONS = ("ge", "gt", "lt", "le")  # x ≷ c: a threshold select's step


def is_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def join_scope(*parts) -> str:
    return "/".join(p for p in parts if p)


def uses_fxp32(jaxpr, policy: Policy) -> bool:
    """Whether a program has values in an FXP32 ring: a float16/bfloat16 value anywhere
    (sub-programs included) whose dtype the policy maps to FXP32 somewhere (its base ring
    or an override). The compiler's twin: :func:`passes.select_kernels.is_mixed`."""
    low = {"float16", "bfloat16"}
    fm32 = {d for d in low if policy.base_ring(d).field == "FM32"}
    for o in policy.overrides:
        fm32.update(d for d, r in o.rings if d in low and r.field == "FM32")
    if not fm32:
        return False

    def walk(j) -> bool:
        for v in list(j.invars) + list(j.constvars):
            if str(v.aval.dtype) in fm32:
                return True
        for eqn in j.eqns:
            if any(str(v.aval.dtype) in fm32 for v in eqn.outvars):
                return True
            for sub in _sub_jaxprs(eqn):
                if walk(sub.jaxpr if hasattr(sub, "jaxpr") else sub):
                    return True
        return False

    return walk(jaxpr)


def call_body(eqn):
    """(jaxpr, consts, inner name-stack prefix part) of a call-like equation."""
    sub = eqn.params[CALL_PRIMITIVES[eqn.primitive.name]]
    jaxpr, consts = (sub.jaxpr, sub.consts) if hasattr(sub, "jaxpr") else (sub, ())
    inner = f"jit({eqn.params['name']})" if eqn.primitive.name == "pjit" else ""
    return jaxpr, consts, inner


def _sub_jaxprs(eqn):
    for p in eqn.params.values():
        items = p if isinstance(p, (tuple, list)) else (p,)
        for q in items:
            if isinstance(q, jax.core.ClosedJaxpr):
                yield q.jaxpr
            elif isinstance(q, jax.core.Jaxpr):
                yield q


def defined_float_dtypes(eqn) -> list:
    """Float dtypes an equation defines: its results and, for one with sub-programs,
    every result inside them (what the compiler sees inside the op's regions)."""
    out = [str(v.aval.dtype) for v in eqn.outvars if is_float(v.aval.dtype)]
    stack = list(_sub_jaxprs(eqn))
    while stack:
        j = stack.pop()
        for e in j.eqns:
            out.extend(str(v.aval.dtype) for v in e.outvars if is_float(v.aval.dtype))
            stack.extend(_sub_jaxprs(e))
    return out


@dataclasses.dataclass
class Val:
    """A value during interpretation: array (arith.dtype for floats), ring, constness."""

    x: object
    ring: Optional[RingSpec]
    const: bool
    is_float: bool


def _from_non_float(var, producers) -> bool:
    """The jaxpr twin of :func:`passes.select_kernels.from_non_float`."""
    while isinstance(var, jax.core.Var) and var in producers:
        eqn = producers[var]
        name = eqn.primitive.name
        if name in ("broadcast_in_dim", "reshape"):
            var = eqn.invars[0]
            continue
        if name == "convert_element_type":
            return not is_float(eqn.invars[0].aval.dtype)
        return False
    return False


class Interpreter:
    """Evaluates a closed jaxpr under ``policy`` with ``arith`` (see the module doc)."""

    def __init__(self, policy: Policy, arith: Arithmetic, spu: SpuSemantics | None = None):
        self.policy = policy
        self.arith = arith
        self.spu = spu or SpuSemantics()
        self.op_rings: list = []  # (scope, ring) per float-touching op, program order
        self.exact_ops: set = set()
        self.kernel_calls: list = []  # (scope, kernel name)
        self._var_rings: dict = {}  # jaxpr var -> ring of its value (kernel selection rules)
        self._max_kernel_outs: set = set()  # vars computed by the max / clamp kernels
        self._exp_kernel_outs: set = set()  # vars computed by the softmax exp kernel
        self._thresholds: dict = {}  # bool var of `x ≷ c` -> (x var, x, c as encoded, ring)
        self._region_depth = 0  # > 0 inside a loop or cond body, where SPU runs every op
        self._forced: Optional[RingSpec] = None  # ring of an enclosing control-flow op
        self._ring_cache: dict = {}
        self.mixed = False  # the program has FXP32 values (set by run)

    # -- entry ----------------------------------------------------------------------------
    def run(self, closed, arg_names, inputs) -> list:
        """Encode the inputs in their rings, evaluate, return the output arrays."""
        self.mixed = uses_fxp32(closed.jaxpr, self.policy)
        args = []
        for var, name, x in zip(closed.jaxpr.invars, arg_names, inputs):
            if is_float(var.aval.dtype):
                ring = argument_ring(self.policy, str(var.aval.dtype), name)
                args.append(Val(self.arith.encode_input(x, ring, name), ring, False, True))
            else:
                args.append(Val(x, None, False, False))
        try:
            return [o.x for o in self.eval_jaxpr(closed.jaxpr, closed.consts, args, "")]
        finally:
            self._thresholds.clear()  # operands held for the products that follow: this run's only

    # -- jaxpr walking ----------------------------------------------------------------------
    def _literal(self, val) -> Val:
        val = np.asarray(val)
        f = is_float(val.dtype)
        return Val(val.astype(self.arith.dtype) if f else val, None, True, f)

    def eval_jaxpr(self, jaxpr, consts, args, prefix) -> list:
        env: dict = {}
        producers: dict = {}

        def read(v):
            if isinstance(v, jax.core.Literal):
                return self._literal(v.val)
            return env[v]

        for var, c in zip(jaxpr.constvars, consts):
            env[var] = self._literal(c)
        for var, a in zip(jaxpr.invars, args):
            env[var] = a
        for eqn in jaxpr.eqns:
            outs = self.eval_eqn(eqn, [read(v) for v in eqn.invars], prefix, producers)
            for var, o in zip(eqn.outvars, outs):
                if not isinstance(var, jax.core.DropVar):
                    env[var] = o
                    producers[var] = eqn
                    self._var_rings[var] = o.ring
        return [read(v) for v in jaxpr.outvars]

    def ring_of(self, eqn, scope, invals) -> Optional[RingSpec]:
        if self._forced is not None:
            return self._forced
        key = (scope, tuple(defined_float_dtypes(eqn)), tuple(v.ring for v in invals if v.is_float))
        if key not in self._ring_cache:
            self._ring_cache[key] = op_ring(self.policy, scope, key[1], key[2])
        return self._ring_cache[key]

    def eval_eqn(self, eqn, invals, prefix, producers) -> list:
        prim = eqn.primitive.name
        stack = join_scope(prefix, str(eqn.source_info.name_stack))
        if prim in CALL_PRIMITIVES:
            jaxpr, consts, inner = call_body(eqn)
            return self.eval_jaxpr(jaxpr, consts, invals, join_scope(stack, inner))
        if prim not in CONTROL_FLOW and prim != "reduce" and any(True for _ in _sub_jaxprs(eqn)):
            raise SemanticsError(
                f"primitive {prim!r} at {stack or 'top level'} carries a sub-program the fixed-point "
                "semantics does not know how to enter; compute it without it"
            )
        scope = join_scope(stack, hlo_op_name(prim))
        out_float = [is_float(v.aval.dtype) for v in eqn.outvars]
        if all(v.const for v in invals):  # public computation: exact, encoded where used
            outs = self._bind(eqn, [v.x for v in invals])
            return [Val(o, None, True, f) for o, f in zip(outs, out_float)]

        ring = self.ring_of(eqn, scope, invals)
        if ring is not None and self._forced is None:
            self.op_rings.append((scope, ring))
        xs = []
        for v in invals:
            x = v.x
            if v.is_float and ring is not None:
                if v.const:
                    x = self.arith.encode_const(x, ring, scope)
                elif v.ring != ring:
                    x = self.arith.cast(x, v.ring, ring, scope)
            elif v.const:
                x = jnp.asarray(x)
            xs.append(x)

        if prim in CONTROL_FLOW:
            return self._control_flow(eqn, prim, xs, invals, ring, scope)
        if ring is None or not any(v.is_float for v in invals):
            outs = self._bind(eqn, xs)
        else:
            outs = self.compute(eqn, prim, xs, invals, ring, scope, producers)
        result = []
        for o, f in zip(outs, out_float):
            if f and ring is not None:
                result.append(Val(self.arith.fit(o, ring, scope), ring, False, True))
            else:
                result.append(Val(o, ring if f else None, False, f))
        return result

    def _bind(self, eqn, xs) -> list:
        p = dict(eqn.params)
        for key in ("new_dtype", "dtype", "preferred_element_type"):
            if key in p and p[key] is not None and is_float(p[key]):
                p[key] = self.arith.dtype
        out = eqn.primitive.bind(*xs, **p)
        return list(out) if eqn.primitive.multiple_results else [out]

    # -- arithmetic -----------------------------------------------------------------------------
    def compute(self, eqn, prim, xs, invals, ring, scope, producers) -> list:
        if prim in ("reduce_max", "max"):
            self._max_kernel(eqn, prim, xs, invals, ring, scope)
        if prim == "reduce_sum":
            self._sum_kernel(invals, ring, scope)
        if prim in _THRESHOLD_COMPARISONS:
            self._note_threshold(eqn, xs, invals, ring)
        if prim in _EXACT_PRIMS:
            return self._bind(eqn, xs)
        a = self.arith
        F = a.fxp(ring)
        if prim == "dot_general" and self._kernel_selected(eqn, invals, ring):
            from ..kernels import matmul

            self.kernel_calls.append((scope, matmul.NAME))
            return [matmul.emulate(a, self._bind(eqn, xs)[0], ring, scope)]
        if prim == "mul":
            selected = self._threshold_select(eqn, xs, invals, ring, scope, producers)
            if selected is not None:
                return [selected]
        if prim in ("mul", "square", "integer_pow"):
            self._multiply_kernel(eqn, prim, invals, ring, scope, producers)
        if prim in ("mul", "dot_general"):
            return [a.product(self._bind(eqn, xs)[0], ring, scope)]
        if prim == "square":
            return [a.product(xs[0] * xs[0], ring, scope)]
        if prim == "integer_pow":
            return [self._integer_pow(xs[0], eqn.params["y"], ring, scope)]
        if prim == "div":
            return [self._div(eqn, xs, invals, ring, scope, producers)]
        if prim == "rsqrt":
            self._rsqrt_kernel(xs, invals, ring, scope)
        if prim == "exp" and self._exp_kernel_selected(eqn, ring, producers):
            from ..kernels import exp_taylor

            self.kernel_calls.append((scope, exp_taylor.NAME))
            self._exp_kernel_outs.add(eqn.outvars[0])
            return [exp_taylor.emulate(a, xs[0], scope)]
        if prim in SPU_ALGORITHMS and self.spu.nonlinear == "spu":
            out = SPU_ALGORITHMS[prim](F, xs, self.spu)
            if prim == "exp":
                a.check_range(scope, ring, "product", out)  # the last squaring, before truncation
            return [out]
        if any(is_float(o.aval.dtype) for o in eqn.outvars):
            self.exact_ops.add(prim)
            return [F.q(o) if is_float(o.dtype) else o for o in self._bind(eqn, xs)]
        return self._bind(eqn, xs)

    def _kernels_on(self) -> bool:
        """Whether ops here may run as our kernels: kernels are on, and the op is not in a
        loop or cond body (the compiler leaves those regions to SPU whole)."""
        return self.spu.kernels and self._region_depth == 0

    def _max_kernel(self, eqn, prim, xs, invals, ring, scope) -> None:
        """A max the compiler hands to a reduced-ring kernel (the rule of
        :func:`ditto_spu.kernels.reduce_max.selects`): its result is the exact max, as
        computed by the caller; here its bound is checked and the call recorded."""
        if not self._kernels_on() or ring is None or ring.field != "FM32":
            return
        from ..kernels import reduce_max

        bound_for = getattr(self.policy, "bound_for", None)
        bound = bound_for(scope) if bound_for is not None else None
        if prim == "reduce_max":
            if len(eqn.params["axes"]) != 1 or invals[0].const:
                return
            x, kernel = xs[0], reduce_max.MAX_NAME
        else:
            secret = [i for i, v in enumerate(invals) if not v.const]
            if len(secret) != 1:
                return
            other = xs[1 - secret[0]]
            x, kernel = xs[secret[0]] - other, reduce_max.CLAMP_NAME
        if not reduce_max.selects(ring, bound=bound, secret=True, float_operand=invals[0].is_float):
            return
        self.kernel_calls.append((scope, kernel))
        self._max_kernel_outs.add(eqn.outvars[0])
        reduce_max.check_bound(self.arith, x, bound, ring, scope, kernel)

    def _note_threshold(self, eqn, xs, invals, ring) -> None:
        """Remember a comparison of a secret float value with a scalar public constant
        (either side): a product with its converted result may be a threshold select."""
        if not self.mixed or not self._kernels_on():
            return  # the rule never applies here: hold nothing
        secret = [i for i, v in enumerate(invals) if not v.const]
        if len(secret) != 1 or not invals[secret[0]].is_float or jnp.ndim(invals[1 - secret[0]].x) != 0:
            return
        i = secret[0]
        self._thresholds[eqn.outvars[0]] = (eqn.invars[i], xs[i], xs[1 - i], ring)

    def _threshold_select(self, eqn, xs, invals, ring, scope, producers):
        """The rule of :func:`passes.select_kernels._select_thresholds` on the jaxpr: ``y ·
        convert(x ≷ c)`` (either order) with x and y secret floats of the product's ring
        (neither a converted boolean or integer) and a comparison bound for the scope that
        :func:`ditto_spu.kernels.threshold_select.selects` accepts. Returns the exact
        product (the kernel multiplies by an integer 0/1 share, no truncation; its step is
        modelled exact, see the kernel's window below c) after recording the call and
        checking |x − c| against the bound; else None."""
        from ..kernels import reduce_max, threshold_select

        if not self._kernels_on():
            return None
        bound_for = getattr(self.policy, "bound_for", None)
        for i in (0, 1):
            var = eqn.invars[i]
            convert = producers.get(var) if isinstance(var, jax.core.Var) else None
            if convert is None or convert.primitive.name != "convert_element_type":
                continue
            flag = convert.invars[0]
            found = self._thresholds.get(flag) if isinstance(flag, jax.core.Var) else None
            if found is None or flag.aval.dtype != jnp.bool_:
                continue
            x_var, x, c, compare_ring = found
            y_var, y = eqn.invars[1 - i], invals[1 - i]
            if y.const or not y.is_float or compare_ring != ring:
                continue
            if _from_non_float(y_var, producers) or _from_non_float(x_var, producers):
                continue
            bound = bound_for(scope) if bound_for is not None else None
            if not threshold_select.selects(ring, mixed=self.mixed, bound=bound, secret=True, float_operand=True):
                continue
            self.kernel_calls.append((scope, threshold_select.NAME))
            reduce_max.check_bound(self.arith, x - c, bound, ring, scope, threshold_select.NAME)
            return xs[i] * xs[1 - i]
        return None

    def _sum_kernel(self, invals, ring, scope) -> None:
        """A sum the compiler hands to :mod:`ditto_spu.kernels.local_sum`: the same exact
        sum (computed by the caller); only the call is recorded."""
        from ..kernels import local_sum

        if self._kernels_on() and local_sum.selects(
            ring, mixed=self.mixed, secret=not invals[0].const, float_operand=invals[0].is_float
        ):
            self.kernel_calls.append((scope, local_sum.NAME))

    def _multiply_kernel(self, eqn, prim, invals, ring, scope, producers) -> None:
        """Products the compiler hands to :mod:`ditto_spu.kernels.multiply`: the same
        product and truncation semantics as SPU's (modelled by the caller); only the calls
        are recorded — one per StableHLO multiply (``integer_pow`` with y = n lowers to
        the square-and-multiply chain of :meth:`_integer_pow`). A public operand counts as
        a splat when it is a scalar in the jaxpr. A converted boolean or integer operand
        stays with SPU (:func:`passes.select_kernels.from_non_float`)."""

        if any(not v.const and _from_non_float(var, producers) for var, v in zip(eqn.invars, invals)):
            return
        out = eqn.outvars[0].aval
        if prim == "mul":
            secret = sum(not v.const for v in invals)
            splat = any(v.const and jnp.ndim(v.x) == 0 for v in invals)
            count = 1
        elif prim == "square":
            secret, splat, count = 2, False, 1
        else:
            y = abs(int(eqn.params["y"]))
            secret, splat = 2, False
            count = max(y.bit_length() - 1, 0) + max(bin(y).count("1") - 1, 0)
        self._record_multiplies(ring, out, secret, splat, scope, count)

    def _record_multiplies(self, ring, out, secret: int, splat: bool, scope, count: int = 1) -> None:
        """Record ``count`` calls of the multiply kernel when its rule
        (:func:`ditto_spu.kernels.multiply.selects`) takes a product with result ``out``."""
        from ..kernels import multiply

        if self._kernels_on() and multiply.selects(
            ring,
            mixed=self.mixed,
            elements=math.prod(out.shape),
            secret_operands=secret,
            public_splat=splat,
            float_result=is_float(out.dtype),
        ):
            self.kernel_calls.extend([(scope, multiply.NAME)] * count)

    def _divide_by_constant_kernel(self, eqn, invals, ring, scope, producers) -> None:
        """The rule of :func:`passes.select_kernels._select_division_by_constant`: a secret
        divided by a scalar constant runs as the multiply kernel (the same semantics)."""
        if invals[0].const or _from_non_float(eqn.invars[0], producers) or jnp.ndim(invals[1].x) != 0:
            return
        if isinstance(eqn.invars[1], jax.core.Literal) and not (math.isfinite(c := float(eqn.invars[1].val)) and c != 0.0):
            return  # as the compiler: no product with 1/0 or 1/inf
        self._record_multiplies(ring, eqn.outvars[0].aval, 1, True, scope)

    def _rsqrt_kernel(self, xs, invals, ring, scope) -> None:
        """An rsqrt the compiler hands to :mod:`ditto_spu.kernels.rsqrt`: it computes SPU's
        algorithm (the model below), so only its range is checked and the call recorded."""
        from ..kernels import normalize, rsqrt

        value_range = getattr(self.policy, "rsqrt_range", None)
        if not self._kernels_on() or not rsqrt.selects(
            ring, value_range=value_range, mixed=self.mixed, secret=not invals[0].const, float_operand=invals[0].is_float
        ):
            return
        self.kernel_calls.append((scope, rsqrt.NAME))
        normalize.check_range(self.arith, xs[0], *value_range, ring, scope)

    def _exp_kernel_selected(self, eqn, ring, producers) -> bool:
        """The rule of :func:`passes.select_kernels._select_exps` on the jaxpr: exp of a
        convert of ``max(d, c)`` (the clamp kernel, literal c) where d = x − broadcast(
        reduce_max(x)) with that reduce_max run by the max kernel."""
        from ..kernels import exp_taylor, reduce_max

        if not self._kernels_on() or self.spu.nonlinear != "spu":
            return False
        conv = producers.get(eqn.invars[0])
        if conv is None or conv.primitive.name != "convert_element_type":
            return False
        source = conv.invars[0]
        clamp = producers.get(source)
        if clamp is None or clamp.primitive.name != "max" or clamp.outvars[0] not in self._max_kernel_outs:
            return False
        literals = [v.val for v in clamp.invars if isinstance(v, jax.core.Literal)]
        shifted_vars = [v for v in clamp.invars if not isinstance(v, jax.core.Literal)]
        if len(literals) != 1 or len(shifted_vars) != 1:
            return False
        sub = producers.get(shifted_vars[0])
        shifted = False
        if sub is not None and sub.primitive.name == "sub":
            x, b = sub.invars
            mx = producers.get(b)
            while mx is not None and mx.primitive.name in ("broadcast_in_dim", "reshape"):
                mx = producers.get(mx.invars[0])
            shifted = (
                mx is not None
                and mx.primitive.name == "reduce_max"
                and mx.invars[0] is x
                and mx.outvars[0] in self._max_kernel_outs
            )
        return exp_taylor.selects(
            ring,
            source_ring=self._var_rings.get(source),
            cutoff=float(np.asarray(literals[0])),
            shifted=shifted,
            slack=reduce_max.max_slack({}),
        )

    def _divide_kernel_range(self, eqn, invals, ring, producers):
        """The rule of :func:`passes.select_kernels._select_divides` on the jaxpr: a
        division by a broadcast of ``reduce_sum`` over the exp kernel's result runs as
        :mod:`ditto_spu.kernels.divide`; returns the denominator range it relies on, else
        None."""
        from ..kernels import divide, reduce_max

        if not self._kernels_on() or invals[0].const or invals[1].const:
            return None
        total = producers.get(eqn.invars[1])
        while total is not None and total.primitive.name in ("broadcast_in_dim", "reshape"):
            total = producers.get(total.invars[0])
        if total is None or total.primitive.name != "reduce_sum" or total.invars[0] not in self._exp_kernel_outs:
            return None
        shape = total.invars[0].aval.shape
        entries = math.prod(shape[d] for d in total.params["axes"])
        value_range = divide.softmax_denominator_range(entries, reduce_max.max_slack({}))
        ok = divide.selects(ring, value_range=value_range, mixed=self.mixed, secret=True, float_operand=invals[0].is_float)
        return value_range if ok else None

    def _kernel_selected(self, eqn, invals, ring) -> bool:
        if not self._kernels_on():
            return False
        from ..kernels import matmul

        (lc, _), _ = eqn.params["dimension_numbers"]
        lhs_shape = eqn.invars[0].aval.shape
        k = math.prod(lhs_shape[i] for i in lc)
        out = eqn.outvars[0].aval
        return matmul.selects(
            ring,
            macs=math.prod(out.shape) * k,
            both_secret=not invals[0].const and not invals[1].const,
            float_result=is_float(out.dtype),
        )

    def _integer_pow(self, x, y, ring, scope):
        if y == 0:
            return jnp.ones_like(x)
        n = abs(y)
        acc, base = None, x
        while n:
            if n & 1:
                acc = base if acc is None else self.arith.product(acc * base, ring, scope)
            n >>= 1
            if n:
                base = self.arith.product(base * base, ring, scope)
        if y < 0:
            acc = self.arith.fxp(ring).reciprocal(acc, self.spu.div_iters)
        return acc

    def _div(self, eqn, xs, invals, ring, scope, producers):
        a, b = xs
        F = self.arith.fxp(ring)
        if self.spu.nonlinear == "exact":
            self.exact_ops.add("div")
            return F.q(a / b)
        if invals[1].const:
            # Public divisor c (as encoded in the ring): SPU multiplies by 1/c, itself
            # encoded toward zero, and truncates — and so does the multiply kernel the
            # compiler hands a division by a splat constant to.
            self._divide_by_constant_kernel(eqn, invals, ring, scope, producers)
            self.arith.check_range(scope, ring, "product", a / b)
            return F.divide_by_public(a, b)
        bvar = eqn.invars[1]
        broadcast = not isinstance(bvar, jax.core.Literal) and (
            tuple(bvar.aval.shape) != tuple(eqn.outvars[0].aval.shape)
            or getattr(producers.get(bvar), "primitive", None) is jax.lax.broadcast_in_dim_p
        )
        if self.spu.denominator_broadcast and broadcast:
            iters = self.spu.div_iters
            kernel_range = self._divide_kernel_range(eqn, invals, ring, producers)
            if kernel_range is not None:
                from ..kernels import divide, normalize

                self.kernel_calls.append((scope, divide.NAME))
                normalize.check_range(self.arith, b, *kernel_range, ring, scope)
                iters = divide.ITERS
            r = F.reciprocal(b, iters)
            return self.arith.product(a * r, ring, scope)
        self.arith.check_range(scope, ring, "product", a * 2.0)  # r·a with r = 1/c ∈ (1, 2]
        return F.divide(a, b, self.spu.div_iters)

    # -- control flow ----------------------------------------------------------------------------
    def _control_flow(self, eqn, prim, xs, invals, ring, scope):
        outer = self._forced
        self._forced = ring if ring is not None else outer
        self._region_depth += 1
        try:
            vals = [Val(x, ring if v.is_float else None, False, v.is_float) for x, v in zip(xs, invals)]
            if prim == "cond":
                outs = self._cond(eqn, vals, invals[0].const, scope)
            elif prim == "scan":
                outs = self._scan(eqn, vals, scope)
            else:
                outs = self._while(eqn, vals, scope)
        finally:
            self._forced = outer
            self._region_depth -= 1
        return outs

    def _region_prefix(self, scope):
        return scope.rsplit("/", 1)[0] if "/" in scope else ""

    def _cond(self, eqn, vals, index_public, scope):
        index, ops = vals[0], vals[1:]
        branches = eqn.params["branches"]
        prefix = self._region_prefix(scope)
        if index_public:
            i = int(np.clip(np.asarray(index.x), 0, len(branches) - 1))
            return self.eval_jaxpr(branches[i].jaxpr, branches[i].consts, ops, prefix)
        outs = [self.eval_jaxpr(b.jaxpr, b.consts, ops, prefix) for b in branches]
        idx = jnp.clip(jnp.asarray(index.x).astype(jnp.int32), 0, len(branches) - 1)
        result = []
        for i in range(len(outs[0])):
            branch_vals = [o[i] for o in outs]
            ring = self._forced if branch_vals[0].is_float else None
            xs = [self._into(v, ring, scope) for v in branch_vals]
            x = jax.lax.select_n(idx, *xs) if len(xs) > 1 else xs[0]
            result.append(Val(x, ring, False, branch_vals[0].is_float))
        return result

    def _into(self, v: Val, ring, scope):
        """A region's result as the op's result in ``ring``."""
        if not v.is_float or ring is None:
            return jnp.asarray(v.x)
        if v.const:
            return self.arith.encode_const(v.x, ring, scope)
        return v.x if v.ring == ring else self.arith.cast(v.x, v.ring, ring, scope)

    def _scan(self, eqn, vals, scope):
        p = eqn.params
        nc, ncar, length = p["num_consts"], p["num_carry"], p["length"]
        body = p["jaxpr"]
        prefix = self._region_prefix(scope)
        consts, carry, xs = vals[:nc], vals[nc : nc + ncar], vals[nc + ncar :]
        ys_steps = []
        order = range(length - 1, -1, -1) if p["reverse"] else range(length)
        for i in order:
            x_i = [Val(v.x[i], v.ring, v.const, v.is_float) for v in xs]
            out = self.eval_jaxpr(body.jaxpr, body.consts, consts + carry + x_i, prefix)
            carry = [Val(self._into(n, c.ring, scope), c.ring, False, c.is_float) for n, c in zip(out[:ncar], carry)]
            ys_steps.append(out[ncar:])
        if p["reverse"]:
            ys_steps = ys_steps[::-1]
        ys = []
        for j, var in enumerate(eqn.outvars[ncar:]):
            steps = [s[j] for s in ys_steps]
            f = is_float(var.aval.dtype)
            ring = self._forced if f else None
            ys.append(Val(jnp.stack([self._into(v, ring, scope) for v in steps]), ring, False, f))
        return carry + ys

    def _while(self, eqn, vals, scope):
        p = eqn.params
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        cconsts, bconsts, init = vals[:cn], vals[cn : cn + bn], vals[cn + bn :]
        prefix = self._region_prefix(scope)
        was = self.arith.recording
        self.arith.recording = False

        def wrapv(xs):
            return [Val(x, v.ring, False, v.is_float) for x, v in zip(xs, init)]

        def cond_fn(xs):
            cj = p["cond_jaxpr"]
            return jnp.asarray(self.eval_jaxpr(cj.jaxpr, cj.consts, cconsts + wrapv(xs), prefix)[0].x)

        def body_fn(xs):
            bj = p["body_jaxpr"]
            outs = self.eval_jaxpr(bj.jaxpr, bj.consts, bconsts + wrapv(xs), prefix)
            return [jnp.asarray(self._into(o, v.ring, scope), jnp.asarray(v.x).dtype) for o, v in zip(outs, init)]

        try:
            out = jax.lax.while_loop(cond_fn, body_fn, [jnp.asarray(v.x) for v in init])
        finally:
            self.arith.recording = was
        return wrapv(out)
