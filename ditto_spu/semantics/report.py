"""RangeReport: the largest magnitude each op scope produced in its ring, against the limit.

Kinds of record (``kind``), each with its limit in the ring RingSpec(l, f):

* ``input``   - a secret input as encoded: |v| < 2^(l−2−f) (SPU's safe range);
* ``const``   - a public constant encoded in the ring of the op that uses it;
* ``value``   - an op's result: |v| < 2^(l−2−f);
* ``product`` - a product (mul, dot_general, the products inside exp / division / rsqrt)
  before truncation: |v|·2^(2f) < 2^(l−2), i.e. |v| < 2^(l−2−2f). THE constraint of FXP32
  matmuls: with f = 10 a dot product's output must stay below 2^10. (SPU still computes it
  correctly up to 2^(l−1−2f), where the ring element wraps; the safe range keeps a bit of
  margin for the truncation protocol's assumption.)
* ``cast``    - a value after a ring change (down-cast, rescale, up-cast), in the
  destination ring: |v| < 2^(l−2−f).
* ``bound B`` - the operand of a reduced-ring comparison kernel (the softmax's max and
  cut-off, :mod:`ditto_spu.kernels.reduce_max`): |v| ≤ B, the calibrated bound its
  reduced width relies on.
* ``range L..H`` - the operand x of a kernel that relies on L ≤ x ≤ H (the calibrated
  rsqrt, :mod:`ditto_spu.kernels.rsqrt`), recorded as max(x/H, L/x) against 1.

Scopes are jax name scopes with the primitive name appended, as the compiler sees them
(``FlaxBertModule/encoder/layer/3/attention/self/query/dot_general``); inputs are named by
their argument path (``[0]['params']...``). :func:`layer_of` groups scopes by layer.
"""

from __future__ import annotations

import dataclasses
import math
import re

from ..rings import RingSpec

KINDS = ("input", "const", "value", "product", "cast")

_NUMERIC = re.compile(r"^\d+$")


def bound_kind(bound: float) -> str:
    """The kind of a record checked against a kernel's calibrated bound |v| ≤ B."""
    return f"bound {bound:g}"


def range_kind(low: float, high: float) -> str:
    """The kind of a record of max(x/H, L/x) for a kernel's calibrated range L ≤ x ≤ H."""
    return f"range {low:g}..{high:g}"


def is_kernel_limit(kind: str) -> bool:
    """Whether ``kind`` is a kernel's calibrated limit (:func:`bound_kind`,
    :func:`range_kind`) rather than a ring's: no margin applies on top of it, and it does
    not depend on the fraction bits."""
    return kind.startswith(("bound ", "range "))


def limit_of(ring: RingSpec, kind: str) -> float:
    """Largest safe magnitude of a record of ``kind`` in ``ring``."""
    if kind == "product":
        return 2.0 ** (ring.bits - 2 - 2 * ring.frac_bits)
    if kind.startswith("bound "):
        return float(kind[len("bound ") :])
    if kind.startswith("range "):
        return 1.0
    return ring.max_abs


def layer_of(scope: str) -> str:
    """The layer a scope belongs to: everything up to its first numeric component
    (``FlaxBertModule/encoder/layer/3/attention/self/query/dot_general`` →
    ``FlaxBertModule/encoder/layer/3``, ``transformer/h/0/attn/...`` → ``transformer/h/0``);
    else its first two components (``FlaxBertModule/embeddings``); an argument path or a
    top-level op stays as it is."""
    parts = scope.split("/")
    if len(parts) <= 1 or scope.startswith("["):
        return scope
    for i, p in enumerate(parts[:-1]):
        if _NUMERIC.match(p):
            return "/".join(parts[: i + 1])
    module = parts[:-1]  # drop the primitive name
    return "/".join(module[:2])


@dataclasses.dataclass
class Record:
    """One (scope, ring, kind): the largest |value| seen and how many elements broke the limit."""

    scope: str
    ring: RingSpec
    kind: str
    max_abs: float
    n_over: int = 0
    calls: int = 1

    @property
    def limit(self) -> float:
        return limit_of(self.ring, self.kind)

    @property
    def headroom_bits(self) -> float:
        """log2(limit / max): negative when the limit was broken, +inf for all zeros."""
        if self.max_abs <= 0:
            return math.inf
        if not math.isfinite(self.max_abs):
            return -math.inf
        return math.log2(self.limit / self.max_abs)

    @property
    def overflow(self) -> bool:
        return self.max_abs >= self.limit

    def as_dict(self) -> dict:
        return {
            "scope": self.scope,
            "ring": str(self.ring),
            "kind": self.kind,
            "max_abs": self.max_abs,
            "limit": self.limit,
            "headroom_bits": self.headroom_bits,
            "n_over": self.n_over,
        }


class RangeReport:
    """Largest magnitudes per (scope, ring, kind), accumulated over emulated calls."""

    def __init__(self):
        self._records: dict = {}
        self.exact_ops: set = set()  # primitives computed exactly (no SPU model), then rounded
        self.unrecorded: set = set()  # scopes inside while loops (quantized, not recorded)

    # -- accumulation ------------------------------------------------------------------------
    def add(self, scope: str, ring: RingSpec, kind: str, max_abs: float, n_over: int = 0):
        key = (scope, ring, kind)
        r = self._records.get(key)
        if r is None:
            self._records[key] = Record(scope, ring, kind, float(max_abs), int(n_over))
        else:
            if not (r.max_abs >= max_abs):  # NaN-aware: a NaN replaces a number
                r.max_abs = float(max_abs)
            r.n_over += int(n_over)
            r.calls += 1

    def merge(self, other: "RangeReport") -> "RangeReport":
        for r in other.records:
            self.add(r.scope, r.ring, r.kind, r.max_abs, r.n_over)
        self.exact_ops |= other.exact_ops
        self.unrecorded |= other.unrecorded
        return self

    # -- views ---------------------------------------------------------------------------------
    @property
    def records(self) -> list:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

    def scopes(self) -> list:
        return sorted({r.scope for r in self.records})

    def layers(self, group=layer_of) -> list:
        return sorted({group(r.scope) for r in self.records})

    def by_scope(self) -> list:
        """One record per (scope, ring, kind), in first-seen (program) order."""
        return self.records

    def by_layer(self, group=layer_of) -> list:
        """Records merged per (layer, ring, kind): the worst (least headroom) scope wins;
        ``scope`` is the layer name and ``worst_scope`` keeps where the maximum came from."""
        out: dict = {}
        for r in self.records:
            key = (group(r.scope), r.ring, r.kind)
            cur = out.get(key)
            if cur is None or r.headroom_bits < cur.headroom_bits:
                merged = LayerRecord(key[0], r.ring, r.kind, r.max_abs, r.n_over, r.calls, r.scope)
                if cur is not None:
                    merged.n_over += cur.n_over
                out[key] = merged
            else:
                cur.n_over += r.n_over
        return list(out.values())

    def overflows(self) -> list:
        """Records whose maximum reached the limit (worst first)."""
        return sorted((r for r in self.records if r.overflow), key=lambda r: r.headroom_bits)

    def worst(self, field: str | None = None):
        """The record with the least headroom (optionally only rings of ``field``, e.g. "FM32")."""
        rs = [r for r in self.records if field is None or r.ring.field == field]
        return min(rs, key=lambda r: r.headroom_bits) if rs else None

    def as_dict(self) -> dict:
        return {
            "records": [r.as_dict() for r in self.records],
            "exact_ops": sorted(self.exact_ops),
        }

    # -- printing --------------------------------------------------------------------------------
    def table(self, by: str = "layer", *, field: str | None = None, group=layer_of) -> str:
        """A plain-text table; ``by="layer"`` or ``"scope"``; ``field`` keeps one ring family."""
        rows = self.by_layer(group) if by == "layer" else self.by_scope()
        rows = [r for r in rows if field is None or r.ring.field == field]
        head = ("layer" if by == "layer" else "scope", "ring", "kind", "max |v|", "limit", "headroom", "over")
        lines = [
            (
                r.scope,
                str(r.ring),
                r.kind,
                f"{r.max_abs:.4g}",
                f"{r.limit:.4g}",
                "inf" if math.isinf(r.headroom_bits) and r.headroom_bits > 0 else f"{r.headroom_bits:+.1f} b",
                ("OVERFLOW " if r.overflow else "") + (str(r.n_over) if r.n_over else ""),
            )
            for r in rows
        ]
        widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        out += [fmt.format(*line) for line in lines]
        if self.exact_ops:
            out.append(f"(computed exactly, then rounded: {', '.join(sorted(self.exact_ops))})")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table("layer")

    def __repr__(self) -> str:
        n = len(self.overflows())
        return f"RangeReport({len(self)} records, {n} overflowing)"


@dataclasses.dataclass
class LayerRecord(Record):
    worst_scope: str = ""
