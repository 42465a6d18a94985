"""The elementwise multiply kernel: values against the fixed-point product, cost, range
checks, selection, and what a receiving party sees."""

import numpy as np
import pytest
from threeparty import (
    PadDouble,
    assert_views_alike,
    fixed_view_shares,
    pads_from_stream_of,
    received_messages,
    reshare_from_party_0_view,
    run_three_parties,
    zero_pads,
)

from ditto_spu.errors import PlanError, RangeError
from ditto_spu.kernels.multiply import encode_constant, multiply, selects
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.shares import reconstruct, share_values


def _run(inputs_per_party, params=None, checked=False):
    out = run_three_parties(
        lambda ctx: (multiply(ctx, inputs_per_party[ctx.rank], params or {}), ctx.link.stats.snapshot()),
        checked=checked,
        prgs=PairwisePRG.deterministic_trio(5),  # no PRG set-up round in the counts
    )
    return reconstruct([o[0][0] for o in out]), [o[1] for o in out]


@pytest.mark.parametrize("ring", [FXP32(8), FXP32(12), FXP64(18)], ids=str)
def test_secret_product_within_one_and_a_half_ulps_of_the_exact_one(ring):
    rng = np.random.default_rng(ring.frac_bits)
    limit = 2.0 ** ((ring.bits - 2) / 2 - ring.frac_bits) * 0.9  # |x|, |y| below √(product limit)
    x = rng.uniform(-limit, limit, 5000)
    y = rng.uniform(-limit, limit, 5000)
    x[:4], y[:4] = [limit, -limit, 0.0, 1.0], [limit, limit, -3.0, -1.0]
    xs, ys = share_values(x, ring, "float32", rng=np.random.default_rng(1)), share_values(y, ring, "float32", rng=np.random.default_rng(2))
    got, stats = _run([[xs[r], ys[r]] for r in range(3)])
    xq, yq = np.round(x * 2**ring.frac_bits) / 2**ring.frac_bits, np.round(y * 2**ring.frac_bits) / 2**ring.frac_bits
    err_ulps = (got - xq * yq) * 2**ring.frac_bits
    assert np.max(np.abs(err_ulps)) <= 1.5
    assert abs(np.mean(err_ulps)) < 0.05  # centred
    word = 8 if ring.frac_bits <= 8 else 16 if ring.frac_bits <= 16 else 32
    assert 8 * sum(s.bytes_sent for s in stats) == x.size * (3 * ring.bits + 6 * word)
    assert [s.rounds for s in stats] == [2, 2, 2]


def test_square_of_one_operand_and_public_factor():
    ring = FXP32(8)
    x = np.linspace(-40, 40, 4097)
    xs = share_values(x, ring, "float16", rng=np.random.default_rng(3))
    got, _ = _run([[xs[r], xs[r]] for r in range(3)])
    xq = np.round(x * 256) / 256
    assert np.max(np.abs(got - xq * xq)) <= 1.5 / 256
    got, stats = _run([[xs[r]] for r in range(3)], {"constant": 0.125})
    assert np.max(np.abs(got - 0.125 * xq)) <= 1.5 / 256
    assert 8 * sum(s.bytes_sent for s in stats) == x.size * 6 * 8 and [s.rounds for s in stats] == [1, 1, 1]
    got, _ = _run([[xs[r]] for r in range(3)], {"constant": -0.3})
    c = encode_constant(-0.3, ring) / 256  # toward zero, as SPU encodes public constants
    assert c == -76 / 256
    assert np.max(np.abs(got - c * xq)) <= 1.5 / 256


def test_overflowing_product_is_detected_in_checked_mode():
    ring = FXP32(8)
    xs = share_values(np.array([300.0, 1.0]), ring, "float16", rng=np.random.default_rng(4))
    with pytest.raises(RangeError, match="holds products only below"):
        _run([[xs[r], xs[r]] for r in range(3)], checked=True)
    with pytest.raises(RangeError, match="holds products only below"):
        _run([[xs[r]] for r in range(3)], {"constant": 200.0}, checked=True)


def test_bad_inputs_and_selection_rule():
    ring = FXP32(8)
    xs = share_values(np.ones(4), ring, "float16", rng=np.random.default_rng(5))
    ys = share_values(np.ones(3), ring, "float16", rng=np.random.default_rng(6))
    with pytest.raises(PlanError, match="one ring and shape"):
        _run([[xs[r], ys[r]] for r in range(3)])
    with pytest.raises(PlanError, match="takes"):
        _run([[xs[r]] for r in range(3)])
    with pytest.raises(PlanError, match="finite"):
        encode_constant(float("inf"), ring)
    base = dict(mixed=True, elements=8192, secret_operands=2, public_splat=False, float_result=True)
    assert selects(ring, **base)
    assert not selects(ring, **{**base, "mixed": False})  # the single-ring baselines keep SPU's
    assert not selects(ring, **{**base, "elements": 100})
    assert not selects(ring, **{**base, "secret_operands": 1})  # a public operand that is not a splat
    assert selects(ring, **{**base, "secret_operands": 1, "public_splat": True})
    assert not selects(FXP32(15), **base)  # 2f > l - 4: no product fits


VIEW_SEED = 11
BROKEN = {
    # every 32-bit pad is zero: the reshare's zero sharing among them, so party 2 sees
    # party 0's product term z_0 in clear
    "no mask": lambda prgs: [PadDouble(p, zero_pads(np.uint32)) for p in prgs],
    # party 0 draws its reshare pad meant for party 1 from its stream with party 2: a
    # reused pad, which party 2 removes with its own stream
    "reused pad": lambda prgs: [PadDouble(prgs[0], pads_from_stream_of(np.uint32, 2, 1)), prgs[1], prgs[2]],
}


def _party2_view(value, broken=None):
    """What party 2 receives during x·x (its own components and PRG streams fixed; the
    secret lives in s_1 only), message by message as 32-bit words, plus the reshare
    message with party 2's own pads with party 0 removed."""
    n = 4000
    ring = FXP32(8)
    xs = fixed_view_shares(np.full((n,), value), ring, "float16")
    prgs = PairwisePRG.deterministic_trio(VIEW_SEED)
    if broken is not None:
        prgs = BROKEN[broken](prgs)
    got = received_messages(lambda ctx, x: multiply(ctx, [x, x], {}), xs, prgs)
    assert got[0][0] == 0  # the reshare: party i sends to party i − 1
    view = [(src, np.frombuffer(p, np.uint8).astype(np.float64)) for src, p in got]
    return view + reshare_from_party_0_view(got[0][1], VIEW_SEED, n)


@pytest.mark.parametrize("broken", [None, *BROKEN])
def test_what_party_2_receives_does_not_depend_on_the_secret(broken):
    """Party 2's own components and PRG streams are fixed; the secret (0.5 vs 90) lives in
    s_1 only. Every message it receives (the reshare from party 0, the truncation's OT
    words), as received and with its own pads removed, has the same distribution for both;
    without the reshare's masks, or with a pad reused, it does not."""
    a, b = _party2_view(0.5, broken), _party2_view(90.0, broken)
    assert_views_alike(a, b, broken)
