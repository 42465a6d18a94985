"""select_kernels: hand ops that have a faster protocol of our own to a registered kernel.

Contract, on a cast-explicit Graph: a ``stablehlo.dot_general`` that the kernel's own
rule :func:`ditto_spu.kernels.matmul.selects` accepts (an FXP32 ring, both operands
computed, a floating result, at least ``min_macs`` multiply-accumulates, f ≤ 14) becomes
a kernel node (``kind == "call"``, ``kernel ==
"matmul_fxp32"``, ``params`` = its dimension numbers). The partition pass gives each
kernel node a step of its own; every other op stays with SPU.

Products with a constant operand (public × secret) stay in SPU, which needs no
multiplication protocol for them.
"""

from __future__ import annotations

import math

from ditto_spu.kernels.matmul import DEFAULT_MIN_MACS, NAME as MATMUL_FXP32, selects as matmul_fxp32_selects

from .graph import Graph


def _dot_dims(node) -> dict:
    from jaxlib.mlir.dialects import stablehlo

    dims = stablehlo.DotDimensionNumbers(node.op.attributes["dot_dimension_numbers"])
    return {
        "lhs_batch": list(dims.lhs_batching_dimensions),
        "rhs_batch": list(dims.rhs_batching_dimensions),
        "lhs_contract": list(dims.lhs_contracting_dimensions),
        "rhs_contract": list(dims.rhs_contracting_dimensions),
    }


def _computed(graph: Graph, vid: int) -> bool:
    producer = graph.values[vid].producer
    return producer is None or not graph.nodes[producer].const


def select_kernels(graph: Graph, *, matmul_fxp32: bool = True, min_macs: int = DEFAULT_MIN_MACS) -> Graph:
    if not matmul_fxp32:
        return graph
    for n in graph.nodes:
        if n.kind != "op" or n.const or n.op_name != "stablehlo.dot_general" or n.ring is None:
            continue
        lhs, rhs = n.operands[:2]
        result = graph.values[n.results[0]]
        params = _dot_dims(n)
        lhs_shape = graph.values[lhs].shape
        k = math.prod(lhs_shape[i] for i in params["lhs_contract"])
        same_ring = graph.values[lhs].ring == n.ring and graph.values[rhs].ring == n.ring
        if not same_ring or not matmul_fxp32_selects(
            n.ring,
            macs=math.prod(result.shape) * k,
            both_secret=_computed(graph, lhs) and _computed(graph, rhs),
            float_result=result.is_float,
            min_macs=min_macs,
        ):
            continue
        params["out_dtype"] = result.dtype
        n.kind = "call"
        n.kernel = MATMUL_FXP32
        n.params = params
    return graph
