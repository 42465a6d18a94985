"""The fixed-point emulator: the checked view of THE fixed-point semantics.

``emulate(fn, policy)`` traces ``fn`` to a jaxpr and evaluates it with the interpreter of
:mod:`ditto_spu.semantics.interpreter` (the one the training model runs too) in its
checked float64 arithmetic (:class:`~ditto_spu.semantics.arith.CheckedArithmetic`). What
is modelled — the compiler's ring per op (including loops and branches, which compute in
one ring), the cast kernels' and the FXP32 matmul kernel's own emulations, SPU's rewrites
and its algorithms for exp / division / rsqrt / sqrt / tanh / logistic / log / erf — is
documented there, once; :func:`ditto_spu.semantics.consistency.compiler_view` /
``interpreter_view`` compare the rings op by op. This module adds the emulator's
services around it:

Overflow handling (``EmulatorOptions.mode``): ``"wrap"`` (default) reduces values and
products (at scale 2^(2f), before truncation) modulo 2^l like the ring does, so the output
is what a secure run gives (measured: an FXP32[f=14] product 3.75·4 comes out as −1 in
both; when the wrapped element itself lies outside ±2^(l−2), SPU's probabilistic
truncation may in addition be off by a multiple of 2^(l−f): such results are garbage either
way); ``"raise"`` raises
:class:`RingOverflowError` naming the scope, value and limit; ``"record"`` keeps exact
values (an unbounded ring) and only records. In every mode the per-scope maxima are
accumulated in ``emulated.report`` (:class:`~ditto_spu.semantics.report.RangeReport`);
records inside ``while`` loops cannot leave the loop (their scopes are listed in
``report.unrecorded``), and transcendentals with no SPU model are listed in
``report.exact_ops``.

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
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import enable_x64

from ..errors import DittoError, RangeError
from ..policy import Policy, load_policy
from ..rings import RingSpec
from ..semantics.arith import WRAP_MODES as MODES
from ..semantics.arith import CheckedArithmetic
from ..semantics.interpreter import CALL_PRIMITIVES, Interpreter, SpuSemantics, call_body, is_float, join_scope
from ..semantics.report import RangeReport, is_kernel_limit


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
    kernels: bool = True

    def semantics(self) -> SpuSemantics:
        """The SPU settings part (shared with the training model)."""
        return SpuSemantics(
            exp_iters=self.exp_iters,
            div_iters=self.div_iters,
            denominator_broadcast=self.denominator_broadcast,
            nonlinear=self.nonlinear,
            kernels=self.kernels,
        )

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


def _to64(x):
    x = jnp.asarray(x)
    return x.astype(jnp.float64) if is_float(x.dtype) else x


def _interpreter(policy: Policy, options: "EmulatorOptions") -> Interpreter:
    return Interpreter(
        policy, CheckedArithmetic(options.mode, options.truncation), options.semantics()
    )


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
            stack = join_scope(prefix, str(eqn.source_info.name_stack))
            prim = eqn.primitive.name
            if prim in CALL_PRIMITIVES:
                sj, _, inner_part = call_body(eqn)
                inner = join_scope(stack, inner_part)
                inner_alias = {
                    iv: alias[v] for iv, v in zip(sj.invars, eqn.invars)
                    if not isinstance(v, jax.core.Literal) and v in alias
                }
                walk(sj, inner, inner_alias)
                continue
            for v in eqn.invars:
                if not isinstance(v, jax.core.Literal) and v in alias:
                    uses.setdefault(alias[v], set()).add(join_scope(stack, prim))

    walk(closed.jaxpr, "", names)
    return uses


def argument_signature(args, static_argnums=()):
    """A hashable key of a call's arguments: static ones by value, the others by pytree
    structure, shapes and dtypes (what a traced program depends on)."""
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
        key = argument_signature(args, self.static_argnums)
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
            it = _interpreter(policy, options)
            outs = it.run(closed, arg_names, flat)
            stats = it.arith.collected_stats()
            info["exact_ops"] |= it.exact_ops
            info["unrecorded"] |= it.arith.unrecorded
            return outs, stats

        with enable_x64():
            jitted = jax.jit(interpret) if self.jit else interpret

        def run64(flat):
            with enable_x64():
                return jitted([_to64(x) for x in flat])

        float_out = [is_float(d) for d in out_dtypes]
        float_in = [is_float(d) for d in in_dtypes]
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

    def evaluate_values(self, signature_args, values):
        """:meth:`evaluate` on exact ``values`` for a call shaped like ``signature_args``.

        ``signature_args`` fix the program (shapes and dtypes, hence each argument's ring);
        ``values`` (the same structure, any float dtype) are taken exactly, at float64. For
        arguments a low dtype cannot hold, e.g. fixed-point ring values fed back from an
        earlier call (a key/value cache held between decoding steps)."""
        entry = self._entry(signature_args)
        flat = jax.tree_util.tree_leaves(self._dynamic(values))
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
    ``margin_bits`` of headroom (only rings of ``fields``, e.g. ``("FM32",)``, if given).
    A reduced-ring kernel's bound (kind ``"bound B"``) is itself the calibrated limit: no
    margin on top of it."""

    def needed(r) -> float:
        return 0.0 if is_kernel_limit(r.kind) else margin_bits

    bad = sorted(
        (r for r in report.records if r.headroom_bits < needed(r) and (fields is None or r.ring.field in fields)),
        key=lambda r: r.headroom_bits,
    )
    if not bad:
        return
    w = bad[0]
    more = f" (and {len(bad) - 1} more: {', '.join(sorted({b.scope for b in bad[1:6]}))}...)" if len(bad) > 1 else ""
    if w.kind.startswith("bound "):
        raise RingOverflowError(
            f"{w.scope}: |v| up to {w.max_abs:.6g} is beyond the comparison bound {w.limit:g} its "
            f"reduced-ring kernel relies on ({w.n_over} element(s) over){more}. Raise the policy's "
            f"comparison_bound for this scope (ditto-spu calibrate records it) or set it to null to "
            f"keep this max in SPU.",
            bad,
        )
    if w.kind.startswith("range "):
        raise RingOverflowError(
            f"{w.scope}: an input is outside the calibrated {w.kind} its kernel relies on (off by a "
            f"factor {w.max_abs:.6g}; {w.n_over} element(s)){more}. Widen the policy's rsqrt_range "
            f"or set it to null to keep this op in SPU.",
            bad,
        )
    what = "product before truncation" if w.kind == "product" else w.kind
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
