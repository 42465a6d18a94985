"""The training model: :func:`fake_quant`, the fixed-point semantics in float32.

``fake_quant(fn, policy)`` evaluates ``fn``'s jaxpr with THE interpreter of
:mod:`ditto_spu.semantics.interpreter` — the one the reference emulator
(:func:`ditto_spu.quant.emulate`) runs — in its float32 arithmetic
(:class:`~ditto_spu.semantics.arith.TrainingArithmetic`), inside the caller's
``jax.jit`` / ``jax.grad``: the same ring per op as the compiler, the same casts, kernels,
SPU rewrites and SPU algorithms, straight-through gradients. What float32 cannot do:

* wrap-around: a value that leaves its ring is reported and penalised instead (below);
* FXP64 exactness: float32 keeps 24 significant bits, below FXP64's 2^-18 grid only for
  |x| ≥ 64; FXP32 values (f ≤ 15, |x| < 2^8) and their rounding are exact, products
  before truncation carry at most 2^-24 relative error.

Ranges: with ``ranges=True`` the wrapped function returns ``(outputs, RangeTaps)``: for
every value, product (before truncation), cast, constant and secret input in a ring of at
most ``range_bits`` bits (FXP32 by default), the largest magnitude seen (per scope and
kind, the limits of :mod:`ditto_spu.semantics.report`) and a differentiable penalty
``Σ relu(|v| / L − 1)²`` over the elements above ``L = limit / 2^margin_bits``. Adding the
penalty to a training loss keeps the trained model inside the policy's rings (what the
secure run needs: there a value past the limit wraps).

Accuracy claims are made with the reference emulator, never with this.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..policy import load_policy
from ..semantics.arith import RangeTaps, TrainingArithmetic
from ..semantics.interpreter import Interpreter, SpuSemantics

__all__ = ["RangeTaps", "fake_quant"]


def fake_quant(
    fn: Callable,
    policy=None,
    *,
    exp_iters: int = 5,
    div_iters: int = 2,
    ranges: bool = False,
    range_bits: int = 32,
    margin_bits: float = 1.0,
    kernels: bool = True,
) -> Callable:
    """``fn`` (traced with its own dtypes) re-evaluated in float32 with the ring arithmetic of
    ``policy`` (a :class:`~ditto_spu.policy.Policy`, JSON path, config name or None for the
    default), straight-through gradients. Usable inside ``jax.jit`` / ``jax.grad``.
    ``exp_iters`` / ``div_iters``: SPU's Taylor exp iterations and Goldschmidt iterations
    (the emulator's defaults). ``ranges``: also return a :class:`RangeTaps` for the rings of
    at most ``range_bits`` bits, penalising values within ``margin_bits`` of their limit.
    ``kernels``: FXP32 matmuls as our kernel (as ``compile`` selects them by default).
    See the module docstring for what is and is not modelled.
    """
    policy = load_policy(policy)
    spu = SpuSemantics(exp_iters=exp_iters, div_iters=div_iters, kernels=kernels)
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
        arith = TrainingArithmetic((range_bits, margin_bits) if ranges else None)
        outs = Interpreter(policy, arith, spu).run(closed, names, leaves)
        result = jax.tree_util.tree_unflatten(out_tree, outs)
        if ranges:
            return result, arith.taps()
        return result

    wrapped.policy = policy  # type: ignore[attr-defined]
    return wrapped
