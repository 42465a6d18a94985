"""annotate_rings: give every value and every op a RingSpec through a Policy.

Contract (the ring rule of :mod:`ditto_spu.semantics.rules`, which the emulator and the
training model follow too, applied to a parsed Graph):

* a node whose inputs are all constants (``stablehlo.constant``, ``iota``, ops on them)
  is marked ``const``: it gets no ring and is cloned into each segment that uses it —
  unless the function returns it directly, then it is placed like any other op;
* function arguments of float type get ``policy.ring_for(dtype, arg_name)``;
* an op runs in one ring, the **widest** (most bits, then most fraction bits) of the
  policy rings of the floats it defines — its results and, for ops with regions, every
  value defined inside them (a while loop or reduction is never split). Ops defining no
  float take the widest ring of their float operands (``compare``, float→int
  ``convert``). All results of an op live in the op's ring;
* integer/bool ops that touch no float are placed after that: in the ring of their
  non-constant inputs if those agree, else in the ring their users agree on, else in
  ``policy.integer``. Integer/bool function arguments follow their users the same way.

The result is the same Graph with ``Value.ring``, ``Node.ring`` and ``Node.const`` set.
"""

from __future__ import annotations

from ditto_spu.policy import Policy, load_policy
from ditto_spu.semantics.rules import argument_ring, op_ring

from .graph import Graph, is_float
from .parse import _tensor_info, _walk_ops


def annotate_rings(graph: Graph, policy: Policy | None = None) -> Graph:
    policy = load_policy(policy)
    values = graph.values
    returned = set(graph.outputs)

    # 1. constant-only nodes
    for n in graph.nodes:
        producers = [values[v].producer for v in n.inputs]
        n.const = n.op_name != "stablehlo.custom_call" and all(
            p is not None and graph.nodes[p].const for p in producers
        )
    for n in graph.nodes:  # a returned constant must be computed by some segment
        if n.const and any(r in returned for r in n.results):
            n.const = False

    # 2. float arguments
    for i, vid in enumerate(graph.args):
        v = values[vid]
        if v.is_float:
            v.ring = argument_ring(policy, v.elem, graph.arg_names[i] if i < len(graph.arg_names) else "")

    # 3. ops that touch floats, in program order
    flexible = []
    for n in graph.nodes:
        if n.const:
            continue
        ring = op_ring(
            policy,
            n.location.scope,
            defined_float_dtypes(graph, n),
            (values[v].ring for v in n.inputs if values[v].is_float),
        )
        if ring is None:
            flexible.append(n)
            continue
        _place(graph, n, ring)

    # 4. integer/bool ops touching no float: forward from inputs, then back from users
    deferred = []
    for n in flexible:
        rings = {values[v].ring for v in n.inputs if _placed_input(graph, v)}
        unplaced = [v for v in n.inputs if not _placed_input(graph, v) and not _const_value(graph, v)]
        if len(rings) == 1 and not unplaced:
            _place(graph, n, rings.pop())
        else:
            deferred.append(n)
    users = graph.users()
    for n in reversed(deferred):
        rings = _user_rings(graph, n.results, users)
        _place(graph, n, rings.pop() if len(rings) == 1 else policy.integer)
    for vid in graph.args:
        v = values[vid]
        if v.ring is None:
            rings = _user_rings(graph, [vid], users)
            v.ring = rings.pop() if len(rings) == 1 else policy.integer
    return graph


def defined_float_dtypes(graph: Graph, node) -> list:
    """Element types of the floats ``node`` defines: its results and, for an op with
    regions, every result of an op nested inside them (the ring rule's input)."""
    dtypes = [graph.values[r].elem for r in node.results if graph.values[r].is_float]
    if node.op is not None and len(node.op.regions):
        for inner in _walk_ops(node.op):
            if inner is node.op:
                continue
            for r in inner.results:
                _, elem = _tensor_info(r.type, inner.name)
                if is_float(elem):
                    dtypes.append(elem)
    return dtypes


def _place(graph, node, ring):
    node.ring = ring
    for r in node.results:
        graph.values[r].ring = ring


def _const_value(graph, vid) -> bool:
    p = graph.values[vid].producer
    return p is not None and graph.nodes[p].const


def _placed_input(graph, vid) -> bool:
    return graph.values[vid].ring is not None


def _user_rings(graph, vids, users) -> set:
    rings = set()
    for vid in vids:
        for u in users.get(vid, []):
            node = graph.nodes[u]
            if not node.const and node.ring is not None:
                rings.add(node.ring)
    return rings
