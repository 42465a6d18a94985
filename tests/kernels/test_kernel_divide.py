"""The softmax's division kernel: SPU's Goldschmidt reciprocal without its bit decomposition."""

import jax
import numpy as np
import pytest
from threeparty import (
    PadDouble,
    assert_views_alike,
    fixed_view_shares,
    normalisation_view,
    pads_from_stream_of,
    received_messages,
    run_three_parties,
    zero_pads,
)

from ditto_spu.errors import PlanError, RangeError
from ditto_spu.kernels.divide import divide_calibrated, factor_range, rounds, selects, softmax_denominator_range
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.semantics.fxp import Fxp
from ditto_spu.shares import reconstruct, share_values

RING = FXP64(18)
KEYS = 128
LOW, HIGH = softmax_denominator_range(KEYS, 3 / 16)  # the max kernel's slack at r = 4
PARAMS = {"low": LOW, "high": HIGH, "broadcast_dims": [0]}


def _run(a, b, params=PARAMS, seed=1, **kw):
    a_sh, b_sh = share_values(a, RING, "float32"), share_values(b, RING, "float32")
    outs = run_three_parties(
        lambda ctx: (divide_calibrated(ctx, [a_sh[ctx.rank], b_sh[ctx.rank]], params)[0], ctx.link.stats.snapshot()),
        prgs=PairwisePRG.deterministic_trio(seed),
        **kw,
    )
    return reconstruct([o for o, _ in outs]), [s for _, s in outs]


def _spu_model(a, b):
    """SPU's softmax division as the semantics models it: r = reciprocal(b) (Goldschmidt,
    2 iterations), then a·r, each product rounded to nearest."""
    q = lambda v: np.round(np.asarray(v, np.float64) * 2**18) / 2**18  # noqa: E731
    with jax.experimental.enable_x64():
        F = Fxp(18, "nearest")
        r = np.asarray(F.reciprocal(jax.numpy.asarray(q(b)), 2))
        return np.asarray(F.q(jax.numpy.asarray(q(a) * r[:, None])))


def test_matches_spus_algorithm_over_the_softmax_range():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 4, (600, KEYS))
    a = np.exp(np.maximum(scores - scores.max(axis=1, keepdims=True), -14.0))
    a[:40] = 1.0  # rows whose sum sits at the top of the range
    a[40:80], a[40:80, 0] = 0.0, 1.0  # ... and at the bottom (one entry at the max)
    b = a.sum(axis=1)
    # denominators at the highest-bit boundaries, where the normalisation switches
    b[80:96] = 2.0 ** np.arange(0, 8).repeat(2) + np.tile([0.0, -2.0**-18], 8)
    got, stats = _run(a, b)
    model = _spu_model(a, b)
    ulps = np.abs(got - model) * 2**18
    # the same algorithm; each of its seven truncations is within 1.5 ulps where the model
    # rounds to nearest, and a difference in r reaches the output times a ≤ 1.2
    assert ulps.max() <= 8, ulps.max()
    assert ulps.mean() < 1.0, ulps.mean()
    exact = a / b[:, None]
    assert np.abs(got - exact).max() < 1e-4
    assert max(s.rounds for s in stats) == rounds(RING, LOW, HIGH) == 20


def test_a_denominator_outside_the_range_is_detected_in_checked_mode():
    a = np.full((2, 4), 0.5)
    with pytest.raises(RangeError, match=r"outside the range \[0.5"):
        _run(a, np.array([1.0, 0.25]), checked=True)
    with pytest.raises(RangeError, match="outside the range"):
        _run(a, np.array([1.0, 2.0 * HIGH]), checked=True)


def test_bad_params_and_selection():
    a, b = np.ones((2, 4)), np.ones(2)
    with pytest.raises(PlanError, match="broadcast_dims"):
        _run(a, b, params={"low": LOW, "high": HIGH})
    with pytest.raises(PlanError, match="does not broadcast"):
        _run(a, b, params={**PARAMS, "broadcast_dims": [1]})
    with pytest.raises(PlanError, match="does not suit"):
        _run(a, b, params={**PARAMS, "high": 2.0**20})
    assert factor_range(RING, LOW, HIGH) == (17, 25)
    assert factor_range(FXP32(8), LOW, HIGH) is None
    assert selects(RING, value_range=(LOW, HIGH), mixed=True, secret=True, float_operand=True)
    assert not selects(RING, value_range=(LOW, HIGH), mixed=False, secret=True, float_operand=True)
    assert not selects(RING, value_range=None, mixed=True, secret=True, float_operand=True)
    assert LOW == 0.5 and KEYS < HIGH < 1.25 * KEYS


VIEW_SEED = 5
BROKEN = {
    # every 64-bit pad is zero: the injection's OT pads and the products' reshare masks;
    # the injection's candidates then show party 2 the threshold bits [b >= 2^j]
    "no mask": lambda prgs: [PadDouble(p, zero_pads(np.uint64)) for p in prgs],
    # party 0 draws its bit pads meant for party 1 (the mask of A among them) from its
    # stream with party 2, which removes them with its own
    "reused pad": lambda prgs: [PadDouble(prgs[0], pads_from_stream_of(np.uint8, 2, 1)), prgs[1], prgs[2]],
}


def _party2_view(numerator, denominator, broken=None):
    """What party 2 receives during one division, message by message as byte values,
    plus the first message (party 0's sharing of A for the threshold comparisons) with
    party 2's own pad with party 0 removed. Party 2's components and PRG streams are the
    same whatever the secret."""
    rows = 2000
    a = fixed_view_shares(np.full((rows, 4), numerator), RING, "float32")
    b = fixed_view_shares(np.full((rows,), denominator), RING, "float32")
    prgs = PairwisePRG.deterministic_trio(VIEW_SEED)
    if broken is not None:
        prgs = BROKEN[broken](prgs)
    got = received_messages(lambda ctx, s: divide_calibrated(ctx, list(s), PARAMS), list(zip(a, b)), prgs)
    p_lo, p_hi = factor_range(RING, LOW, HIGH)
    return normalisation_view(got, VIEW_SEED, rows, p_hi - p_lo, p_hi)


@pytest.mark.parametrize("broken", [None, *BROKEN])
def test_what_party_2_receives_does_not_depend_on_the_secret(broken):
    """The secrets (1/1.0 vs 0.01/100: different highest bits and factors) live in s_1
    only. Every message party 2 receives, as received and with its own pad removed, has
    the same byte distribution for both; with the masks missing or a pad reused, some
    does not."""
    a, b = _party2_view(0.9, 1.0, broken), _party2_view(0.01, 100.0, broken)
    assert_views_alike(a, b, broken)
