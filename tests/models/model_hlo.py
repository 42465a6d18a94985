"""Read (op, result element type, result shape) triples out of StableHLO text."""

import re

_OP = re.compile(r"= (stablehlo\.\w+)")
_TENSOR = re.compile(r"tensor<([^>]*)>")


def hlo_ops(text: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """One (op name, element type, shape) per StableHLO op line; the result type is the
    last tensor type on the line."""
    out = []
    for line in text.splitlines():
        op = _OP.search(line)
        types = _TENSOR.findall(line)
        if not (op and types):
            continue
        *dims, elem = types[-1].split("x")
        shape = tuple(int(d) for d in dims if d.isdigit())
        out.append((op.group(1).split(".", 1)[1], elem, shape))
    return out


def by_op(text: str, name: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(e, s) for op, e, s in hlo_ops(text) if op == name]
