"""Max over an axis, and max with a public constant, decided in a reduced ring.

Two kernels on secret fixed-point tensors of one ring FXPl[f], both built from
:mod:`.compare`:

``max_reduced_ring`` — ``reduce(x, max)`` over one axis (the softmax's row max).
  A tournament with fan-in g (default 4). Per level, for each group of g candidates:
  1. local: cut every candidate to the reduced ring Z_2^k at resolution 2^−r;
  2. the g(g−1)/2 pairwise signs msb(x̃_i − x̃_j), all groups and pairs in one batch
     (2 + ⌈log2(k−1)⌉ rounds);
  3. candidate i wins when it is ≥ every later one and > every earlier one (ties go
     to the lower index, so exactly one wins): an AND of g−1 bits, ⌈log2(g−1)⌉ rounds;
  4. bit injection of the g winner bits into Z_2^l (1 round);
  5. the winner's FULL-precision value: Σ_i w_i·x_i, one reshare (1 round).
  A row of n keys takes ⌈log_g n⌉ levels; a short last group is padded by repeating a
  candidate (a duplicate cannot change the max). The result is one of the inputs, at
  most 3·2^−r below the true max (the reduced values are off by up to 3 units), never
  above it. The fixed-point semantics models it as the exact max. With ``shift`` the
  kernel returns x − max (broadcast along the axis) instead: the softmax's shift, a local
  subtraction the compiler fuses here to save an SPU segment.

``clamp_reduced_ring`` — ``maximum(x, c)`` for a public constant c (the softmax's
  cut-off): sign of x̃ − c̃ in the reduced ring, bit injection into Z_2^l, and
  c + b·(x − c) in full precision. 2 + ⌈log2(k−1)⌉ + 2 rounds. An x within 3·2^−r of c
  may be decided either way; both answers are within 3·2^−r of the exact one, which is
  what the semantics models.

Parameters (``params``): ``bound`` — the calibrated public bound on |x| (and on |x − c|
for the clamp) that sets the reduced width k (:func:`.compare.comparison_width`);
``resolution_bits`` r (default 4); ``axis`` and ``fan_in`` for the max. The drop d = f − r
and k must satisfy d + k ≤ l. A value beyond ``bound`` makes a difference wrap in Z_2^k
and the decision arbitrary: checked mode opens the input (tests and debugging only) and
raises RangeError naming the kernel; the emulator's range report flags it too
(:func:`check_bound`).

Cost per comparison at k bits, all parties: 3k (sharing A) + 3·(about 3(k−1)) bits of
AND gates; a select adds 6·l (injection) + 3·l (reshare) bits per candidate.

Security: only the messages of :mod:`.compare` and :mod:`.ot` are sent; each is uniform
given its receiver's own components and PRG streams (argued there, tested in
tests/kernels/test_kernel_reduce_max.py). No comparison outcome, winner index or
reduced value is ever opened.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import PlanError, RangeError
from ..rings import RingSpec
from ..semantics.report import bound_kind
from ..shares import AShare, is_fixed_point
from .base import PartyContext
from .compare import (
    BoolShare,
    and_gates,
    bit_injection,
    comparison_width,
    msb,
    msb_rounds,
    multiply_sum,
    not_gate,
    reduce_components,
)
from .rss import add_public_to_s0, open_for_check

MAX_NAME = "max_reduced_ring"
CLAMP_NAME = "clamp_reduced_ring"
DEFAULT_RESOLUTION_BITS = 4
DEFAULT_FAN_IN = 4


def reduced_width(ring: RingSpec, bound: float, resolution_bits: int = DEFAULT_RESOLUTION_BITS):
    """(drop d, width k) for values |x| ≤ bound in ``ring``; None when they do not fit."""
    r = min(resolution_bits, ring.frac_bits)
    k = comparison_width(bound, r)
    d = ring.frac_bits - r
    if d + k > ring.bits:
        return None
    return d, k


def selects(ring: RingSpec | None, *, bound: float | None, secret: bool, float_operand: bool) -> bool:
    """Whether a max (reduce or with a constant) runs as these kernels: a secret
    fixed-point operand in a ring where the calibrated ``bound`` gives a reduced width
    narrower than the ring (else SPU's full-ring comparison is the same cost)."""
    if ring is None or bound is None or not secret or not float_operand:
        return False
    widths = reduced_width(ring, bound)
    return widths is not None and widths[1] < ring.bits


def max_slack(params: dict) -> float:
    """How far below the true max the max kernel's result may lie: 3·2^−r (r from its
    params, default :data:`DEFAULT_RESOLUTION_BITS`). x − max then reaches up to this."""
    return 3.0 * 2.0 ** -int(params.get("resolution_bits", DEFAULT_RESOLUTION_BITS))


def check_bound(arith, x, bound: float, ring: RingSpec, scope: str, kernel: str) -> None:
    """The semantics' range check: |x| beyond the kernel's bound is recorded like a ring
    overflow (kind :func:`~ditto_spu.semantics.report.bound_kind`), so the emulator's
    range report and checked mode name the op. The result itself is the exact max (the
    kernel returns an input within 3·2^−r of it, or max(x, c) decided within 3·2^−r of
    c), which the interpreter computes."""
    arith.check_range(scope, ring, bound_kind(bound), x)


def max_rounds(n: int, width: int, fan_in: int = DEFAULT_FAN_IN) -> int:
    """Rounds of :func:`max_reduced_ring` over n keys (message depth)."""
    rounds = 0
    while n > 1:
        g = min(fan_in, n)
        rounds += msb_rounds(width) + (math.ceil(math.log2(g - 1)) if g > 2 else 0) + 2
        n = -(-n // g)
    return rounds


# ---- protocol -------------------------------------------------------------------------------
def _params(ring: RingSpec, params: dict, name: str) -> tuple:
    """(bound, (drop, width)) from a kernel's params."""
    try:
        bound = float(params["bound"])
        r = int(params.get("resolution_bits", DEFAULT_RESOLUTION_BITS))
    except (KeyError, TypeError, ValueError):
        raise PlanError(f"{name}: params need a numeric 'bound' (and optional 'resolution_bits'), got {params}") from None
    widths = reduced_width(ring, bound, r)
    if widths is None:
        raise PlanError(f"{name}: values |x| <= {bound:g} at resolution 2^-{r} do not fit a reduced ring of {ring}")
    return bound, widths


def _operand(ctx, inputs: list, params: dict, name: str, offset: float = 0.0):
    """The one fixed-point input of a comparison kernel, its bound and reduced width
    (drop, width); in checked mode, |x − offset| ≤ bound is verified first."""
    if len(inputs) != 1:
        raise PlanError(f"{name} takes 1 input, got {len(inputs)}")
    (x,) = inputs
    if not is_fixed_point(x.dtype):
        raise PlanError(f"{name} compares fixed-point values, got {x.dtype}")
    bound, widths = _params(x.ring, params, name)
    if ctx.checked:
        check_within(ctx, x, offset, bound, name)
    return x, widths


def check_within(ctx, share: AShare, offset: float, bound: float, name: str) -> None:
    """CHECKED MODE ONLY (reveals the input to all parties)."""
    values = open_for_check(ctx, share).astype(np.float64) * share.ring.ulp - offset
    worst = float(np.max(np.abs(values), initial=0.0))
    if worst > bound:
        raise RangeError(
            f"{name} on party {ctx.rank}: |x{' - c' if offset else ''}| reaches {worst:.6g}, beyond the "
            f"calibrated bound {bound:g} its reduced ring relies on; recalibrate (a larger bound) "
            "or run this op in SPU"
        )


def _winner_bits(ctx, reduced: np.ndarray, width: int) -> BoolShare:
    """Boolean RSS, leading axis g, packed over the R·G groups, of "candidate i wins its
    group" (exactly one winner per group); ``reduced`` is (R, G, g, 2)."""
    rows, groups, g = reduced.shape[:3]
    pairs = list(itertools.combinations(range(g), 2))
    left = reduced[:, :, [i for i, _ in pairs]]
    right = reduced[:, :, [j for _, j in pairs]]
    diff = np.moveaxis((left - right) & np.uint64((1 << width) - 1), 2, 0)  # (P, R, G, 2)
    neg = msb(ctx, diff, width, lead_dims=1)  # x_i < x_j for pair (i, j), i < j
    geq = not_gate(ctx, neg)  # x_i >= x_j
    index = {pair: p for p, pair in enumerate(pairs)}
    terms = []  # per candidate i: g-1 bits "i beats j" (ties go to the lower index)
    for i in range(g):
        terms.append(BoolShare.stack([geq[index[(i, j)]] if j > i else neg[index[(j, i)]] for j in range(g) if j != i]))
    bits = BoolShare.stack(terms, axis=1)  # lead (g-1, g)
    while bits.packed.shape[0] > 1:
        half = bits.packed.shape[0] // 2
        anded = and_gates(ctx, bits[:half], bits[half : 2 * half])
        bits = BoolShare.concatenate([anded, bits[2 * half :]]) if bits.packed.shape[0] % 2 else anded
    return bits[0]


def max_reduced_ring(ctx: PartyContext, inputs: list, params: dict) -> list:
    """[x] -> [max of x over params['axis']] (the axis removed), same ring; with
    ``params['shift']``: [x − max] (x's shape; the softmax's shift, fused by the compiler)."""
    fan_in = int(params.get("fan_in", DEFAULT_FAN_IN))
    if fan_in < 2:
        raise PlanError(f"{MAX_NAME}: fan_in must be at least 2, got {fan_in}")
    x, (drop, width) = _operand(ctx, inputs, params, MAX_NAME)
    axis = int(params.get("axis", -1)) % len(x.shape)
    comps = np.moveaxis(x.components, axis, -2)
    out_shape = comps.shape[:-2]
    rows = int(np.prod(out_shape, dtype=np.int64))
    cur = comps.reshape(rows, comps.shape[-2], 2)
    word = x.ring.dtype
    while cur.shape[1] > 1:
        n = cur.shape[1]
        g = min(fan_in, n)
        groups = -(-n // g)
        if groups * g != n:  # pad with copies of the last candidate
            cur = np.concatenate([cur, np.repeat(cur[:, -1:], groups * g - n, axis=1)], axis=1)
        cand = cur.reshape(rows, groups, g, 2)
        winners = _winner_bits(ctx, reduce_components(cand, drop, width), width)
        w = np.moveaxis(bit_injection(ctx, winners, word).reshape(g, rows, groups, 2), 0, 2)
        cur = multiply_sum(ctx, w, cand, axis=2)
    top = cur.reshape(tuple(out_shape) + (2,))
    if params.get("shift"):  # x − max along the axis: local and exact
        return [AShare(x.ring, x.shape, x.dtype, x.components - np.expand_dims(top, axis))]
    return [AShare(x.ring, tuple(out_shape), x.dtype, top)]


def clamp_reduced_ring(ctx: PartyContext, inputs: list, params: dict) -> list:
    """[x] -> [max(x, params['constant'])], same ring and shape."""
    try:
        constant = float(params["constant"])
    except (KeyError, TypeError, ValueError):
        raise PlanError(f"{CLAMP_NAME}: params need a numeric 'constant', got {params}") from None
    x, (drop, width) = _operand(ctx, inputs, params, CLAMP_NAME, offset=constant)
    c_scaled = int(x.ring.encode(np.asarray(constant)).view(x.ring.signed_dtype))
    shifted = add_public_to_s0(x.components, ctx.rank, -c_scaled)  # x − c, exact
    below = msb(ctx, reduce_components(shifted, drop, width), width)  # x − c < 0
    keep = bit_injection(ctx, not_gate(ctx, below), x.ring.dtype).reshape(shifted.shape)
    out = add_public_to_s0(multiply_sum(ctx, keep, shifted), ctx.rank, c_scaled)
    return [AShare(x.ring, x.shape, x.dtype, out)]
