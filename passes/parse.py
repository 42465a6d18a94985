"""parse: StableHLO (text or ir.Module) -> a flat :class:`~passes.graph.Graph` of ``@main``.

Contract:

* the module is parsed with the MLIR Python bindings shipped in jaxlib, in a fresh context
  with the stablehlo dialect registered;
* every ``func.call`` (jax emits them for nested ``jit`` and many ``jnp`` functions, also
  inside loop bodies) is inlined into ``@main``, recursively;
* every value must be a statically shaped tensor of a supported element type (f16, bf16,
  f32, f64, signed/unsigned integers, i1); anything else — complex, f8, tokens, dynamic
  shapes, side-effecting ops, calls to functions without a body, recursion — raises
  :class:`~passes.graph.CompileError` naming the op and its location.

Locations are kept (print modules with debug info): they carry jax's name scopes, which
the policy's per-scope overrides match.
"""

from __future__ import annotations

from .graph import CompileError, Graph, Node, Value, dtype_name, parse_location

# Ops with effects or host interaction: they have no meaning in a secure computation.
UNSUPPORTED_OPS = {
    "stablehlo.infeed": "host I/O",
    "stablehlo.outfeed": "host I/O",
    "stablehlo.send": "host I/O",
    "stablehlo.recv": "host I/O",
    "stablehlo.after_all": "tokens",
    "stablehlo.create_token": "tokens",
    "stablehlo.optimization_barrier": "not handled by SPU",
    "stablehlo.all_reduce": "collectives",
    "stablehlo.all_gather": "collectives",
    "stablehlo.all_to_all": "collectives",
    "stablehlo.collective_permute": "collectives",
    "stablehlo.reduce_scatter": "collectives",
    "stablehlo.partition_id": "collectives",
    "stablehlo.replica_id": "collectives",
    "stablehlo.dynamic_broadcast_in_dim": "dynamic shapes",
    "stablehlo.dynamic_reshape": "dynamic shapes",
    "stablehlo.dynamic_iota": "dynamic shapes",
    "stablehlo.get_dimension_size": "dynamic shapes",
}

_MAX_INLINE_ROUNDS = 64


def _ir():
    from jaxlib.mlir import ir

    return ir


def make_context():
    """A fresh MLIR context with every dialect jax uses (stablehlo, chlo, func, ...)."""
    from jax._src.interpreters import mlir as jmlir

    return jmlir.make_ir_context()


def module_text(module) -> str:
    """Print an ir.Module (or return text as is), keeping locations."""
    if isinstance(module, (str, bytes)):
        return module.decode() if isinstance(module, bytes) else module
    op = getattr(module, "operation", module)
    return op.get_asm(enable_debug_info=True)


def parse_module(source, *, entry: str = "main") -> Graph:
    """Parse StableHLO ``source`` (text, bytes or an ir.Module) into a Graph of ``@entry``."""
    ir = _ir()
    text = module_text(source)
    ctx = make_context()
    with ctx, ir.Location.unknown():
        try:
            module = ir.Module.parse(text)
        except Exception as e:  # MLIR reports the parse error text in the exception
            raise CompileError(f"cannot parse the StableHLO module: {e}") from None
        funcs = {}
        for op in module.body.operations:
            if op.operation.name == "func.func":
                funcs[ir.StringAttr(op.attributes["sym_name"]).value] = op
        if entry not in funcs:
            raise CompileError(
                f"the module has no function @{entry} (functions: {', '.join(funcs) or 'none'})"
            )
        main = funcs[entry]
        _inline_calls(main, funcs)
        graph = _build_graph(ctx, module, main)
    return graph


# ---- inlining -----------------------------------------------------------------------------


def _walk_ops(op):
    """``op`` and every op nested in its regions, pre-order."""
    yield op
    for region in op.regions:
        for block in region.blocks:
            for inner in block.operations:
                yield from _walk_ops(inner.operation)


def _block_ops(block):
    return [o.operation for o in block.operations]


def _remap_operands(op, mapping):
    for inner in _walk_ops(op):
        for i, v in enumerate(inner.operands):
            if v in mapping:
                inner.operands[i] = mapping[v]


def _inline_calls(main, funcs):
    ir = _ir()
    for _ in range(_MAX_INLINE_ROUNDS):
        calls = [o for o in _walk_ops(main.operation) if o.name == "func.call"]
        if not calls:
            return
        for call in calls:
            callee_name = ir.FlatSymbolRefAttr(call.attributes["callee"]).value
            callee = funcs.get(callee_name)
            where = parse_location(str(call.location))
            if callee is None or len(callee.regions[0].blocks) == 0:
                raise CompileError(
                    f"func.call to @{callee_name} at {where}: the function has no body in "
                    f"this module, so it cannot be inlined; export the module with the "
                    f"callee's definition"
                )
            blocks = list(callee.regions[0].blocks)
            if len(blocks) != 1:
                raise CompileError(
                    f"func.call to @{callee_name} at {where}: the callee has "
                    f"{len(blocks)} blocks; only single-block functions can be inlined"
                )
            body = blocks[0]
            mapping = {arg: operand for arg, operand in zip(body.arguments, call.operands)}
            ops = _block_ops(body)
            ip = ir.InsertionPoint(call)
            for op in ops[:-1]:
                new = op.clone(ip=ip)
                _remap_operands(new, mapping)
                for old_r, new_r in zip(op.results, new.results):
                    mapping[old_r] = new_r
            ret = ops[-1]
            for i, r in enumerate(call.results):
                v = ret.operands[i]
                r.replace_all_uses_with(mapping.get(v, v))
            call.erase()
    raise CompileError(
        f"func.call nesting deeper than {_MAX_INLINE_ROUNDS} levels (recursion?) in @main"
    )


# ---- graph building ------------------------------------------------------------------------


def _tensor_info(type_, what: str):
    """(shape, elem) of a static tensor type; CompileError for anything else."""
    ir = _ir()
    if not ir.RankedTensorType.isinstance(type_):
        raise CompileError(f"{what} has type {type_}, which is not a ranked tensor")
    t = ir.RankedTensorType(type_)
    if not t.has_static_shape:
        raise CompileError(f"{what} has dynamic shape {type_}; ditto-spu needs static shapes")
    elem = str(t.element_type)
    try:
        dtype_name(elem)
    except CompileError:
        raise CompileError(
            f"{what} has element type {elem}, which ditto-spu does not support "
            f"(supported: f16, bf16, f32, f64, integers, i1)"
        ) from None
    return tuple(t.shape), elem


def _check_nested(op, where):
    """Reject unsupported ops and types anywhere inside ``op``'s regions."""
    for inner in _walk_ops(op):
        if inner.name in UNSUPPORTED_OPS:
            loc = parse_location(str(inner.location))
            raise CompileError(
                f"unsupported op {inner.name} ({UNSUPPORTED_OPS[inner.name]}) at {loc}"
                + ("" if inner is op else f", inside {op.name} at {where}")
            )
        if inner is not op:
            for r in inner.results:
                _tensor_info(r.type, f"result of {inner.name} at {parse_location(str(inner.location))}")


def _build_graph(ctx, module, main) -> Graph:
    blocks = list(main.regions[0].blocks)
    if len(blocks) != 1:
        raise CompileError(f"@main has {len(blocks)} blocks; expected one")
    block = blocks[0]
    graph = Graph(ctx, module, [], [], [], [], [], [])
    by_mlir = {}
    for i, arg in enumerate(block.arguments):
        shape, elem = _tensor_info(arg.type, f"argument {i} of @main")
        v = Value(len(graph.values), shape, elem, None, mlir=arg, arg_index=i)
        graph.values.append(v)
        graph.args.append(v.id)
        graph.arg_names.append("")
        by_mlir[arg] = v.id
    ops = _block_ops(block)
    for op in ops[:-1]:
        loc = parse_location(str(op.location))
        _check_nested(op, loc)
        node = Node(len(graph.nodes), "op", op.name, [], [], loc, op=op)
        for operand in op.operands:
            node.operands.append(by_mlir[operand])
        # implicit captures: values used inside regions but defined outside the op
        if len(op.regions):
            inside = set()
            for inner in _walk_ops(op):
                if inner is not op:
                    inside.update(inner.results)
                for region in inner.regions:
                    for b in region.blocks:
                        inside.update(b.arguments)
            seen = set()
            for inner in _walk_ops(op):
                if inner is op:
                    continue
                for operand in inner.operands:
                    if operand not in inside and operand not in seen:
                        seen.add(operand)
                        node.captures.append((operand, by_mlir[operand]))
        for j, r in enumerate(op.results):
            shape, elem = _tensor_info(r.type, f"result {j} of {op.name} at {loc}")
            v = Value(len(graph.values), shape, elem, node.id, mlir=r)
            graph.values.append(v)
            node.results.append(v.id)
            by_mlir[r] = v.id
        graph.nodes.append(node)
    ret = ops[-1]
    for v in ret.operands:
        graph.outputs.append(by_mlir[v])
    ir = _ir()
    res_attrs = main.attributes["res_attrs"] if "res_attrs" in main.attributes else None
    for i in range(len(graph.outputs)):
        name = ""
        if res_attrs is not None:
            d = ir.DictAttr(ir.ArrayAttr(res_attrs)[i])
            if "jax.result_info" in d:
                name = ir.StringAttr(d["jax.result_info"]).value
        graph.output_names.append(name)
    return graph
