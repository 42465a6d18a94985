"""Does the semantics follow the compiler? Ring per op, compared one to one.

:func:`compiler_view` lists the ring :mod:`passes.annotate_rings` gives each op of a
function's StableHLO, and the ops handed to kernels; :func:`interpreter_view` lists the
ring the interpreter evaluates each equation in and the kernels it emulates (traced
abstractly: nothing is computed).
Both are ``[(scope, ring), ...]`` in program order over the ops that touch a float
(integer-only ops carry no fixed-point semantics). :func:`ring_mismatches` compares them
per scope: one jaxpr equation may lower to several StableHLO ops of one scope
(``integer_pow`` → a chain of ``multiply``), so the unit of comparison is the set of
rings per scope, and a scope present on one side only is a mismatch too.
"""

from __future__ import annotations

from collections import defaultdict

import jax

from ..policy import load_policy
from .arith import TrainingArithmetic
from .interpreter import Interpreter, SpuSemantics


def compiler_view(fn, *args, policy=None, kernels: bool = True):
    """What the compiler decides for ``fn`` on ``args``: ``(op_rings, kernel_scopes)``.
    ``op_rings``: [(scope, ring)] that :mod:`passes.annotate_rings` gives every op
    touching a float (before casts are inserted: a float convert is an op there, as in
    the jaxpr); ``kernel_scopes``: scopes of the ops :mod:`passes.select_kernels` hands
    to a kernel, with the kernel's name."""
    from passes import annotate_rings, insert_casts, parse_module, select_kernels
    from passes.annotate_rings import defined_float_dtypes
    from passes.parse import module_text

    from ..frontend import lower

    lowered, _, paths = lower(fn, *args)
    graph = parse_module(module_text(lowered.compiler_ir("stablehlo")))
    graph.arg_names = list(paths) + [""] * (len(graph.args) - len(paths))
    annotate_rings(graph, load_policy(policy))
    op_rings = []
    for n in graph.nodes:
        if n.const or n.ring is None:
            continue
        if defined_float_dtypes(graph, n) or any(graph.values[v].is_float for v in n.inputs):
            op_rings.append((n.location.scope, n.ring))
    insert_casts(graph)
    select_kernels(graph, matmul_fxp32=kernels, policy=load_policy(policy))
    kernel_scopes = [(n.location.scope, n.kernel) for n in graph.nodes if n.kind == "call"]
    return op_rings, kernel_scopes


def interpreter_view(fn, *args, policy=None, spu: SpuSemantics | None = None):
    """``(op_rings, kernel_scopes)`` of the interpreter for ``fn`` on ``args`` (as
    :func:`compiler_view`)."""
    policy = load_policy(policy)
    closed = jax.make_jaxpr(fn)(*args)
    names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(args)[0]]
    interp = Interpreter(policy, TrainingArithmetic(), spu)
    leaves = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
    jax.eval_shape(lambda *xs: interp.run(closed, names, xs), *leaves)
    return interp.op_rings, interp.kernel_calls


def ring_mismatches(compiler: list, interpreter: list) -> list:
    """[(scope, compiler's rings, interpreter's rings)] for every scope whose sets differ."""
    a, b = defaultdict(set), defaultdict(set)
    for scope, ring in compiler:
        a[scope].add(str(ring))
    for scope, ring in interpreter:
        b[scope].add(str(ring))
    return [
        (scope, sorted(a.get(scope, ())), sorted(b.get(scope, ())))
        for scope in sorted(set(a) | set(b))
        if a.get(scope, set()) != b.get(scope, set())
    ]
