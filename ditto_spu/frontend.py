"""Front end: a JAX function -> a mixed-ring :class:`Program` (and a simulated call).

:func:`compile` traces ``fn`` on example arguments with ``jax.jit(...).lower``, runs the
passes (``passes.compile_stablehlo``: annotate rings under a Policy, make casts explicit,
partition into single-ring segments, compile each with stock ``spu.compile``) and
returns a :class:`Program`: the :class:`~ditto_spu.plan.Plan` plus the pytree structure
of the inputs and outputs, so plaintext arguments map to plan inputs and plan outputs
back to the function's result structure.

Running a Program on three simulated parties is :func:`ditto_spu.simulation.sim_jax`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .plan import Plan
from .policy import Policy, load_policy


@dataclasses.dataclass
class Program:
    """A compiled mixed-ring program: the plan and how to call it like ``fn``."""

    plan: Plan
    in_tree: object  # treedef of the dynamic (non-static) arguments
    out_tree: object  # treedef of the result
    input_names: list  # plan input name of each flattened argument leaf
    output_names: list  # plan output name of each flattened result leaf (may repeat)
    arg_paths: list  # jax key path of each argument leaf ("[0]['w']")
    policy: Policy
    static_argnums: tuple = ()
    compiled: object = None  # passes.Compiled: graph and partition, for inspection
    stablehlo: str = ""  # the traced module, with locations

    def flatten_inputs(self, *args) -> dict:
        """Plaintext arguments (same structure as the example ones) -> {input name: array}."""
        import jax

        dynamic = [a for i, a in enumerate(args) if i not in self.static_argnums]
        leaves, tree = jax.tree_util.tree_flatten(tuple(dynamic))
        if tree != self.in_tree:
            raise ValueError(
                f"arguments have structure {tree}, the program was compiled for {self.in_tree}"
            )
        return {name: np.asarray(leaf) for name, leaf in zip(self.input_names, leaves)}

    def unflatten_outputs(self, outputs: dict):
        """{output name: array} -> the function's result structure."""
        import jax

        return jax.tree_util.tree_unflatten(self.out_tree, [outputs[n] for n in self.output_names])

    def describe(self) -> str:
        """Annotated IR, segments and casts (what ``ditto-spu compile`` prints)."""
        from passes import describe_parts, format_graph

        return (
            format_graph(self.compiled.graph)
            + "\n\n"
            + describe_parts(self.compiled.graph, self.compiled.parts)
        )


def lower(fn, *example_args, static_argnums=()):
    """Trace ``fn`` with jax; return (lowered, dynamic-args treedef, leaf key paths)."""
    import jax

    static_argnums = tuple(static_argnums)
    jitted = jax.jit(fn, static_argnums=static_argnums, keep_unused=True)
    lowered = jitted.lower(*example_args)
    dynamic = tuple(a for i, a in enumerate(example_args) if i not in static_argnums)
    with_path, tree = jax.tree_util.tree_flatten_with_path(dynamic)
    paths = [jax.tree_util.keystr(p) for p, _ in with_path]
    return lowered, tree, paths


def compile(
    fn,
    *example_args,
    policy=None,
    static_argnums=(),
    copts=None,
    compile_segments=True,
    split_by=None,
    kernels=True,
) -> Program:
    """Compile ``fn`` (traced on ``example_args``) to a mixed-ring :class:`Program`.

    ``policy``: a :class:`~ditto_spu.policy.Policy`, a JSON path, a config name, or None
    (f16/bf16 → FXP32[f=8], f32 → FXP64[f=18]). ``copts``: SPU compiler options
    (default: ``ditto_spu.mpc.segments.compiler_options()``). ``compile_segments=False``
    skips ``spu.compile`` (inspection only: segments carry empty code). ``split_by(node)
    -> str`` keeps ops of different groups in different segments (cost breakdowns).
    ``kernels=False`` keeps every op in SPU (no FXP32 matmul kernel).
    """
    from passes import compile_stablehlo
    from passes.parse import module_text

    from .mpc.segments import compiler_options

    policy = load_policy(policy)
    lowered, in_tree, paths = lower(fn, *example_args, static_argnums=static_argnums)
    text = module_text(lowered.compiler_ir("stablehlo"))
    compiled = compile_stablehlo(
        text,
        policy,
        arg_names=paths,
        compile=compile_segments,
        copts=copts if copts is not None else compiler_options(),
        split_by=split_by,
        kernels=kernels,
    )
    return Program(
        plan=compiled.plan,
        in_tree=in_tree,
        out_tree=lowered.out_tree,
        input_names=compiled.emitted.input_names,
        output_names=compiled.emitted.output_names,
        arg_paths=paths,
        policy=policy,
        static_argnums=tuple(static_argnums),
        compiled=compiled,
        stablehlo=text,
    )
