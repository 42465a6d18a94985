"""select_kernels: hand ops that have a faster protocol of our own to a registered kernel.

Contract, on a cast-explicit Graph: a ``stablehlo.dot_general`` in an FXP32 ring whose
two operands are both computed (secret, not constant-only), with a floating result,
at least ``min_macs`` multiply-accumulates, and fraction bits f ≤ 14 (the product's 2f
must fit FXP32's range) becomes a kernel node (``kind == "call"``, ``kernel ==
"matmul_fxp32"``, ``params`` = its dimension numbers). The partition pass gives each
kernel node a step of its own; every other op stays with SPU.

Products with a constant operand (public × secret) stay in SPU, which needs no
multiplication protocol for them.
"""

from __future__ import annotations

import math

from .graph import Graph

MATMUL_FXP32 = "matmul_fxp32"
DEFAULT_MIN_MACS = 1 << 16


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
        if n.ring.field != "FM32" or 2 * n.ring.frac_bits > n.ring.bits - 4:
            continue
        lhs, rhs = n.operands[:2]
        result = graph.values[n.results[0]]
        if not result.is_float or not (_computed(graph, lhs) and _computed(graph, rhs)):
            continue
        if graph.values[lhs].ring != n.ring or graph.values[rhs].ring != n.ring:
            continue
        params = _dot_dims(n)
        lhs_shape = graph.values[lhs].shape
        k = math.prod(lhs_shape[i] for i in params["lhs_contract"])
        if math.prod(result.shape) * k < min_macs:
            continue
        params["out_dtype"] = result.dtype
        n.kind = "call"
        n.kernel = MATMUL_FXP32
        n.params = params
    return graph
