"""select_kernels: hand ops that have a faster protocol of our own to a registered kernel.

Contract, on a cast-explicit Graph: a ``stablehlo.dot_general`` that the kernel's own
rule :func:`ditto_spu.kernels.matmul.selects` accepts (an FXP32 ring, both operands
computed, a floating result, at least ``min_macs`` multiply-accumulates, f ≤ 14) becomes
a kernel node (``kind == "call"``, ``kernel ==
"matmul_fxp32"``, ``params`` = its dimension numbers). The partition pass gives each
kernel node a step of its own; every other op stays with SPU.

Products with a constant operand (public × secret) stay in SPU, which needs no
multiplication protocol for them.

Maxima (the softmax's row max and cut-off): a ``stablehlo.reduce`` whose body is one
``stablehlo.maximum`` over one dimension becomes ``max_reduced_ring``, and an elementwise
``stablehlo.maximum`` of a computed value and a splat constant becomes
``clamp_reduced_ring``, when :func:`ditto_spu.kernels.reduce_max.selects` accepts them:
an FXP32 ring (where Ditto puts these comparisons; single-ring FXP64 baselines keep SPU's
own) and a calibrated comparison bound from the policy (``Policy.bound_for``) that gives
a reduced ring narrower than the ring. The params carry the bound.

Threshold selects (PUMA's GeLU, :func:`ditto_spu.approx.gelu_puma`): a
``stablehlo.multiply`` with a float result whose one operand is ``convert(compare(x, c))``
— a boolean comparison of a value x with a splat constant c (either side), directions GE,
GT, LT, LE, converted to float — and whose other operand y is a secret float value,
becomes ``threshold_select`` on [x, y] (:mod:`ditto_spu.kernels.threshold_select`): y·[x
≥ c] decided in a reduced ring, the 0/1 product exact. The direction is normalised to x
on the left (``c < x`` is ``x > c``) and then to params ``strict`` (GT, LE) and ``below``
(LT, LE: the complement, ``x < c`` = 1 − [x ≥ c], ``x ≤ c`` = 1 − [x > c]). It applies
when :func:`ditto_spu.kernels.threshold_select.selects` accepts: a mixed-ring program
(single-ring FXP64 baselines keep SPU's comparison), x, y, the compare and the multiply
in one ring, x secret fixed point (neither x nor y a converted boolean or integer), and a
comparison bound from the policy for the multiply's scope (``Policy.bound_for``) giving a
reduced ring narrower than the ring. The params carry c, the direction, the bound and the
resolution bits. The convert, then the compare, are removed when nothing else reads them
(and they are not outputs); the splat constant stays (constants are cloned where used).

rsqrt (LayerNorm's): a ``stablehlo.rsqrt`` of a computed value in an FXP64 ring of a
mixed-ring program becomes ``rsqrt_calibrated`` when the policy has an ``rsqrt_range``
the kernel can use (:func:`ditto_spu.kernels.rsqrt.selects`); single-ring FXP64 programs
(the PUMA and MPCFormer baselines) keep SPU's rsqrt.

Sums (LayerNorm's means, the softmax's denominator): a ``stablehlo.reduce`` whose body is
one ``stablehlo.add`` with a zero init, over a secret fixed-point value in a mixed-ring
program, becomes ``sum_local`` (:func:`ditto_spu.kernels.local_sum.selects`): the same
exact sum, computed on the shares without SPU's per-op cost.

Elementwise products (LayerNorm's, quad GeLU's square and coefficients, the attention
scale): a ``stablehlo.multiply`` with a float result in a mixed-ring program whose
operands are both secret, or one secret and one splat constant, becomes ``multiply``
(:func:`ditto_spu.kernels.multiply.selects`): the same product and truncation semantics
with a one-round deterministic truncation instead of SPU's multi-round one. A
``stablehlo.divide`` of a secret by a splat constant c (LayerNorm's means) becomes the
same kernel with the constant 1/c: SPU's own division by a public constant.

The softmax's exp (Ditto's mixed softmax: x − max and the cut-off in FXP32, exp in
FXP64): a ``stablehlo.exponential`` in FXP64 whose operand is a cast of the cut-off
clamp kernel's result, itself applied to the max kernel's fused x − max, becomes
``exp_taylor_fxp32`` (:func:`ditto_spu.kernels.exp_taylor.selects`) on the clamp's FXP32
result; the cast goes when the exp was its only reader. The clamp constant and the shift
bound the input to [cut-off, 0], the kernel's valid range.

The softmax's division (every exp over its row's sum): a ``stablehlo.divide`` in FXP64
whose divisor is a broadcast of ``sum_local`` over the exp kernel's result becomes
``divide_calibrated`` on the numerator and the un-broadcast sum. Such a sum lies in
[0.5, 1.22·n] for n summed entries (at the max kernel's resolution) (:func:`ditto_spu.kernels.divide.softmax_denominator_range`),
the range the kernel's few comparisons rely on; the broadcast goes when nothing else
reads it.
"""

from __future__ import annotations

import math

from ditto_spu.kernels import divide, exp_taylor, local_sum, multiply, reduce_max, rsqrt, threshold_select
from ditto_spu.kernels.matmul import DEFAULT_MIN_MACS
from ditto_spu.kernels.matmul import NAME as MATMUL_FXP32
from ditto_spu.kernels.matmul import selects as matmul_fxp32_selects

from .graph import Graph


def _dot_dims(node) -> dict:
    from jaxlib.mlir.dialects import stablehlo

    # DotDimensionNumbers exists at run time but not in jaxlib's type stubs
    dims = stablehlo.DotDimensionNumbers(node.op.attributes["dot_dimension_numbers"])  # type: ignore[attr-defined]
    return {
        "lhs_batch": list(dims.lhs_batching_dimensions),
        "rhs_batch": list(dims.rhs_batching_dimensions),
        "lhs_contract": list(dims.lhs_contracting_dimensions),
        "rhs_contract": list(dims.rhs_contracting_dimensions),
    }


def _computed(graph: Graph, vid: int) -> bool:
    producer = graph.values[vid].producer
    return producer is None or not graph.nodes[producer].const


def _splat_constant(graph: Graph, vid: int):
    """The value of a splat constant reached through broadcasts/converts/reshapes, else None."""
    from jaxlib.mlir import ir

    while True:
        producer = graph.values[vid].producer
        if producer is None:
            return None
        node = graph.nodes[producer]
        if node.op_name in ("stablehlo.broadcast_in_dim", "stablehlo.convert", "stablehlo.reshape"):
            vid = node.operands[0]
            continue
        if node.op_name != "stablehlo.constant" or node.op is None:
            return None
        attr = ir.DenseElementsAttr(node.op.attributes["value"])
        if not attr.is_splat:
            return None
        value = attr.get_splat_value()
        if ir.IntegerAttr.isinstance(value):  # an integer constant converted to float
            return float(ir.IntegerAttr(value).value)
        return float(ir.FloatAttr(value).value)


def _reduce_dims(node, body_op: str):
    """The reduced dimensions of a single-operand reduce whose body is one ``body_op``,
    else None."""
    from jaxlib.mlir import ir

    if node.op is None or len(node.operands) != 2 or len(node.op.regions) != 1:
        return None
    body = [op.name for op in node.op.regions[0].blocks[0].operations]
    if body != [body_op, "stablehlo.return"]:
        return None
    return list(ir.DenseI64ArrayAttr(node.op.attributes["dimensions"]))


def _reduce_max_axis(node):
    """The one reduced dimension of a reduce whose body is a single maximum, else None."""
    dims = _reduce_dims(node, "stablehlo.maximum")
    return dims[0] if dims is not None and len(dims) == 1 else None


def _select_maxima(graph: Graph, policy) -> None:
    bound_for = getattr(policy, "bound_for", None)
    for n in graph.nodes:
        if n.kind != "op" or n.const or n.ring is None or n.ring.field != "FM32":
            continue
        if n.op_name == "stablehlo.reduce":
            axis = _reduce_max_axis(n)
            if axis is None:
                continue
            x = n.operands[0]
            kernel, params = reduce_max.MAX_NAME, {"axis": axis}
        elif n.op_name == "stablehlo.maximum":
            constants = [_splat_constant(graph, v) if not _computed(graph, v) else None for v in n.operands]
            computed = [v for v in n.operands if _computed(graph, v)]
            if len(computed) != 1 or all(c is None for c in constants):
                continue
            x = computed[0]
            kernel, params = reduce_max.CLAMP_NAME, {"constant": next(c for c in constants if c is not None)}
        else:
            continue
        value = graph.values[x]
        bound = bound_for(n.location.scope) if bound_for is not None else None
        if value.ring != n.ring or not reduce_max.selects(n.ring, bound=bound, secret=True, float_operand=value.is_float):
            continue
        params["bound"] = bound
        n.kind = "call"
        n.kernel = kernel
        n.params = params
        n.operands = [x]


# x OP c -> (strict, below) of threshold_select's step: GE [x ≥ c], GT [x > c], LT the
# complement of [x ≥ c], LE the complement of [x > c].
_STEP_OF_DIRECTION = {"GE": (False, False), "GT": (True, False), "LT": (False, True), "LE": (True, True)}
_SWAPPED_DIRECTION = {"GE": "LE", "GT": "LT", "LT": "GT", "LE": "GE"}  # c OP x == x SWAPPED c


def _threshold_comparison(graph: Graph, node):
    """(x, c, strict, below) of ``compare(x, splat c)`` or ``compare(splat c, x)`` with a
    direction GE / GT / LT / LE on a computed float x, else None."""
    from jaxlib.mlir.dialects import stablehlo

    if node is None or node.kind != "op" or node.const or node.op_name != "stablehlo.compare" or node.op is None:
        return None
    # ComparisonDirectionAttr exists at run time but not in jaxlib's type stubs
    direction = stablehlo.ComparisonDirectionAttr(node.op.attributes["comparison_direction"]).value  # type: ignore[attr-defined]
    if direction not in _STEP_OF_DIRECTION or len(node.operands) != 2:
        return None
    a, b = node.operands
    if _computed(graph, a) and not _computed(graph, b):
        x, c_vid = a, b
    elif _computed(graph, b) and not _computed(graph, a):
        x, c_vid, direction = b, a, _SWAPPED_DIRECTION[direction]
    else:
        return None
    constant = _splat_constant(graph, c_vid)
    if constant is None or not math.isfinite(constant) or not graph.values[x].is_float:
        return None
    return (x, constant, *_STEP_OF_DIRECTION[direction])


def _select_thresholds(graph: Graph, policy, mixed: bool) -> None:
    """``multiply(convert(compare(x, c)), y)`` -> ``threshold_select`` on [x, y]."""
    bound_for = getattr(policy, "bound_for", None)
    users = graph.users()
    for n in list(graph.nodes):
        if n.kind != "op" or n.const or n.op_name != "stablehlo.multiply" or n.ring is None:
            continue
        if not graph.values[n.results[0]].is_float:
            continue
        for ind_vid, y_vid in (n.operands, n.operands[::-1]):
            convert = _producer(graph, ind_vid)
            if convert is None or convert.kind != "op" or convert.op_name != "stablehlo.convert":
                continue
            if graph.values[convert.operands[0]].elem != "i1":
                continue
            compare = _producer(graph, convert.operands[0])
            found = _threshold_comparison(graph, compare)
            if found is None:
                continue
            x_vid, constant, strict, below = found
            x, y = graph.values[x_vid], graph.values[y_vid]
            if compare.ring != n.ring or x.ring != n.ring or y.ring != n.ring or not y.is_float:
                continue
            if not _computed(graph, y_vid) or from_non_float(graph, y_vid) or from_non_float(graph, x_vid):
                continue
            bound = bound_for(n.location.scope) if bound_for is not None else None
            if not threshold_select.selects(n.ring, mixed=mixed, bound=bound, secret=True, float_operand=True):
                continue
            n.kind = "call"
            n.kernel = threshold_select.NAME
            n.params = {
                "constant": constant,
                "strict": strict,
                "below": below,
                "bound": bound,
                "resolution_bits": threshold_select.DEFAULT_RESOLUTION_BITS,
            }
            n.operands = [x_vid, y_vid]
            users[ind_vid] = [u for u in users.get(ind_vid, []) if u != n.id]
            if n.id not in users.setdefault(x_vid, []):
                users[x_vid].append(n.id)
            _remove_unread(graph, users, [convert, compare])
            break


def is_mixed(graph: Graph) -> bool:
    """Whether the program has values in an FXP32 ring (Ditto's mixed rings)."""
    return any(v.ring is not None and v.ring.field == "FM32" for v in graph.values)


def _select_rsqrt(graph: Graph, policy, mixed: bool) -> None:
    value_range = getattr(policy, "rsqrt_range", None)
    for n in graph.nodes:
        if n.kind != "op" or n.const or n.op_name != "stablehlo.rsqrt":
            continue
        x = graph.values[n.operands[0]]
        if x.ring != n.ring or not rsqrt.selects(
            n.ring, value_range=value_range, mixed=mixed, secret=_computed(graph, x.id), float_operand=x.is_float
        ):
            continue
        assert value_range is not None  # rsqrt.selects needs one
        n.kind = "call"
        n.kernel = rsqrt.NAME
        n.params = {"low": value_range[0], "high": value_range[1]}


def _select_sums(graph: Graph, mixed: bool) -> None:
    """Reduce-adds of secret fixed-point values with a zero init -> ``sum_local``."""
    for n in graph.nodes:
        if n.kind != "op" or n.const or n.op_name != "stablehlo.reduce" or n.ring is None:
            continue
        dims = _reduce_dims(n, "stablehlo.add")
        if dims is None:
            continue
        x, init = n.operands
        value = graph.values[x]
        if value.ring != n.ring or _computed(graph, init) or _splat_constant(graph, init) != 0.0:
            continue
        if not local_sum.selects(n.ring, mixed=mixed, secret=_computed(graph, x), float_operand=value.is_float):
            continue
        n.kind = "call"
        n.kernel = local_sum.NAME
        n.params = {"axes": dims}
        n.operands = [x]


def from_non_float(graph: Graph, vid: int) -> bool:
    """Whether value ``vid`` is a converted boolean or integer (through broadcasts and
    reshapes): SPU may hold it as a boolean share, which an arithmetic kernel cannot take
    (and SPU multiplies by it cheaply)."""
    while True:
        producer = graph.values[vid].producer
        if producer is None:
            return False
        node = graph.nodes[producer]
        if node.op_name in ("stablehlo.broadcast_in_dim", "stablehlo.reshape"):
            vid = node.operands[0]
            continue
        if node.op_name == "stablehlo.convert":
            return not graph.values[node.operands[0]].is_float
        return False


def _select_multiplies(graph: Graph, mixed: bool) -> None:
    """Elementwise products -> ``multiply`` (secret × secret, or secret × splat constant
    with the constant in ``params``); a division of a secret by a splat constant c is
    the product with 1/c."""
    for n in graph.nodes:
        if n.kind != "op" or n.const or n.ring is None:
            continue
        if n.op_name == "stablehlo.divide":
            _select_division_by_constant(graph, n, mixed)
            continue
        if n.op_name != "stablehlo.multiply":
            continue
        result = graph.values[n.results[0]]
        secret = [v for v in n.operands if _computed(graph, v)]
        if any(graph.values[v].ring != n.ring or from_non_float(graph, v) for v in secret):
            continue
        constant = None
        if len(secret) == 1:
            constant = _splat_constant(graph, next(v for v in n.operands if v not in secret))
        if not multiply.selects(
            n.ring,
            mixed=mixed,
            elements=math.prod(result.shape),
            secret_operands=len(secret),
            public_splat=constant is not None,
            float_result=result.is_float,
        ):
            continue
        n.kind = "call"
        n.kernel = multiply.NAME
        n.params = {} if constant is None else {"constant": constant}
        n.operands = list(n.operands) if constant is None else secret


def _select_division_by_constant(graph: Graph, n, mixed: bool) -> None:
    x_vid, c_vid = n.operands
    x, result = graph.values[x_vid], graph.values[n.results[0]]
    if not _computed(graph, x_vid) or _computed(graph, c_vid) or x.ring != n.ring or from_non_float(graph, x_vid):
        return
    constant = _splat_constant(graph, c_vid)
    if constant is None or constant == 0.0 or not math.isfinite(constant):
        return
    if not multiply.selects(
        n.ring,
        mixed=mixed,
        elements=math.prod(result.shape),
        secret_operands=1,
        public_splat=True,
        float_result=result.is_float,
    ):
        return
    n.kind = "call"
    n.kernel = multiply.NAME
    n.params = {"constant": 1.0 / constant}
    n.operands = [x_vid]


def _select_exps(graph: Graph) -> None:
    """exp(cast(clamp(max-shift(x)))) -> ``exp_taylor_fxp32`` on the clamp's result."""
    users = graph.users()
    for n in list(graph.nodes):
        if n.kind != "op" or n.const or n.op_name != "stablehlo.exponential" or n.ring is None:
            continue
        cast = _producer(graph, n.operands[0])
        if cast is None or not cast.is_cast:
            continue
        clamp = _producer(graph, cast.operands[0])
        if clamp is None or clamp.kernel != reduce_max.CLAMP_NAME:
            continue
        shift = _producer(graph, clamp.operands[0])
        shifted = shift is not None and shift.kernel == reduce_max.MAX_NAME and bool(shift.params.get("shift"))
        source = graph.values[cast.operands[0]]
        slack = reduce_max.max_slack(shift.params) if shifted else 0.0
        if not graph.values[n.results[0]].is_float or not exp_taylor.selects(
            n.ring, source_ring=source.ring, cutoff=clamp.params.get("constant"), shifted=shifted, slack=slack
        ):
            continue
        n.kind = "call"
        n.kernel = exp_taylor.NAME
        n.params = {"frac_bits": n.ring.frac_bits}
        if _only_use(graph, users, cast.results[0], n.id):
            _remove(users, cast)
        users.setdefault(source.id, []).append(n.id)
        n.operands = [source.id]


def _select_divides(graph: Graph, mixed: bool) -> None:
    """``divide(a, broadcast(sum_local(exp_taylor_fxp32(...))))`` (the softmax's
    normalisation) -> ``divide_calibrated`` on a and the un-broadcast sum, whose range
    follows from the structure (:func:`ditto_spu.kernels.divide.softmax_denominator_range`)."""
    users = graph.users()
    for n in list(graph.nodes):
        if n.kind != "op" or n.const or n.op_name != "stablehlo.divide" or n.ring is None:
            continue
        a_vid, b_vid = n.operands
        source = _broadcast_source(graph, b_vid)
        if source is None:
            continue
        sum_vid, dims, chain = source
        total = _producer(graph, sum_vid)
        if total is None or total.kernel != local_sum.NAME:
            continue
        exp = _producer(graph, total.operands[0])
        if exp is None or exp.kernel != exp_taylor.NAME:
            continue
        clamp = _producer(graph, exp.operands[0])
        shift = _producer(graph, clamp.operands[0]) if clamp is not None else None
        if shift is None or shift.kernel != reduce_max.MAX_NAME:
            continue
        entries = math.prod(graph.values[exp.results[0]].shape[d] for d in total.params["axes"])
        value_range = divide.softmax_denominator_range(entries, reduce_max.max_slack(shift.params))
        a, b = graph.values[a_vid], graph.values[sum_vid]
        if a.ring != n.ring or b.ring != n.ring or not graph.values[n.results[0]].is_float:
            continue
        if not divide.selects(n.ring, value_range=value_range, mixed=mixed, secret=_computed(graph, a_vid), float_operand=a.is_float):
            continue
        n.kind = "call"
        n.kernel = divide.NAME
        n.params = {"low": value_range[0], "high": value_range[1], "broadcast_dims": list(dims)}
        n.operands = [a_vid, sum_vid]
        users[b_vid] = [u for u in users.get(b_vid, []) if u != n.id]
        users.setdefault(sum_vid, []).append(n.id)
        _remove_unread(graph, users, chain)


def _producer(graph: Graph, vid: int):
    producer = graph.values[vid].producer
    return graph.nodes[producer] if producer is not None else None


def select_kernels(
    graph: Graph,
    *,
    matmul_fxp32: bool = True,
    min_macs: int = DEFAULT_MIN_MACS,
    maxima: bool | None = None,
    policy=None,
) -> Graph:
    """Mark kernel nodes (see the module doc). ``maxima`` defaults to ``matmul_fxp32``:
    one switch turns ditto-spu's own kernels on or off."""
    if maxima if maxima is not None else matmul_fxp32:
        mixed = is_mixed(graph)
        _select_maxima(graph, policy)
        _select_thresholds(graph, policy, mixed)
        _select_rsqrt(graph, policy, mixed)
        _select_sums(graph, mixed)
        _select_multiplies(graph, mixed)
        _fuse_max_shifts(graph)
        _select_exps(graph)
        _select_divides(graph, mixed)
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
    _fuse_bias_adds(graph)
    return graph


def _fuse_max_shifts(graph: Graph) -> None:
    """``subtract(x, broadcast(max_reduced_ring(x)))`` (the softmax's x − max) -> the max
    kernel with ``params["shift"]``: it returns x − max itself (exact, local), when the
    max feeds only that broadcast and the broadcast runs along the reduced axis."""
    users = graph.users()
    for sub in list(graph.nodes):
        if sub.kind != "op" or sub.op_name != "stablehlo.subtract" or sub.const:
            continue
        x_vid, b_vid = sub.operands
        source = _broadcast_source(graph, b_vid)
        if source is None:
            continue
        max_vid, dims, chain = source
        mx = _producer(graph, max_vid)
        if mx is None or mx.kernel != reduce_max.MAX_NAME or mx.operands != [x_vid] or mx.params.get("shift"):
            continue
        axis = mx.params["axis"]
        ndim = len(graph.values[x_vid].shape)
        if not _only_use(graph, users, max_vid, chain[-1].id) or dims != [d for d in range(ndim) if d != axis % ndim]:
            continue
        if graph.values[sub.results[0]].elem != graph.values[x_vid].elem or sub.ring != mx.ring:
            continue
        mx.params["shift"] = True
        _absorb(graph, users, mx, sub, chain)


def _only_use(graph: Graph, users: dict, vid: int, node_id: int) -> bool:
    """Whether node ``node_id`` is the one reader of value ``vid`` (not an output either)."""
    return users.get(vid) == [node_id] and vid not in graph.outputs


def _remove(users: dict, node) -> None:
    """Mark ``node`` removed and drop it from the readers of its inputs (``users`` stays
    the graph's :meth:`~passes.graph.Graph.users`, without recomputing it)."""
    node.kind = "removed"
    for vid in dict.fromkeys(node.inputs):
        users[vid] = [u for u in users.get(vid, []) if u != node.id]


def _absorb(graph: Graph, users: dict, kernel, op, chain: list) -> None:
    """``kernel`` takes over ``op``'s result (the op is removed), and each node of the
    broadcast ``chain`` (outermost first) that nobody reads any more is removed too."""
    kernel.results = list(op.results)
    for vid in op.results:
        graph.values[vid].producer = kernel.id
    _remove(users, op)
    _remove_unread(graph, users, chain)


def _remove_unread(graph: Graph, users: dict, chain: list) -> None:
    """Remove each node of a broadcast ``chain`` (outermost first) that nobody reads any
    more and that is not an output."""
    for node in chain:
        if not users.get(node.results[0]) and node.results[0] not in graph.outputs:
            _remove(users, node)


def _broadcast_source(graph: Graph, vid: int):
    """(source value id, composed broadcast dimensions, [broadcast nodes]) of a value made
    by a chain of ``stablehlo.broadcast_in_dim`` ops (and reshapes that only insert unit
    dimensions below them), else None."""
    from jaxlib.mlir import ir

    dims, chain = None, []
    while True:
        producer = graph.values[vid].producer
        node = graph.nodes[producer] if producer is not None else None
        if node is None or node.kind != "op" or node.const:
            break
        if node.op_name == "stablehlo.broadcast_in_dim":
            step = list(ir.DenseI64ArrayAttr(node.op.attributes["broadcast_dimensions"]))
        elif node.op_name == "stablehlo.reshape" and dims is not None:
            step = _unit_reshape_dims(graph.values[node.operands[0]].shape, graph.values[vid].shape)
            if step is None:
                break
        else:
            break
        dims = step if dims is None else [dims[d] for d in step]  # operand dim -> final dim
        chain.append(node)
        vid = node.operands[0]
    return (vid, dims, chain) if chain else None


def _unit_reshape_dims(src: tuple, dst: tuple):
    """For a reshape that only inserts size-1 dimensions (Flax's bias reshape (n,) ->
    (1, 1, n), keepdims after a reduce): where each source dimension lands in the
    result, else None."""
    dims, j = [], 0
    for size in src:
        while j < len(dst) and dst[j] != size and dst[j] == 1:
            j += 1
        if j == len(dst) or dst[j] != size:
            return None
        dims.append(j)
        j += 1
    return dims if all(d == 1 for d in dst[j:]) else None


def _fuse_bias_adds(graph: Graph) -> None:
    """``add(matmul, broadcast_in_dim(bias))`` -> the matmul kernel with the bias as a third
    input (``params["bias_dims"]``: where the bias's dimensions land in the product, the
    broadcasts composed), when the product feeds only that add and the bias is a secret
    value of the same ring defined before the product. The add is exact in both places;
    in the kernel it costs no SPU segment."""
    users = graph.users()
    position = {node.id: i for i, node in enumerate(graph.topological_nodes())}
    for add in list(graph.nodes):
        if add.kind != "op" or add.op_name != "stablehlo.add" or add.const or len(add.operands) != 2:
            continue
        for mm_vid, b_vid in (add.operands, add.operands[::-1]):
            mm = _producer(graph, mm_vid)
            source = _broadcast_source(graph, b_vid)
            if mm is None or source is None or mm.kernel != MATMUL_FXP32 or len(mm.operands) != 2:
                continue
            if not _only_use(graph, users, mm_vid, add.id) or mm.ring != add.ring:
                continue
            bias_vid, dims, chain = source
            bias = graph.values[bias_vid]
            bias_at = position.get(bias.producer, -1) if bias.producer is not None else -1
            if bias.ring != add.ring or not _computed(graph, bias_vid) or bias_at > position[mm.id]:
                continue
            if graph.values[add.results[0]].elem != graph.values[mm_vid].elem:
                continue
            mm.operands = list(mm.operands) + [bias_vid]
            users.setdefault(bias_vid, []).append(mm.id)
            mm.params["bias_dims"] = dims
            _absorb(graph, users, mm, add, chain)
            break
