"""Calibration of FXP32 fraction bits per layer, and checking inputs against a policy.

:func:`calibrate` runs the emulator (mode ``"record"``) on calibration inputs and, for
every group of FXP32 scopes (a layer by default, see :func:`~.report.layer_of`), picks the
largest fraction bits ``f`` among ``candidate_bits`` such that nothing recorded in the
group leaves the ring with ``margin_bits`` to spare:

    values, casts, constants:  |v|·2^f      < 2^(l − 2 − margin)
    products (before truncation): |v|·2^(2f) < 2^(l − 2 − margin)

(l = 32: with margin 1 a dot product's output must stay below 2^(29 − 2f)). The choices
become per-scope overrides of a copy of the policy: one ``"<layer>/*"`` glob per group
(``"<scope>"`` itself with ``group_by="scope"``), and one exact override per FXP32
argument (weights, inputs), which gets the fraction bits of the layers that read it (the
largest of them its own values allow) so no weight is stored with fewer fraction bits than
the layer that uses it. The result is then verified by emulating the calibration set under
the new policy; a group that now overflows (quantization changes values a little) loses
bits until none does. Several FXP32 fraction-bit settings in one policy are normal: the
compiler makes one SPU runtime per distinct RingSpec and rescales between them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterable, Optional, Sequence, Union

from ..errors import DittoError
from ..policy import Policy, load_policy
from ..semantics.report import RangeReport, Record, is_kernel_limit, layer_of
from .emulator import EmulatorOptions, emulate, raise_on_overflow


class CalibrationError(DittoError):
    """No candidate fraction bits keep a scope inside its ring on the calibration set."""


@dataclasses.dataclass
class CalibrationResult:
    """What :func:`calibrate_detailed` found."""

    policy: Policy
    group_bits: dict  # group (layer or scope) -> fraction bits
    arg_bits: dict  # argument path -> fraction bits
    report: RangeReport  # the verification run under ``policy``
    rounds: int

    def summary(self) -> str:
        lines = [f"{g}: f={b}" for g, b in self.group_bits.items()]
        if self.arg_bits:
            vals = sorted(set(self.arg_bits.values()))
            lines.append(f"{len(self.arg_bits)} FXP32 argument(s): f in {vals}")
        return "\n".join(lines)


def max_frac_bits(record: Record, margin_bits: float) -> float:
    """Largest f keeping ``record`` inside its ring's bits with ``margin_bits`` to spare
    (+inf when it only saw zeros, −inf when it saw a non-finite value)."""
    m = record.max_abs
    if m == 0:
        return math.inf
    if not math.isfinite(m):
        return -math.inf
    budget = record.ring.bits - 2 - margin_bits - math.log2(m)
    if record.kind == "product":
        return math.ceil(budget / 2) - 1
    return math.ceil(budget) - 1


COMPARISON_BOUND_MARGIN = 1.25


def _with_comparison_bound(policy: Policy, report: RangeReport) -> Policy:
    """The policy with the comparison bound its reduced-ring kernels saw, times
    :data:`COMPARISON_BOUND_MARGIN` (rounded up to a multiple of 16); unchanged when no
    such kernel ran."""
    seen = [r.max_abs for r in report.records if r.kind.startswith("bound ")]
    if not seen or policy.comparison_bound is None:
        return policy
    bound = 16.0 * math.ceil(max(seen) * COMPARISON_BOUND_MARGIN / 16.0)
    return dataclasses.replace(policy, comparison_bound=max(bound, 16.0))


def _escape_glob(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def override_pattern(group: str, group_by) -> str:
    """The policy override pattern that selects exactly the scopes of ``group``."""
    if group_by == "layer" and "/" in group:
        return _escape_glob(group) + "/*"
    escaped = _escape_glob(group)
    if escaped == group and "/" not in group and group:
        escaped = f"[{group[0]}]{_escape_glob(group[1:])}"  # force exact (glob) matching
    return escaped


def _normalize_inputs(inputs) -> list:
    out = []
    for item in inputs:
        out.append(tuple(item) if isinstance(item, (tuple, list)) else (item,))
    if not out:
        raise CalibrationError("no calibration inputs: pass at least one argument tuple")
    return out


def calibrate_detailed(
    fn,
    policy,
    calibration_inputs: Iterable,
    *,
    margin_bits: int = 1,
    candidate_bits: Sequence[int] = range(6, 17),
    group_by: Union[str, Callable[[str], str]] = "layer",
    options: Optional[EmulatorOptions] = None,
    static_argnums=(),
    max_rounds: int = 6,
    progress: Optional[Callable[[str], None]] = None,
) -> CalibrationResult:
    """:func:`calibrate`, returning the per-group bits and the verification report too."""
    base = load_policy(policy)
    inputs = _normalize_inputs(calibration_inputs)
    cands = sorted(set(int(c) for c in candidate_bits))
    if not cands:
        raise CalibrationError("candidate_bits is empty")
    if group_by == "layer":
        group = layer_of
    elif group_by == "scope":
        group = lambda s: s  # noqa: E731
    elif callable(group_by):
        group = group_by
    else:
        raise CalibrationError(f"group_by must be 'layer', 'scope' or a function, got {group_by!r}")
    low_dtypes = [d for d in ("float16", "bfloat16") if base.base_ring(d).field == "FM32"]
    if not low_dtypes:
        raise CalibrationError(f"the policy puts no float type in FXP32 (rings: {base.rings}); nothing to calibrate")
    opts = (options or EmulatorOptions()).replace(mode="record")
    say = progress or (lambda msg: None)

    def pick(bound: float, what: Record) -> int:
        ok = [c for c in cands if c <= bound]
        if not ok:
            limit = f"2^{what.ring.bits - 2 - margin_bits}" + (" at scale 2^(2f)" if what.kind == "product" else " at scale 2^f")
            raise CalibrationError(
                f"{what.scope}: {what.kind} |v| up to {what.max_abs:.6g} leaves no candidate fraction "
                f"bits in FXP32 (smallest candidate {cands[0]}, needs |v|·2^f below {limit} with "
                f"{margin_bits} bit(s) of margin); widen candidate_bits, lower margin_bits or keep "
                f"this scope in FXP64"
            )
        return max(ok)

    def measure(pol: Policy, round_no: int):
        em = emulate(fn, pol, options=opts, static_argnums=static_argnums)
        for i, args in enumerate(inputs):
            em.evaluate(*args)
            say(f"round {round_no}: input {i + 1}/{len(inputs)}")
        return em, em.report

    def bounds(report: RangeReport):
        groups: dict = {}  # group -> (bound, record)
        args: dict = {}
        for r in report.records:
            if r.ring.field != "FM32" or is_kernel_limit(r.kind):
                continue  # a comparison bound does not depend on the fraction bits
            b = max_frac_bits(r, margin_bits)
            if r.kind == "input":
                cur = args.get(r.scope)
                if cur is None or b < cur[0]:
                    args[r.scope] = (b, r)
                continue
            g = group(r.scope)
            cur = groups.get(g)
            if cur is None or b < cur[0]:
                groups[g] = (b, r)
        return groups, args

    def build(group_bits: dict, arg_bits: dict) -> Policy:
        pol = base
        for g, f in group_bits.items():
            ring = base.base_ring(low_dtypes[0]).with_frac_bits(f)
            pol = pol.with_override(override_pattern(g, group_by if isinstance(group_by, str) else "scope"), **{d: ring for d in low_dtypes})
        for a, f in arg_bits.items():
            ring = base.base_ring(low_dtypes[0]).with_frac_bits(f)
            pol = pol.with_override(_escape_glob(a) if any(c in a for c in "*?[") else a, **{d: ring for d in low_dtypes})
        return pol

    em, report = measure(base, 0)
    uses = em.arg_uses(*inputs[0])
    groups, args = bounds(report)
    group_bits = {g: pick(b, r) for g, (b, r) in groups.items()}

    def arg_choice(args_bounds):
        out = {}
        for a, (b, r) in args_bounds.items():
            own = pick(b, r)
            consumer = sorted({group_bits[group(s)] for s in uses.get(a, ()) if group(s) in group_bits})
            fitting = [f for f in consumer if f <= own]
            out[a] = max(fitting) if fitting else own
        return out

    arg_bits = arg_choice(args)
    for round_no in range(1, max_rounds + 1):
        pol = build(group_bits, arg_bits)
        em, report = measure(pol, round_no)
        groups, args = bounds(report)
        changed = False
        for g, (b, r) in groups.items():
            if g in group_bits and group_bits[g] > b:
                group_bits[g] = pick(b, r)
                changed = True
            elif g not in group_bits:
                group_bits[g] = pick(b, r)
                changed = True
        for a, (b, r) in args.items():
            if a in arg_bits and arg_bits[a] > b:
                arg_bits[a] = pick(b, r)
                changed = True
        if not changed:
            pol = _with_comparison_bound(pol, report)
            return CalibrationResult(pol, dict(group_bits), dict(arg_bits), report, round_no)
    raise CalibrationError(
        f"calibration did not settle in {max_rounds} rounds (values keep moving with the "
        f"fraction bits); raise margin_bits"
    )


def calibrate(
    fn,
    policy,
    calibration_inputs: Iterable,
    *,
    margin_bits: int = 1,
    candidate_bits: Sequence[int] = range(6, 17),
    group_by: Union[str, Callable[[str], str]] = "layer",
    options: Optional[EmulatorOptions] = None,
    static_argnums=(),
    progress: Optional[Callable[[str], None]] = None,
) -> Policy:
    """A copy of ``policy`` with the largest safe FXP32 fraction bits per layer.

    ``calibration_inputs``: an iterable of argument tuples for ``fn``. ``margin_bits``: bits
    of headroom kept below SPU's safe range. ``candidate_bits``: allowed fraction bits.
    ``group_by``: ``"layer"`` (one setting per :func:`~.report.layer_of` group), ``"scope"``
    (one per op scope) or a function scope → group name. Raises :class:`CalibrationError`
    when even the smallest candidate overflows. See the module docstring for the rule.
    """
    return calibrate_detailed(
        fn,
        policy,
        calibration_inputs,
        margin_bits=margin_bits,
        candidate_bits=candidate_bits,
        group_by=group_by,
        options=options,
        static_argnums=static_argnums,
        progress=progress,
    ).policy


def check(
    fn,
    policy,
    inputs,
    *,
    margin_bits: float = 0,
    fields: Optional[Sequence[str]] = None,
    options: Optional[EmulatorOptions] = None,
    static_argnums=(),
) -> RangeReport:
    """Emulate ``fn`` on ``inputs`` (one argument tuple, or a list of them) under ``policy``
    and raise :class:`~.emulator.RingOverflowError` naming the scope, the value and the
    limit if anything leaves its ring (with ``margin_bits`` to spare; only rings of
    ``fields`` such as ``("FM32",)`` if given). Returns the report when all fits."""
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], (tuple, list)):
        calls = [tuple(a) for a in inputs]
    else:
        calls = [tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)]
    opts = (options or EmulatorOptions()).replace(mode="record")
    em = emulate(fn, policy, options=opts, static_argnums=static_argnums)
    for args in calls:
        em.evaluate(*args)
    raise_on_overflow(em.report, margin_bits=margin_bits, fields=fields)
    return em.report
