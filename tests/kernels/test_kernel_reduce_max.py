"""Reduced-ring comparison kernels: max over an axis and max with a constant.

Values, costs (message depth and bytes), range checks, and what a receiving party sees.
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

from ditto_spu.errors import PlanError, RangeError
from ditto_spu.kernels import compare
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.kernels.reduce_max import (
    clamp_reduced_ring,
    max_reduced_ring,
    max_rounds,
    reduced_width,
    selects,
)
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.shares import reconstruct, share_values


def _quantized(x, ring):
    return np.round(np.asarray(x) * 2**ring.frac_bits) / 2**ring.frac_bits


def _run(kernel, x, ring, params, seed=1, **kw):
    xs = share_values(x, ring, "float16")
    outs = run_three_parties(
        lambda ctx: (kernel(ctx, [xs[ctx.rank]], params)[0], ctx.link.stats.snapshot()),
        prgs=PairwisePRG.deterministic_trio(seed),
        **kw,
    )
    return reconstruct([o for o, _ in outs]), [s for _, s in outs]


@pytest.mark.parametrize("ring", [FXP32(8), FXP32(12), FXP64(18)])
@pytest.mark.parametrize("fan_in", [2, 3, 4])
def test_max_is_an_input_within_the_resolution_of_the_true_max(ring, fan_in):
    rng = np.random.default_rng(fan_in)
    x = rng.normal(0, 6, (3, 5, 37))
    x[1, :, 20:] -= 1024  # masked keys, as the ring-safe attention mask makes them
    x[2, 0, :] = 3.25  # all equal
    x[2, 1, :7] = 40.0  # ties at the max
    params = {"bound": 2000, "axis": -1, "fan_in": fan_in}
    got, _ = _run(max_reduced_ring, x, ring, params)
    xq = _quantized(x, ring)
    want = xq.max(-1)
    resolution = 2.0 ** -min(4, ring.frac_bits)
    assert got.shape == want.shape
    assert np.all(got <= want) and np.all(got >= want - 3 * resolution)
    assert np.all(np.any(np.isclose(xq, got[..., None], atol=0, rtol=0), axis=-1))  # one of the inputs


def test_shift_returns_x_minus_its_max():
    rng = np.random.default_rng(4)
    ring = FXP32(8)
    x = rng.normal(0, 5, (3, 4, 20))
    got, _ = _run(max_reduced_ring, x, ring, {"bound": 100, "axis": 1, "shift": True})
    xq = _quantized(x, ring)
    shift = xq - xq.max(axis=1, keepdims=True)
    assert got.shape == x.shape
    assert np.all(got >= shift - 1e-9) and np.all(got <= shift + 3 * 2.0**-4 + 1e-9)
    assert np.all(got.max(axis=1) <= 3 * 2.0**-4 + 1e-9)  # the max itself lands at ~0


def test_max_over_a_middle_axis():
    ring = FXP32(10)
    x = np.random.default_rng(3).normal(0, 3, (4, 9, 6))
    got, _ = _run(max_reduced_ring, x, ring, {"bound": 64, "axis": 1})
    want = _quantized(x, ring).max(1)
    assert got.shape == (4, 6) and np.max(want - got) <= 3 * 2.0**-4 and np.min(want - got) >= 0


def test_clamp_is_max_with_the_constant():
    ring = FXP32(9)
    x = np.concatenate([np.linspace(-40, 10, 401), [-14.0, -14.5, -13.5, -1030.0]])
    got, _ = _run(clamp_reduced_ring, x, ring, {"bound": 2000, "constant": -14.0})
    want = np.maximum(_quantized(x, ring), -14.0)
    resolution = 2.0**-4
    far = np.abs(_quantized(x, ring) + 14.0) > 3 * resolution
    assert np.array_equal(got[far], want[far])  # decided exactly away from c
    assert np.max(np.abs(got - want)) <= 3 * resolution


def test_message_depth_and_bytes():
    """The protocol's depth is what max_rounds says; bytes shrink with the reduced width."""
    ring = FXP32(10)
    x = np.random.default_rng(5).normal(0, 4, (64, 128))
    _, stats = _run(max_reduced_ring, x, ring, {"bound": 2000, "axis": -1, "fan_in": 4})
    d, k = reduced_width(ring, 2000)
    assert (d, k) == (6, 17)
    # A party counts the rounds it sends or receives in; in each level's first round
    # (role 0 shares A with role 2) role 1 does neither, so per-party counts sit just
    # below the depth.
    depth = max_rounds(128, k, 4)
    assert depth == 38 and depth - 4 <= max(s.rounds for s in stats) <= depth
    _, narrow = _run(max_reduced_ring, x, ring, {"bound": 16, "axis": -1, "fan_in": 4})
    assert sum(s.bytes_sent for s in narrow) < sum(s.bytes_sent for s in stats)
    assert max_rounds(128, 17, 2) == 56 and max_rounds(128, 17, 8) == 30


def test_value_beyond_the_bound_is_detected_in_checked_mode():
    ring = FXP32(10)
    x = np.array([[1.0, 2.0, 300.0]])
    with pytest.raises(RangeError, match="calibrated bound 100"):
        _run(max_reduced_ring, x, ring, {"bound": 100, "axis": -1}, checked=True)
    with pytest.raises(RangeError, match="calibrated bound 100"):
        _run(clamp_reduced_ring, x, ring, {"bound": 100, "constant": -14.0}, checked=True)


def test_bad_params_are_plan_errors():
    ring = FXP32(10)
    with pytest.raises(PlanError, match="bound"):
        _run(max_reduced_ring, np.ones((2, 3)), ring, {"axis": -1})
    with pytest.raises(PlanError, match="do not fit"):
        _run(max_reduced_ring, np.ones((2, 3)), ring, {"bound": 2.0**30, "axis": -1})


def test_selection_rule():
    assert selects(FXP32(8), bound=2000, secret=True, float_operand=True)
    assert not selects(FXP32(8), bound=None, secret=True, float_operand=True)
    assert not selects(FXP32(8), bound=2000, secret=False, float_operand=True)
    assert not selects(FXP32(8), bound=2.0**24, secret=True, float_operand=True)  # no narrower ring
    assert reduced_width(FXP64(18), 2000) == (14, 17)


def test_msb_of_reduced_sharing_matches_sign():
    """The building block alone: signs of every k-bit value, the ends of the range included."""
    k = 9
    values = np.arange(-(2 ** (k - 1)), 2 ** (k - 1))
    ring = FXP32(0)
    xs = share_values(values.astype(np.int32), ring, "int32")
    bits = run_three_parties(
        lambda ctx: compare.msb(ctx, compare.reduce_components(xs[ctx.rank].components, 0, k), k),
        prgs=PairwisePRG.deterministic_trio(11),
    )
    opened = _open_bits(bits)
    assert np.array_equal(opened.astype(bool), values < 0)


def _open_bits(shares):
    """Open a boolean RSS: component 0 of the three parties XORed, unpacked."""
    lanes = [s.unpack()[..., 0] for s in shares]
    return lanes[0] ^ lanes[1] ^ lanes[2]


@pytest.mark.parametrize("count", [1, 13, 64])
def test_packed_gates_match_plain_boolean_logic(count):
    """AND, NOT and bit injection on packed bits, counts not a multiple of 8 included
    (the bits past the count in the last byte are don't-cares and must not leak in)."""
    rng = np.random.default_rng(count)
    x, y = rng.integers(0, 2, (2, 3, count)).astype(np.uint8)

    def share(bits, seed):
        r = np.random.default_rng(seed).integers(0, 2, (2,) + bits.shape).astype(np.uint8)
        comps = [r[0], r[1], bits ^ r[0] ^ r[1]]  # component j; party i holds (j=i, j=i+1)
        return [compare.BoolShare(np.stack([compare.pack_bits(comps[i]), compare.pack_bits(comps[(i + 1) % 3])], -1), count) for i in range(3)]

    xs, ys = share(x, 1), share(y, 2)

    def gates(ctx):
        both = compare.and_gates(ctx, xs[ctx.rank], ys[ctx.rank])
        neither = compare.and_gates(ctx, compare.not_gate(ctx, xs[ctx.rank]), compare.not_gate(ctx, ys[ctx.rank]))
        return both, neither, compare.bit_injection(ctx, both, np.uint32)

    out = run_three_parties(gates, prgs=PairwisePRG.deterministic_trio(3))
    assert np.array_equal(_open_bits([o[0] for o in out]), x & y)
    assert np.array_equal(_open_bits([o[1] for o in out]), (1 - x) & (1 - y))
    injected = out[0][2][..., 0] + out[1][2][..., 0] + out[2][2][..., 0]
    assert np.array_equal(injected, (x & y).astype(np.uint32))


# ---- what a receiving party sees -----------------------------------------------------------
VIEW_SEED = 5
VIEW_RING = FXP32(10)
VIEW_PARAMS = {"bound": 2000, "constant": -14.0}
BROKEN = {
    # role 0's mask ρ for sharing A is missing: party 2 receives A = s'0 + s'1 in the clear
    "no mask": lambda prg: PadDouble(prg, zero_pads(np.uint8)),
    # party 0 draws its bit pads meant for party 1 (ρ among them) from its stream with
    # party 2: a reused pad, which party 2 removes with its own
    "reused pad": lambda prg: PadDouble(prg, pads_from_stream_of(np.uint8, peer_used=2, peer_meant=1)),
}


def _party2_view(values, broken=None):
    """What party 2 receives during one clamp, message by message as byte values, plus
    the first message (party 0's A ⊕ ρ) with party 2's own first pad with party 0 removed.
    Party 2's shares and PRG streams are the same whatever the secret: same seeds, and
    the secret lives in s_1 only."""
    n = values.size
    xs = fixed_view_shares(values, VIEW_RING, "float16")
    prgs = PairwisePRG.deterministic_trio(VIEW_SEED)
    if broken is not None:
        prgs[0] = BROKEN[broken](prgs[0])
    got = received_messages(lambda ctx, x: clamp_reduced_ring(ctx, [x], VIEW_PARAMS), xs, prgs)
    width = reduced_width(VIEW_RING, VIEW_PARAMS["bound"])[1]
    first_src, first = got[0]
    assert first_src == 0
    own = PairwisePRG.deterministic_trio(VIEW_SEED)[2].shared(0, (width, -(-n // 8)), np.uint8)
    view = got + [("0, own pad removed", without_bit_pad(first, own))]
    return [(src, np.frombuffer(p, np.uint8).astype(np.float64)) for src, p in view]


@pytest.mark.parametrize("broken", [None, *BROKEN])
def test_what_party_2_receives_does_not_depend_on_the_secret(broken):
    """Party 2's own components and PRG streams are fixed; only s_1 — which it never holds
    — changes with the secret (3000 values in [−30, −15] vs in [2, 9]: opposite sides of
    the cut-off). Every message it receives, as received and with its own pad removed,
    must look the same (byte values, KS test); with role 0's sharing mask missing or
    reused, one of them is A = s_0 + s_1 bit-sliced (lane j of every value packed
    together): its high lanes are nearly constant bytes, and not the same for both."""
    rng = np.random.default_rng(0)
    low = _party2_view(rng.uniform(-30.0, -15.0, 3000), broken)
    high = _party2_view(rng.uniform(2.0, 9.0, 3000), broken)
    assert_views_alike(low, high, broken)
