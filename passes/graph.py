"""The compiler's vocabulary: a flat dataflow graph over one StableHLO function.

:func:`passes.parse.parse_module` builds a :class:`Graph` from StableHLO; every later pass
reads and refines it:

* a :class:`Value` is one SSA tensor (a function argument, an op result, or a cast
  result the compiler made up), with its shape, MLIR element type and — after
  ``annotate_rings`` — the :class:`~ditto_spu.rings.RingSpec` it lives in;
* a :class:`Node` is one top-level op of the function (its regions stay inside it, never
  split) or a ring cast (``kind == "cast"``). ``operands`` are the op's explicit operands;
  ``captures`` are values its regions use implicitly (``stablehlo.case`` branches do).

Nodes are kept in a topological order: ``graph.nodes`` is program order, and cast nodes
the compiler inserts record the node they follow in ``after``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ditto_spu.errors import DittoError
from ditto_spu.rings import RingSpec


class CompileError(DittoError):
    """A program cannot be compiled to a mixed-ring Plan; says which op, where, and why."""


# MLIR element type spelling -> logical numpy-style dtype name used in VarInfo.
_DTYPE_NAMES = {
    "f16": "float16",
    "bf16": "bfloat16",
    "f32": "float32",
    "f64": "float64",
    "i1": "bool",
    "i8": "int8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "ui8": "uint8",
    "ui16": "uint16",
    "ui32": "uint32",
    "ui64": "uint64",
}
FLOAT_ELEMS = frozenset({"f16", "bf16", "f32", "f64"})


def dtype_name(elem: str) -> str:
    """Logical dtype name (``"float16"``, ``"int32"``, ``"bool"``) of an MLIR element type."""
    try:
        return _DTYPE_NAMES[elem]
    except KeyError:
        raise CompileError(f"element type {elem!r} is not supported") from None


def is_float(elem: str) -> bool:
    return elem in FLOAT_ELEMS


@dataclasses.dataclass
class Value:
    """One tensor of the program."""

    id: int
    shape: tuple
    elem: str  # MLIR spelling: f16, bf16, f32, i32, i1, ...
    producer: int | None  # node id; None for function arguments
    mlir: object = None  # the original ir.Value (None for values the compiler made up)
    arg_index: int | None = None
    ring: RingSpec | None = None

    @property
    def dtype(self) -> str:
        return dtype_name(self.elem)

    @property
    def is_float(self) -> bool:
        return is_float(self.elem)

    @property
    def type_str(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        return f"tensor<{dims}{self.elem}>"

    @property
    def label(self) -> str:
        return f"%a{self.arg_index}" if self.arg_index is not None else f"%v{self.id}"


@dataclasses.dataclass
class Location:
    """Where an op came from: jax name scope and the first source position, if known."""

    scope: str = ""  # e.g. "encoder/layer/3/attention/self/query/dot_general"
    source: str = ""  # e.g. "model.py:41:12"

    def __str__(self) -> str:
        parts = [p for p in (self.scope, self.source) if p]
        return " at ".join(parts) if parts else "unknown location"


_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"(:\d+:\d+)?')
_JIT_PREFIX_RE = re.compile(r"^(?:(?:jit|pjit|pmap|xla_computation)\([^/]*\)/)+")


def parse_location(text: str) -> Location:
    """Read a printed MLIR location (``loc("jit(f)/jit(main)/a/b/add"(callsite(...)))``).

    The MLIR Python bindings of jaxlib 0.4.34 do not expose a location's parts, so the
    printed form is read: the first name in it is jax's name stack (``jit(...)/`` prefixes
    dropped), the first ``"file":line:col`` is the source position.
    """
    scope = ""
    source = ""
    for m in _STRING_RE.finditer(text):
        if m.group(2):  # a file location
            if not source and m.group(1) not in ("-", ""):
                source = f"{m.group(1)}{m.group(2)}"
        elif not scope:
            scope = _JIT_PREFIX_RE.sub("", m.group(1))
        if scope and source:
            break
    return Location(scope, source)


@dataclasses.dataclass
class Node:
    """A top-level op (regions included) or a ring cast."""

    id: int
    kind: str  # "op" | "cast"
    op_name: str  # "stablehlo.add", ..., or "cast"
    operands: list  # value ids
    results: list  # value ids
    location: Location
    op: object = None  # the ir.Operation (None for casts the compiler inserted)
    captures: list = dataclasses.field(default_factory=list)  # [(ir.Value, value id)]
    ring: RingSpec | None = None
    const: bool = False  # depends on constants only: cloned into each segment needing it
    after: int | None = None  # for inserted casts: the node they follow in program order
    note: str = ""  # why a cast exists ("convert", "edge", "retype")
    kernel: str = ""  # for kind == "call": the registered kernel that runs this op
    params: dict = dataclasses.field(default_factory=dict)  # the kernel's parameters

    @property
    def inputs(self) -> list:
        """Every value the node reads: explicit operands, then region captures."""
        return list(self.operands) + [vid for _, vid in self.captures]

    @property
    def is_cast(self) -> bool:
        return self.kind == "cast"

    @property
    def is_call(self) -> bool:
        return self.kind == "call"

    @property
    def is_step(self) -> bool:
        """A node that becomes a step of its own (a cast or a kernel call), not SPU code."""
        return self.kind in ("cast", "call")

    def describe(self) -> str:
        return f"{self.op_name} at {self.location}"


@dataclasses.dataclass
class Graph:
    """A flat StableHLO function as a dataflow graph (see the module docstring)."""

    context: Any  # ir.Context the ops live in
    module: object  # ir.Module (kept alive: nodes point into it)
    values: list
    nodes: list
    args: list  # value ids of the function arguments, in order
    arg_names: list  # jax's names for them ("x", "params['w']"), "" if unknown
    outputs: list  # value ids returned, in order (may repeat)
    output_names: list  # jax.result_info of each result, "" if unknown

    def new_value(self, shape, elem, producer, ring=None) -> Value:
        v = Value(len(self.values), tuple(shape), elem, producer, ring=ring)
        self.values.append(v)
        return v

    def users(self) -> dict:
        """value id -> ids of the nodes reading it (each node once)."""
        users: dict = {}
        for n in self.nodes:
            if n.kind == "removed":
                continue
            for vid in dict.fromkeys(n.inputs):
                users.setdefault(vid, []).append(n.id)
        return users

    def topological_nodes(self) -> list:
        """Nodes in a dependency-respecting order (inserted casts right after ``after``)."""
        followers: dict = {}
        base = []
        for n in self.nodes:
            if n.after is None:
                base.append(n)
            else:
                followers.setdefault(n.after, []).append(n)
        order = []

        def visit(n):
            if n.kind != "removed":
                order.append(n)
            for f in followers.get(n.id, []):
                visit(f)

        for f in followers.get(-1, []):  # casts of function arguments
            visit(f)
        for n in base:
            visit(n)
        return order


def format_graph(graph: Graph) -> str:
    """The function as annotated IR: one line per node with each value's ring.

    ``%v5 : tensor<4x8xf16> FXP32[f=8] = dot_general(%a0, %v3)   # scope``; constants
    show ``const`` (cloned where used), casts show ``cast src -> dst``.
    """
    vals = graph.values

    def ring_of(v):
        return str(v.ring) if v.ring is not None else "const"

    lines = []
    args = ", ".join(
        f"{vals[a].label}: {vals[a].type_str} {ring_of(vals[a])}"
        + (f" ({graph.arg_names[i]})" if i < len(graph.arg_names) and graph.arg_names[i] else "")
        for i, a in enumerate(graph.args)
    )
    lines.append(f"func @main({args})")
    for n in graph.topological_nodes():
        res = ", ".join(f"{vals[r].label} : {vals[r].type_str} {ring_of(vals[r])}" for r in n.results)
        ins = ", ".join(vals[v].label for v in n.inputs)
        if n.is_cast:
            src = vals[n.operands[0]]
            line = f"  {res} = cast {src.label} {src.ring} -> {n.ring}  [{n.note}]"
        elif n.is_call:
            line = f"  {res} = kernel {n.kernel}({ins})"
        else:
            name = n.op_name.replace("stablehlo.", "")
            regions = f" {{{len(n.op.regions)} region(s)}}" if n.op is not None and len(n.op.regions) else ""
            line = f"  {res} = {name}({ins}){regions}"
        if n.location.scope:
            line += f"    # {n.location.scope}"
        lines.append(line)
    lines.append("  return " + ", ".join(vals[o].label for o in graph.outputs))
    return "\n".join(lines)
