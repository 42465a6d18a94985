"""emit: partitioned Graph -> a serializable :class:`~ditto_spu.plan.Plan`.

Contract:

* each :class:`~passes.partition.SegmentPart` becomes a standalone module with one
  ``func.func public @main(inputs...) -> outputs...`` holding clones of its ops (regions
  included) and of the constant-only ops it needs; :func:`segment_text` prints it and,
  unless ``compile=False``, stock ``spu.compile`` (STABLEHLO source, every input
  VIS_SECRET) turns it into the Segment's ``code``. Identical segment texts (identical
  Transformer layers) are compiled once;
* inside a segment every f16/bf16 value is typed f32 and float->float converts vanish:
  all floats are the ring's fixed point to SPU, and stock SPU rejects bf16 and fails on
  secret converts to f16 (the plan's VarInfo keeps the logical dtype);
* each :class:`~passes.partition.CastPart` becomes a ``KernelStep`` with kernel
  ``"cast"``: the runtime picks the registered kernel for (src_ring, dst_ring);
* variables get global names: ``in{i}`` for argument ``i``, ``v{id}`` for other values;
  every variable has a VarInfo (ring, shape, logical dtype); one InputBinding per
  function argument (secret, owner ``client``), one OutputBinding per distinct result.
"""

from __future__ import annotations

import dataclasses

from ditto_spu.plan import InputBinding, KernelCall, KernelStep, OutputBinding, Plan, Segment, Step, VarInfo

from .graph import CompileError, Graph, parse_location
from .parse import _walk_ops
from .partition import CallPart, CastPart, SegmentPart

_CODE_CACHE: dict = {}


@dataclasses.dataclass
class Emitted:
    """What :func:`emit` produced: the plan and the variable name of each graph value."""

    plan: Plan
    names: dict  # value id -> variable name
    input_names: list  # per function argument
    output_names: list  # per function result (may repeat)


def variable_names(graph: Graph) -> dict:
    names = {}
    for i, vid in enumerate(graph.args):
        names[vid] = f"in{i}"
    for v in graph.values:
        names.setdefault(v.id, f"v{v.id}")
    return names


_NARROW_FLOATS = ("f16", "bf16")


def _spu_type_str(v) -> str:
    """The type a value has inside a segment: f16/bf16 become f32 (see _canonicalize_floats)."""
    if v.elem in _NARROW_FLOATS:
        dims = "".join(f"{d}x" for d in v.shape)
        return f"tensor<{dims}f32>"
    return v.type_str


def _f32_bits(bits: int, elem: str) -> int:
    import numpy as np

    if elem == "bf16":
        return bits << 16
    return int(np.array([bits], np.uint16).view(np.float16).astype(np.float32).view(np.uint32)[0])


def _narrow_constant_to_f32(attr_text: str, elem: str) -> str:
    """Rewrite an f16/bf16 dense attribute's text as the same values in f32 (exact).

    The MLIR Python bindings of jaxlib 0.4.34 cannot read bf16 elements (they abort), so
    the attribute's printed form is rewritten: decimal literals stay, hex element bits
    (``0xFF80``) and hex blobs (``"0x..."``, little-endian raw elements) are widened.
    """
    import re

    def blob(m):
        raw = bytes.fromhex(m.group(1))
        out = bytearray()
        for i in range(0, len(raw), 2):
            out += _f32_bits(int.from_bytes(raw[i : i + 2], "little"), elem).to_bytes(4, "little")
        return '"0x' + out.hex().upper() + '"'

    text = re.sub(r'"0x([0-9A-Fa-f]+)"', blob, attr_text)
    text = re.sub(
        r"(?<![\w\"])0x([0-9A-Fa-f]{4})\b",
        lambda m: f"0x{_f32_bits(int(m.group(1), 16), elem):08X}",
        text,
    )
    return text.replace(f"x{elem}>", "xf32>").replace(f"<{elem}>", "<f32>")


def _canonicalize_floats(fn) -> None:
    """Type every f16/bf16 value of a segment as f32 and drop float->float converts.

    Inside one SPU runtime every float is the same fixed point, but stock SPU 0.9.5 has
    no bf16 in pphlo and fails at run time on a secret convert to f16 ("expect to_type
    FXP, got F16", hal/type_cast.cc). A segment therefore uses f32 only; the plan keeps
    the logical dtype (float16, bfloat16) in VarInfo.
    """
    from jaxlib.mlir import ir

    def fix(value):
        t = value.type
        if ir.RankedTensorType.isinstance(t):
            rt = ir.RankedTensorType(t)
            if str(rt.element_type) in _NARROW_FLOATS:
                value.set_type(ir.RankedTensorType.get(rt.shape, ir.F32Type.get()))

    for op in list(_walk_ops(fn.operation)):
        if op is fn.operation:
            continue
        if op.name == "stablehlo.bitcast_convert":
            types = [str(v.type) for v in list(op.operands) + list(op.results)]
            if any(e in t for t in types for e in ("f16>", "bf16>")):
                raise CompileError(
                    f"stablehlo.bitcast_convert of a 16-bit float at "
                    f"{parse_location(str(op.location))} cannot run in SPU's fixed point"
                )
        if op.name == "stablehlo.constant":
            t = ir.RankedTensorType(op.results[0].type)
            elem = str(t.element_type)
            if elem in _NARROW_FLOATS:
                op.attributes["value"] = ir.Attribute.parse(
                    _narrow_constant_to_f32(str(op.attributes["value"]), elem)
                )
        for r in op.results:
            fix(r)
        for region in op.regions:
            for block in region.blocks:
                for a in block.arguments:
                    fix(a)
    for op in list(_walk_ops(fn.operation)):
        if op.name == "stablehlo.convert" and op.operands[0].type == op.results[0].type:
            op.results[0].replace_all_uses_with(op.operands[0])
            op.erase()


def segment_module(graph: Graph, part: SegmentPart):
    """Build the standalone ir.Module of one segment (in the graph's context)."""
    from jaxlib.mlir import ir
    from jaxlib.mlir.dialects import func

    values = graph.values
    with graph.context, ir.Location.unknown():
        module = ir.Module.create()
        in_types = [ir.Type.parse(_spu_type_str(values[v])) for v in part.inputs]
        out_types = [ir.Type.parse(_spu_type_str(values[v])) for v in part.outputs]
        with ir.InsertionPoint(module.body):
            # jaxlib's FuncOp wrapper takes visibility= (its generated base, which the type
            # stubs describe, calls it sym_visibility)
            fn = func.FuncOp("main", (in_types, out_types), visibility="public")  # type: ignore[call-arg]
            block = fn.add_entry_block()
        mapping = {vid: block.arguments[i] for i, vid in enumerate(part.inputs)}
        ip = ir.InsertionPoint(block)
        for nid in list(part.consts) + list(part.nodes):
            node = graph.nodes[nid]
            new = node.op.clone(ip=ip)
            for i, vid in enumerate(node.operands):
                new.operands[i] = mapping[vid]
            if node.captures:
                captured = {mv: mapping[vid] for mv, vid in node.captures}
                for inner in _walk_ops(new):
                    if inner is new:
                        continue
                    for i, operand in enumerate(inner.operands):
                        if operand in captured:
                            inner.operands[i] = captured[operand]
            for old, r in zip(node.results, new.results):
                mapping[old] = r
        func.ReturnOp([mapping[v] for v in part.outputs], ip=ip)
        _canonicalize_floats(fn)
        if not module.operation.verify():
            raise CompileError(f"internal error: segment {part.index} does not verify")
    return module


def segment_text(graph: Graph, part: SegmentPart, *, debug_info: bool = False) -> str:
    """StableHLO text of one segment, as handed to ``spu.compile``."""
    return segment_module(graph, part).operation.get_asm(enable_debug_info=debug_info)


def _copts_key(copts):
    if copts is None:
        return None
    return tuple(
        (k, str(getattr(copts, k))) for k in sorted(dir(copts)) if not k.startswith("_")
        and not callable(getattr(copts, k))
    )


def spu_compile(text: str, num_inputs: int, copts=None) -> bytes:
    """Compile one segment's StableHLO with stock SPU (all inputs secret), cached: the one
    compile helper, :func:`ditto_spu.mpc.segments.compile_stablehlo`, with its compiler options
    (:func:`ditto_spu.mpc.segments.compiler_options`) unless ``copts`` is given."""
    key = (text, _copts_key(copts))
    if key in _CODE_CACHE:
        return _CODE_CACHE[key]
    from ditto_spu.mpc.segments import compile_stablehlo

    try:
        code = compile_stablehlo(text, num_inputs, copts)
    except Exception as e:
        raise CompileError(f"spu.compile rejected a segment: {e}\n--- segment ---\n{text}") from None
    _CODE_CACHE[key] = code
    return code


def emit(graph: Graph, parts: list, *, compile: bool = True, copts=None) -> Emitted:
    names = variable_names(graph)
    values = graph.values
    variables = {}

    def info(vid):
        v = values[vid]
        return VarInfo(v.ring, v.shape, v.dtype)

    inputs = []
    for vid in graph.args:
        variables[names[vid]] = info(vid)
        inputs.append(InputBinding(names[vid], info(vid)))
    steps: list[Step] = []
    seg_count = cast_count = call_count = 0
    for part in parts:
        if isinstance(part, SegmentPart):
            if not part.outputs:
                continue  # dead code: nothing it computes is used
            text = segment_text(graph, part)
            code = spu_compile(text, len(part.inputs), copts) if compile else b""
            for vid in part.outputs:
                variables[names[vid]] = info(vid)
            steps.append(
                Segment(
                    f"seg{seg_count}" + (f"_{part.label}" if part.label else ""),
                    part.ring,
                    code,
                    tuple(names[v] for v in part.inputs),
                    tuple(names[v] for v in part.outputs),
                    text,
                )
            )
            seg_count += 1
        elif isinstance(part, CallPart):
            for vid in part.outputs:
                variables[names[vid]] = info(vid)
            input_rings = [graph.values[v].ring for v in part.inputs]
            steps.append(
                KernelCall(
                    f"{part.kernel}{call_count}",
                    part.kernel,
                    tuple(names[v] for v in part.inputs),
                    tuple(names[v] for v in part.outputs),
                    part.ring,
                    part.params,
                    tuple(input_rings) if any(r != part.ring for r in input_rings) else (),
                )
            )
            call_count += 1
        elif isinstance(part, CastPart):
            variables[names[part.dst]] = info(part.dst)
            steps.append(
                KernelStep(
                    f"cast{cast_count}",
                    "cast",
                    names[part.src],
                    names[part.dst],
                    part.src_ring,
                    part.dst_ring,
                )
            )
            cast_count += 1
    outputs = []
    seen = set()
    for vid in graph.outputs:
        if names[vid] not in seen:
            seen.add(names[vid])
            outputs.append(OutputBinding(names[vid], info(vid)))
    plan = Plan(tuple(steps), tuple(inputs), tuple(outputs), variables)
    try:
        plan.validate()
    except Exception as e:
        raise CompileError(f"internal error: emitted plan is inconsistent: {e}") from e
    return Emitted(
        plan,
        names,
        [names[v] for v in graph.args],
        [names[v] for v in graph.outputs],
    )
