"""StableHLO passes: parse → annotate_rings → insert_casts → partition → emit.

Each pass is a module with one contract (see its docstring) over the
:class:`~passes.graph.Graph` vocabulary. :func:`compile_stablehlo` runs them all.
"""

from __future__ import annotations

import dataclasses

from ditto_spu.policy import load_policy

from .annotate_rings import annotate_rings
from .emit import Emitted, emit, segment_text
from .graph import CompileError, Graph, format_graph
from .insert_casts import casts, insert_casts
from .parse import parse_module
from .partition import CallPart, CastPart, SegmentPart, cast_costs, describe_parts, partition
from .select_kernels import select_kernels

__all__ = [
    "CompileError",
    "Graph",
    "Compiled",
    "compile_stablehlo",
    "parse_module",
    "annotate_rings",
    "insert_casts",
    "partition",
    "emit",
    "format_graph",
    "describe_parts",
    "cast_costs",
    "segment_text",
    "casts",
    "SegmentPart",
    "CastPart",
    "CallPart",
    "select_kernels",
]


@dataclasses.dataclass
class Compiled:
    """Everything the pipeline produced, for running (``plan``) and for inspection."""

    graph: Graph
    parts: list
    emitted: Emitted

    @property
    def plan(self):
        return self.emitted.plan


def compile_stablehlo(
    source,
    policy=None,
    *,
    arg_names=None,
    compile: bool = True,
    copts=None,
    split_by=None,
    kernels: bool = True,
) -> Compiled:
    """Run every pass on StableHLO ``source`` (text or ir.Module) under ``policy``.

    ``split_by(node) -> str`` optionally keeps ops of different groups in different
    segments (see :func:`passes.partition.partition`). ``kernels`` hands FXP32 matmuls to
    ditto-spu's own protocol (:mod:`passes.select_kernels`); False keeps all ops in SPU."""
    graph = parse_module(source)
    if arg_names is not None:
        graph.arg_names = list(arg_names) + [""] * (len(graph.args) - len(arg_names))
    policy = load_policy(policy)
    annotate_rings(graph, policy)
    insert_casts(graph)
    select_kernels(graph, matmul_fxp32=kernels, policy=policy)
    parts = partition(graph, split_by)
    return Compiled(graph, parts, emit(graph, parts, compile=compile, copts=copts))
