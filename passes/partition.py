"""partition: split a cast-explicit Graph into single-ring segments and cast steps.

Contract:

* every op node (regions included, never split) lands in exactly one
  :class:`SegmentPart` of its ring; every cast node is one :class:`CastPart`;
* parts come in dependency order: a part only reads function arguments and values
  written by earlier parts;
* constant-only nodes are not placed: each segment lists in ``consts`` the ones it needs,
  to be cloned into it (constants never cross segments);
* only live values cross: a segment's ``inputs`` are the non-constant values it reads but
  does not define, its ``outputs`` the values it defines that a later part reads or the
  function returns;
* few ring boundaries: greedy list scheduling on the critical path of ring changes. Each
  node's *level* is the largest number of casts on a path from it to the function's end.
  Run every ready cast, then open a segment in the ring of the ready op with the highest
  level (ties: the ring whose ready ops grow into the largest segment, then the earliest
  op), and add every op of that ring that becomes ready. Ops off the critical path thus
  join a segment that has to exist anyway instead of opening one of their own.
"""

from __future__ import annotations

import dataclasses

from ditto_spu.rings import RingSpec

from .graph import CompileError, Graph


@dataclasses.dataclass
class SegmentPart:
    index: int
    ring: RingSpec
    nodes: list  # op node ids, in a dependency order
    consts: list  # constant-only node ids to clone in, in a dependency order
    inputs: list  # value ids read from outside
    outputs: list  # value ids live after the segment
    label: str = ""  # the split_by group of its ops ("" when not splitting)


@dataclasses.dataclass
class CallPart:
    """A kernel node (e.g. an FXP32 matmul run by our own protocol): a step of its own."""

    node: int
    kernel: str
    inputs: list  # value ids
    outputs: list  # value ids
    ring: RingSpec
    params: dict


@dataclasses.dataclass
class CastPart:
    node: int
    src: int  # value id
    dst: int  # value id
    src_ring: RingSpec
    dst_ring: RingSpec


def _deps(graph, node) -> set:
    deps = set()
    for vid in node.inputs:
        p = graph.values[vid].producer
        if p is not None and not graph.nodes[p].const:
            deps.add(p)
    return deps


def partition(graph: Graph, split_by=None) -> list:
    """Partition ``graph``; ``split_by(node) -> str`` (optional) also keeps ops of different
    groups apart (e.g. model components, for a per-component cost breakdown)."""
    group = (lambda n: (n.ring, split_by(n))) if split_by is not None else (lambda n: (n.ring, ""))
    order = [n for n in graph.topological_nodes() if not n.const]
    position = {n.id: i for i, n in enumerate(order)}
    deps = {n.id: _deps(graph, n) for n in order}
    level = _levels(order, deps)
    remaining_ops = [n for n in order if not n.is_step]
    remaining_casts = [n for n in order if n.is_step]
    done: set = set()
    parts: list = []
    segments: list = []

    while remaining_ops or remaining_casts:
        progress = True
        while progress:
            progress = False
            for c in list(remaining_casts):
                if deps[c.id] <= done:
                    if c.is_call:
                        parts.append(
                            CallPart(c.id, c.kernel, list(c.operands), list(c.results), c.ring, dict(c.params))
                        )
                    else:
                        src, dst = c.operands[0], c.results[0]
                        parts.append(
                            CastPart(c.id, src, dst, graph.values[src].ring, graph.values[dst].ring)
                        )
                    done.add(c.id)
                    remaining_casts.remove(c)
                    progress = True
        if not remaining_ops:
            if remaining_casts:
                raise CompileError(
                    "internal error: casts left whose sources are never computed: "
                    + ", ".join(c.describe() for c in remaining_casts)
                )
            break
        best = None
        ready = [n for n in remaining_ops if deps[n.id] <= done]
        for gkey in dict.fromkeys(group(n) for n in ready):
            members = _grow(remaining_ops, gkey, done, deps, group)
            critical = max(level[n.id] for n in ready if group(n) == gkey)
            key = (critical, len(members), -position[members[0]])
            if best is None or key > best[0]:
                best = (key, gkey, members)
        if best is None:
            raise CompileError(
                "internal error: no op is ready; the graph has a cycle through casts near "
                + remaining_ops[0].describe()
            )
        _, (ring, label), members = best
        seg = SegmentPart(len(segments), ring, members, [], [], [], label)
        segments.append(seg)
        parts.append(seg)
        done.update(members)
        member_set = set(members)
        remaining_ops = [n for n in remaining_ops if n.id not in member_set]

    _fill_liveness(graph, parts, segments)
    return parts


def _levels(order, deps) -> dict:
    """node id -> most casts on any path from the node to the end of the function."""
    users: dict = {}
    for n in order:
        for d in deps[n.id]:
            users.setdefault(d, []).append(n.id)
    level: dict = {}
    for n in reversed(order):
        below = max((level[u] for u in users.get(n.id, ())), default=0)
        level[n.id] = below + (1 if n.is_step else 0)
    return level


def _grow(remaining_ops, gkey, done, deps, group) -> list:
    members: list = []
    inside: set = set()
    for n in remaining_ops:  # dependency order: one pass sees every ready chain
        if group(n) == gkey and deps[n.id] <= (done | inside):
            members.append(n.id)
            inside.add(n.id)
    return members


def _fill_liveness(graph, parts, segments) -> None:
    later_reads: dict = {}  # value id -> set of part indices reading it
    for i, part in enumerate(parts):
        if isinstance(part, CastPart):
            later_reads.setdefault(part.src, set()).add(i)
        elif isinstance(part, CallPart):
            for vid in part.inputs:
                later_reads.setdefault(vid, set()).add(i)
        else:
            for nid in part.nodes:
                for vid in graph.nodes[nid].inputs:
                    later_reads.setdefault(vid, set()).add(i)
    returned = set(graph.outputs)
    for i, part in enumerate(parts):
        if not isinstance(part, SegmentPart):
            continue
        defined = set()
        for nid in part.nodes:
            defined.update(graph.nodes[nid].results)
        consts: set = set()
        inputs: list = []
        for nid in part.nodes:
            for vid in graph.nodes[nid].inputs:
                p = graph.values[vid].producer
                if p is not None and graph.nodes[p].const:
                    _collect_consts(graph, p, consts)
                elif vid not in defined and vid not in inputs:
                    inputs.append(vid)
        part.consts = sorted(consts)
        part.inputs = inputs
        part.outputs = [
            vid
            for nid in part.nodes
            for vid in graph.nodes[nid].results
            if vid in returned or any(j != i for j in later_reads.get(vid, ()))
        ]


def _collect_consts(graph, nid, acc: set) -> None:
    if nid in acc:
        return
    acc.add(nid)
    for vid in graph.nodes[nid].inputs:
        p = graph.values[vid].producer
        if p is not None:
            _collect_consts(graph, p, acc)


def describe_parts(graph, parts) -> str:
    """Human-readable listing of segments and casts (used by ``ditto-spu compile``)."""
    lines = []
    for p in parts:
        if isinstance(p, SegmentPart):
            ops: dict = {}
            for nid in p.nodes:
                name = graph.nodes[nid].op_name.replace("stablehlo.", "")
                ops[name] = ops.get(name, 0) + 1
            summary = ", ".join(f"{k}×{v}" if v > 1 else k for k, v in ops.items())
            lines.append(
                f"segment {p.index} in {p.ring}: {len(p.nodes)} ops ({summary}), "
                f"{len(p.consts)} constants cloned; reads "
                f"{', '.join(graph.values[v].label for v in p.inputs) or '-'}; writes "
                f"{', '.join(graph.values[v].label for v in p.outputs) or '-'}"
            )
        elif isinstance(p, CallPart):
            ins = ", ".join(graph.values[v].label for v in p.inputs)
            outs = ", ".join(graph.values[v].label for v in p.outputs)
            lines.append(f"  kernel {p.kernel}({ins}) -> {outs} in {p.ring}")
        else:
            s, d = graph.values[p.src], graph.values[p.dst]
            lines.append(
                f"  cast {s.label} -> {d.label}: {p.src_ring} -> {p.dst_ring} "
                f"{d.type_str} ({graph.nodes[p.node].note})"
            )
    return "\n".join(lines)


# Cost per element when no kernel is registered for a pair (all parties together).
_FALLBACK_BITS = {("FM32", "FM64"): 384, ("FM64", "FM32"): 0}


def cast_costs(graph, parts) -> list:
    """One dict per cast: names, rings, shape, elements, kernel, bits/element, bytes (all
    parties; from the registered kernel's ``bits_per_element``, else the fallback costs)."""
    rows = []
    for p in parts:
        if not isinstance(p, CastPart):
            continue
        v = graph.values[p.dst]
        numel = 1
        for d in v.shape:
            numel *= d
        kernel, bits = _kernel_cost(p.src_ring, p.dst_ring)
        rows.append(
            {
                "src": graph.values[p.src].label,
                "dst": v.label,
                "src_ring": str(p.src_ring),
                "dst_ring": str(p.dst_ring),
                "shape": list(v.shape),
                "dtype": v.dtype,
                "elements": numel,
                "kernel": kernel,
                "bits_per_element": bits,
                "bytes": None if bits is None else numel * bits // 8,
            }
        )
    return rows


def _kernel_cost(src, dst):
    from ditto_spu.errors import RingError
    from ditto_spu.kernels.casts import find_cast_kernel

    try:
        k = find_cast_kernel(src, dst)
    except RingError:
        return None, _FALLBACK_BITS.get((src.field, dst.field))
    return k.name, int(k.bits_per_element)
