"""The calibrated rsqrt kernel: SPU's algorithm without its bit decomposition."""

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
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.kernels.rsqrt import exponent_range, rounds, rsqrt_calibrated, selects
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.semantics.fxp import Fxp
from ditto_spu.shares import reconstruct, share_values

RANGE = {"low": 2.0**-12, "high": 2.0**16}
RING = FXP64(18)


def _run(x, params=RANGE, seed=1, ring=RING, **kw):
    xs = share_values(x, ring, "float32")
    outs = run_three_parties(
        lambda ctx: (rsqrt_calibrated(ctx, [xs[ctx.rank]], params)[0], ctx.link.stats.snapshot()),
        prgs=PairwisePRG.deterministic_trio(seed),
        **kw,
    )
    return reconstruct([o for o, _ in outs]), [s for _, s in outs]


def test_matches_spus_algorithm_across_the_range():
    rng = np.random.default_rng(0)
    x = np.exp(rng.uniform(np.log(2.0**-12), np.log(2.0**16), 1500))
    x = np.concatenate([x, 2.0 ** np.arange(-12, 16), 2.0 ** np.arange(-11, 16) - 2.0**-18])  # bit boundaries
    got, stats = _run(x)
    xq = np.round(x * 2**18) / 2**18
    with jax.experimental.enable_x64():
        model = np.asarray(Fxp(18, "nearest").rsqrt(jax.numpy.asarray(xq, jax.numpy.float64)))
    exact = 1 / np.sqrt(xq)
    # same algorithm: within a few output ulps of SPU's model (truncations differ), and
    # as close to the exact value as the model is
    ulps = np.abs(got - model) * 2**18
    assert np.all(ulps <= 4 + 2e-3 * np.abs(model) * 2**18)
    assert np.median(np.abs(got - model) / exact) < 1e-4
    assert np.max(np.abs(got - exact) / exact) < 2 * np.max(np.abs(model - exact) / exact) + 1e-3
    assert max(s.rounds for s in stats) == rounds(FXP64(18), *RANGE.values()) == 18


def test_outside_the_range_is_detected_in_checked_mode():
    with pytest.raises(RangeError, match="outside the calibrated range"):
        _run(np.array([1.0, 2.0**17]), checked=True)


def test_bad_params_and_selection():
    with pytest.raises(PlanError, match="low"):
        _run(np.ones(3), params={"high": 4.0})
    with pytest.raises(PlanError, match="does not suit"):
        _run(np.ones(3), params={"low": 2.0**-30, "high": 4.0})
    assert exponent_range(FXP64(18), 2.0**-12, 2.0**16) == (6, 34)
    assert selects(FXP64(18), value_range=(1.0, 8.0), mixed=True, secret=True, float_operand=True)
    assert not selects(FXP64(18), value_range=(1.0, 8.0), mixed=False, secret=True, float_operand=True)
    assert not selects(FXP32(8), value_range=(1.0, 8.0), mixed=True, secret=True, float_operand=True)
    assert not selects(FXP64(18), value_range=None, mixed=True, secret=True, float_operand=True)


VIEW_SEED = 3
BROKEN = {
    # every party's 64-bit pads are zero (consistent, so the run completes): the OT pads
    # and output shares of the bit injection and the products' reshare masks; the
    # injection's candidates show party 2 the comparison bits b_j = [X >= 2^j]
    "no mask": lambda prgs: [PadDouble(p, zero_pads(np.uint64)) for p in prgs],
    # party 0 draws its bit pads meant for party 1 (the mask of A among them) from its
    # stream with party 2: a reused pad, which party 2 removes with its own
    "reused pad": lambda prgs: [PadDouble(prgs[0], pads_from_stream_of(np.uint8, 2, 1)), prgs[1], prgs[2]],
}


def _party2_view(value, broken=None):
    """What party 2 receives during one rsqrt, message by message as byte values, plus
    the first message (party 0's sharing of A = s_0 + s_1 for the threshold comparisons)
    with party 2's own first pad with party 0 removed. Party 2's shares and PRG streams
    are the same whatever the secret (same seeds; the secret lives in s_1 only)."""
    n = 2000
    xs = fixed_view_shares(np.full((n,), value), RING, "float32")
    prgs = PairwisePRG.deterministic_trio(VIEW_SEED)
    if broken is not None:
        prgs = BROKEN[broken](prgs)
    got = received_messages(lambda ctx, x: rsqrt_calibrated(ctx, [x], RANGE), xs, prgs)
    p_lo, p_hi = exponent_range(RING, RANGE["low"], RANGE["high"])
    return normalisation_view(got, VIEW_SEED, n, p_hi - p_lo, p_hi)


@pytest.mark.parametrize("broken", [None, *BROKEN])
def test_what_party_2_receives_does_not_depend_on_the_secret(broken):
    """Party 2's own components and PRG streams are fixed; the secret (0.01 vs 300:
    different highest bits, different compensation) lives in s_1 only. Every message it
    receives, as received and with its own pad removed, has the same byte distribution for
    both; with the masks missing or a pad reused, some does not."""
    a, b = _party2_view(0.01, broken), _party2_view(300.0, broken)
    assert_views_alike(a, b, broken)
