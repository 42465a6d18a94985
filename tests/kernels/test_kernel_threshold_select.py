"""threshold_select: y·[x ≥ c] (or >, <, ≤) decided in a reduced ring, the product exact.

Values against plaintext (the window below c included), costs against the stated
formulas, the bound in checked mode, and what a receiving party sees.
"""

import numpy as np
import pytest
from threeparty import (
    PadDouble,
    assert_views_alike,
    fixed_view_shares,
    pads_from_stream_of,
    received_messages,
    run_three_parties,
    without_bit_pad,
    zero_pads,
)

from ditto_spu import approx
from ditto_spu.errors import PlanError, RangeError
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.kernels.reduce_max import reduced_width
from ditto_spu.kernels.threshold_select import (
    bits_per_element,
    encode_threshold,
    rounds,
    selects,
    threshold_select,
    window,
)
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.shares import reconstruct, reconstruct_elements, share_values


def _run(x, y, ring, params, seed=1, **kw):
    xs = share_values(x, ring, "float32")
    ys = share_values(y, ring, "float32")
    outs = run_three_parties(
        lambda ctx: (threshold_select(ctx, [xs[ctx.rank], ys[ctx.rank]], params)[0], ctx.link.stats.snapshot()),
        prgs=PairwisePRG.deterministic_trio(seed),
        **kw,
    )
    return [o for o, _ in outs], [s for _, s in outs]


def _encoded(v, ring):
    return np.round(np.asarray(v, np.float64) * 2**ring.frac_bits) / 2**ring.frac_bits


def _step(x, c, ring, strict):
    """The exact step on encoded values, threshold encoded toward zero."""
    t = encode_threshold(c, ring) / 2**ring.frac_bits
    return (x > t) if strict else (x >= t)


@pytest.mark.parametrize("ring", [FXP64(18), FXP32(10)])
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("below", [False, True])
def test_values_are_the_exact_select_outside_the_window_below_c(ring, strict, below):
    c = -1.95
    ulp = 2.0**-ring.frac_bits
    t = encode_threshold(c, ring) * ulp
    w = window({})
    rng = np.random.default_rng(3)
    near = t + np.arange(-40, 41) * ulp  # every grid point within 40 ulps of c
    around = t + rng.integers(-2**ring.frac_bits, 2**ring.frac_bits, 2000) * ulp / 4  # within 1/4 of c
    x = np.concatenate([rng.uniform(-30, 30, 3000), near, around, t - w + np.arange(-3, 4) * ulp])
    y = rng.uniform(-20, 20, x.shape)
    params = {"constant": c, "strict": strict, "below": below, "bound": 64.0}
    shares, _ = _run(x, y, ring, params)
    got = reconstruct(shares)
    xq, yq = _encoded(x, ring), _encoded(y, ring)
    step = _step(xq, c, ring, strict)
    want = np.where(step != below, yq, 0.0)
    threshold = t + (ulp if strict else 0.0)
    fuzzy = (xq >= threshold - w) & (xq < threshold)
    assert np.array_equal(got[~fuzzy], want[~fuzzy])  # exact: no truncation, no error
    assert np.all((got[fuzzy] == 0.0) | (got[fuzzy] == yq[fuzzy]))  # either value, nothing else
    assert fuzzy.sum() > 500  # the window was exercised
    # the relation that holds is never missed by the step (x >= c gives 1, x > c gives 1)
    holds = xq >= threshold
    assert np.array_equal(got[holds], np.where(below, 0.0, yq[holds]))


def test_strict_and_non_strict_differ_at_c_itself():
    """x = c exactly: [x ≥ c] is 1; [x > c] may be 1 only because c lies in its window
    (c − W, c]; one ulp above c both are 1, W below c both are 0."""
    ring = FXP64(18)
    c = 3.0
    ulp = 2.0**-18
    x = np.repeat([c, c + ulp, c - window({}) - ulp], 64)
    y = np.full(x.shape, 5.0)
    ge = reconstruct(_run(x, y, ring, {"constant": c, "strict": False, "bound": 16.0})[0])
    gt = reconstruct(_run(x, y, ring, {"constant": c, "strict": True, "bound": 16.0})[0])
    assert np.all(ge[:64] == 5.0) and np.all(ge[64:128] == 5.0) and np.all(ge[128:] == 0.0)
    assert np.all((gt[:64] == 0.0) | (gt[:64] == 5.0))
    assert np.all(gt[64:128] == 5.0) and np.all(gt[128:] == 0.0)


def test_broadcast_shapes_as_the_compiler_may_give_them():
    ring = FXP64(18)
    rng = np.random.default_rng(7)
    x = rng.uniform(-6, 6, (2, 1, 5))
    y = rng.uniform(-3, 3, (2, 4, 5))
    shares, _ = _run(x, y, ring, {"constant": 0.5, "strict": True, "bound": 16.0})
    got = reconstruct(shares)
    xq = _encoded(x, ring)
    far = np.abs(xq - 0.5) > window({})
    want = np.where(xq > 0.5, _encoded(y, ring), 0.0)
    assert got.shape == (2, 4, 5)
    assert np.array_equal(got[np.broadcast_to(far, got.shape)], want[np.broadcast_to(far, got.shape)])


def test_the_indicator_product_is_exact_in_the_ring():
    """No truncation: the output's ring elements are y's own (or 0), also for y at the
    edge of the safe range and negative, where a truncated product could be off by 1."""
    ring = FXP64(18)
    y = np.array([2.0**40 - 2.0**-18, -(2.0**40), -(2.0**-18), 2.0**-18, 12.345678])
    x = np.array([1.0, 1.0, 1.0, 1.0, -1.0])
    shares, _ = _run(x, y, ring, {"constant": 0.0, "bound": 16.0})
    got = reconstruct_elements(shares)
    want = ring.encode(y)
    want[-1] = 0
    assert np.array_equal(got, want)


def test_puma_gelu_steps_move_the_formula_by_at_most_its_own_jumps():
    """The docstring's measurement: PUMA's GeLU with every element of every window below
    a break taking the other value stays within 0.0018 / 0.0074 / 0.0159 of the formula
    (below −4 / −1.95 / 3) at r = 4, and within 0.021 of the erf GeLU."""
    import math

    a, b = approx.PUMA_GELU_A, approx.PUMA_GELU_B
    lo, mid, hi = approx.PUMA_GELU_BREAKS
    w = window({})
    x = np.linspace(-6, 6, 240001)
    cubic = a[0] + a[1] * x + a[2] * x**2 + a[3] * x**3
    sextic = b[0] + b[1] * x + b[2] * x**2 + b[4] * x**4 + b[6] * x**6
    steps = [(lo, False, cubic), (mid, False, sextic - cubic), (hi, True, x - sextic)]
    exact = sum(np.where(x > c if strict else x >= c, d, 0.0) for c, strict, d in steps)
    worst = sum(np.where((x > c) if strict else (x >= c), d, 0.0) for c, strict, d in steps)
    flipped = sum(np.where((x >= c - w) if not strict else (x > c - w), d, 0.0) for c, strict, d in steps)
    erf_gelu = x * 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    for c, limit in ((lo, 0.0018), (mid, 0.0074), (hi, 0.0159)):
        inside = (x >= c - w) & (x < c)
        assert np.max(np.abs(flipped - exact)[inside]) <= limit
    assert np.array_equal(worst, exact)
    assert np.max(np.abs(flipped - erf_gelu)) < 0.021


@pytest.mark.parametrize("ring,bound", [(FXP64(18), 2000.0), (FXP64(18), 16.0), (FXP32(10), 64.0)])
def test_rounds_and_bytes_are_the_stated_ones(ring, bound):
    n = 4096
    x = np.random.default_rng(5).uniform(-8, 8, n)
    _, stats = _run(x, x, ring, {"constant": -4.0, "bound": bound})
    width = reduced_width(ring, bound)[1]
    assert sum(s.bytes_sent for s in stats) * 8 == n * bits_per_element(width, ring.bits)
    # a party counts the rounds it sends or receives in; role 1 is idle in the first one
    assert rounds(width) - 1 <= max(s.rounds for s in stats) <= rounds(width)
    if (ring, bound) == (FXP64(18), 2000.0):
        assert width == 17 and bits_per_element(width, 64) == 728 and rounds(width) == 8


def test_a_value_beyond_the_bound_is_detected_in_checked_mode():
    ring = FXP64(18)
    x = np.array([1.0, 2.0, 300.0])
    with pytest.raises(RangeError, match="threshold_select.*calibrated bound 100"):
        _run(x, x, ring, {"constant": 3.0, "bound": 100.0}, checked=True)
    # |x − c| is what is bounded: 199 is within 100 of c = 150
    shares, _ = _run(np.array([199.0, 60.0]), np.array([1.0, 1.0]), ring, {"constant": 150.0, "bound": 100.0}, checked=True)
    assert reconstruct(shares).tolist() == [1.0, 0.0]


def test_bad_inputs_are_plan_errors():
    ring = FXP64(18)
    one = np.ones(4)
    with pytest.raises(PlanError, match="bound"):
        _run(one, one, ring, {"constant": 1.0})
    with pytest.raises(PlanError, match="does not fit"):
        _run(one, one, ring, {"constant": 1.0, "bound": 2.0**50})
    xs, ys = share_values(one, ring, "float32"), share_values(np.ones(3), ring, "float32")
    with pytest.raises(PlanError, match="do not broadcast"):
        run_three_parties(lambda ctx: threshold_select(ctx, [xs[ctx.rank], ys[ctx.rank]], {"constant": 0.0, "bound": 8.0}),
                          prgs=PairwisePRG.deterministic_trio(1))
    zs = share_values(one, FXP32(8), "float16")
    with pytest.raises(PlanError, match="share a ring"):
        run_three_parties(lambda ctx: threshold_select(ctx, [xs[ctx.rank], zs[ctx.rank]], {"constant": 0.0, "bound": 8.0}),
                          prgs=PairwisePRG.deterministic_trio(1))


def test_selection_rule():
    assert selects(FXP64(18), mixed=True, bound=2000, secret=True, float_operand=True)
    assert not selects(FXP64(18), mixed=False, bound=2000, secret=True, float_operand=True)  # the baselines
    assert not selects(FXP64(18), mixed=True, bound=None, secret=True, float_operand=True)
    assert not selects(FXP64(18), mixed=True, bound=2000, secret=False, float_operand=True)
    assert not selects(FXP32(8), mixed=True, bound=2.0**24, secret=True, float_operand=True)  # no narrower ring


# ---- what a receiving party sees -----------------------------------------------------------
VIEW_SEED = 9
VIEW_RINGS = [FXP64(18), FXP32(10)]  # ditto-puma's steps run in FXP64, ditto-steps' in FXP32
VIEW_PARAMS = {"constant": -1.95, "bound": 64.0}


BROKEN = {
    # role 0's mask ρ for sharing A is missing: party 2 receives A = s'0 + s'1 in the clear
    "no mask": lambda prg: PadDouble(prg, zero_pads(np.uint8)),
    # party 0 draws its bit pads meant for party 1 (ρ among them) from its stream with
    # party 2: a reused pad, which party 2 removes with its own
    "reused pad": lambda prg: PadDouble(prg, pads_from_stream_of(np.uint8, peer_used=2, peer_meant=1)),
}


def _party2_view(x, y, broken=None, ring=VIEW_RINGS[0]):
    """What party 2 receives during one threshold select, message by message as byte
    values, plus the first message (party 0's A ⊕ ρ for the sign of x − c) with party
    2's own first pad with party 0 removed. Party 2's own components and PRG streams are
    the same whatever the secret (same seeds; the secret lives in s_1 only)."""
    n = x.size
    dtype = "float32" if ring.bits == 64 else "float16"
    xs = fixed_view_shares(x, ring, dtype)
    ys = fixed_view_shares(y, ring, dtype)
    prgs = PairwisePRG.deterministic_trio(VIEW_SEED)
    if broken is not None:
        prgs[0] = BROKEN[broken](prgs[0])
    got = received_messages(lambda ctx, pair: threshold_select(ctx, list(pair), VIEW_PARAMS), list(zip(xs, ys)), prgs)
    width = reduced_width(ring, VIEW_PARAMS["bound"])[1]
    assert got[0][0] == 0
    own = PairwisePRG.deterministic_trio(VIEW_SEED)[2].shared(0, (width, -(-n // 8)), np.uint8)
    view = got + [("0, own pad removed", without_bit_pad(got[0][1], own))]
    return [(src, np.frombuffer(p, np.uint8).astype(np.float64)) for src, p in view]


@pytest.mark.parametrize("ring", VIEW_RINGS, ids=str)
@pytest.mark.parametrize("broken", [None, *BROKEN])
def test_what_party_2_receives_does_not_depend_on_the_secret(broken, ring):
    """Party 2's own components and PRG streams are fixed; only s_1 changes with the secret
    (3000 elements with x in [−30, −15] and y near 7 vs x in [2, 9] and y near −100:
    opposite sides of c, different selected values). Every message it receives — the
    sign bit's, the bit injection's and the select's reshare — as received and with its
    own pad removed, must look the same (byte values, KS test); with role 0's sharing
    mask missing or reused, one of them is A = s'0 + s'1 bit-sliced: its high lanes are
    nearly constant bytes, and not the same for both."""
    rng = np.random.default_rng(0)
    low = _party2_view(rng.uniform(-30.0, -15.0, 3000), rng.uniform(6.0, 8.0, 3000), broken, ring)
    high = _party2_view(rng.uniform(2.0, 9.0, 3000), rng.uniform(-101.0, -99.0, 3000), broken, ring)
    assert_views_alike(low, high, broken)
