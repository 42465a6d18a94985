"""insert_casts: make every ring change an explicit cast node.

Contract, on a ring-annotated Graph:

* a ``stablehlo.convert`` between float types whose operand lives in another ring than
  the convert becomes a cast node (``kind == "cast"``, ``op_name == "cast"``): the runtime
  runs the registered kernel for (source ring, destination ring) on it;
* any other edge between rings — an op reading a value that lives elsewhere (scope
  overrides, a loop widened to the ring of its widest float) — gets a cast node inserted
  right after the value's definition;
* a value is cast to a given ring at most once: when every crossing into that ring is a
  convert to the same type, the first convert is the cast and the others reuse its
  result; otherwise one cast keeps the value's type and the converts become ordinary
  (in-ring) converts of the cast result;
* integer values cross like floats (the kernels keep them unscaled: 0 fraction bits);
  a boolean (i1) value cannot cross rings — SPU may hold it as a boolean share, which
  the cast kernels do not take — and raises CompileError naming both ops. Convert it to
  an integer or float before it crosses, or give both ops one ring through the policy.

After this pass every op reads only values of its own ring.
"""

from __future__ import annotations

from .graph import CompileError, Graph, Node


def _is_float_convert(graph, node) -> bool:
    if node.op_name != "stablehlo.convert" or node.kind != "op":
        return False
    src = graph.values[node.operands[0]]
    dst = graph.values[node.results[0]]
    return src.is_float and dst.is_float


def insert_casts(graph: Graph) -> Graph:
    values = graph.values
    # (value id, dst ring) -> list of (node, kind) with kind "convert" | "edge"
    crossings: dict = {}
    for n in list(graph.nodes):
        if n.const or n.kind != "op" or n.ring is None:
            continue
        for vid in dict.fromkeys(n.inputs):
            v = values[vid]
            if v.ring is None or v.ring == n.ring:
                continue
            if v.elem == "i1":
                producer = (
                    f"{graph.nodes[v.producer].describe()}"
                    if v.producer is not None
                    else f"argument {v.arg_index}"
                )
                raise CompileError(
                    f"{v.dtype} value {v.label} {v.type_str} defined by {producer} in {v.ring} "
                    f"is used by {n.describe()} in {n.ring}: boolean values cannot change "
                    f"rings; convert it to an integer or float first (e.g. "
                    f"x.astype(jnp.int32)), or adjust the policy so both ops share a ring"
                )
            kind = "convert" if _is_float_convert(graph, n) else "edge"
            crossings.setdefault((vid, n.ring), []).append((n, kind))

    replaced: dict = {}  # value id -> value id that now stands for it
    for (vid, ring), uses in crossings.items():
        v = values[vid]
        convert_elems = {values[n.results[0]].elem for n, k in uses if k == "convert"}
        if all(k == "convert" for _, k in uses) and len(convert_elems) == 1:
            first = uses[0][0]
            first.kind = "cast"
            first.op_name = "cast"
            first.note = "convert"
            for other, _ in uses[1:]:
                replaced[other.results[0]] = first.results[0]
                other.kind = "removed"
            continue
        cast_value = graph.new_value(v.shape, v.elem, None, ring=ring)
        cast = Node(
            len(graph.nodes),
            "cast",
            "cast",
            [vid],
            [cast_value.id],
            graph.nodes[v.producer].location if v.producer is not None else _arg_location(graph, v),
            ring=ring,
            after=v.producer if v.producer is not None else -1,
            note="edge",
        )
        cast_value.producer = cast.id
        graph.nodes.append(cast)
        for n, _ in uses:
            _rewire(n, vid, cast_value.id)

    if replaced:
        for n in graph.nodes:
            for old, new in replaced.items():
                _rewire(n, old, new)
        graph.outputs = [replaced.get(o, o) for o in graph.outputs]
    return graph


def _rewire(node: Node, old: int, new: int) -> None:
    node.operands = [new if o == old else o for o in node.operands]
    node.captures = [(mv, new if vid == old else vid) for mv, vid in node.captures]


def _arg_location(graph, v):
    from .graph import Location

    name = graph.arg_names[v.arg_index] if v.arg_index < len(graph.arg_names) else ""
    return Location(scope=name or f"argument {v.arg_index}")


def casts(graph: Graph) -> list:
    """The cast nodes of a graph, in topological order."""
    return [n for n in graph.topological_nodes() if n.is_cast]
