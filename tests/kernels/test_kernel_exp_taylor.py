"""The softmax exp kernel (FXP32 squarings, FXP64 result): values against its declared
semantics and the exact exp, cost, range check, selection rule, what party 2 sees."""

import jax
import jax.experimental
import jax.numpy as jnp
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
from ditto_spu.kernels.exp_taylor import FRAC_BITS, ITERS, emulate, exp_taylor_fxp32, lowest_valid_input, selects
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.semantics.arith import CheckedArithmetic
from ditto_spu.shares import reconstruct, share_values

PARAMS = {"frac_bits": 18}


def _run(x, ring=None, checked=False, params=PARAMS):
    ring = ring or FXP32(8)
    xs = share_values(x, ring, "float16", rng=np.random.default_rng(0))
    out = run_three_parties(
        lambda ctx: (exp_taylor_fxp32(ctx, [xs[ctx.rank]], params), ctx.link.stats.snapshot()),
        checked=checked,
        prgs=PairwisePRG.deterministic_trio(4),
    )
    shares = [o[0][0] for o in out]
    assert shares[0].ring == FXP64(18)
    return reconstruct(shares), [o[1] for o in out]


@pytest.mark.parametrize("ring", [FXP32(8), FXP32(12)], ids=str)
def test_matches_its_semantics_and_the_taylor_form(ring):
    x = np.concatenate([np.linspace(-14, 0, 3001), [-14.0, -1.0, -2.0**-ring.frac_bits, 0.0]])
    xq = np.round(x * 2**ring.frac_bits) / 2**ring.frac_bits
    got, stats = _run(x, ring)
    with jax.experimental.enable_x64():
        model = np.asarray(emulate(CheckedArithmetic(), jnp.asarray(xq), "test"))
    taylor = (1 + xq / 2**ITERS) ** (2**ITERS)
    drop = ring.frac_bits - (FRAC_BITS - ITERS)  # x/2^n needs a truncation by `drop` bits first
    extra = 0 if drop <= 0 else 6 * (8 if drop <= 8 else 16)
    # the module doc's bound: 2 ulps per step against the nearest-rounded model, doubled by
    # each later squaring (r <= 1), and 2^(n+1) ulps more when x/2^n is truncated
    bound = (2 * (2**ITERS - 1) + (2 ** (ITERS + 1) if extra else 0)) * 2.0**-FRAC_BITS
    assert np.max(np.abs(got - model)) <= bound
    assert np.sqrt(np.mean((got - model) ** 2)) < bound / 8  # centred errors: typically far smaller
    assert np.max(np.abs(got - taylor)) <= bound + 2.0**-FRAC_BITS * 32
    assert abs(got[-1] - 1.0) <= bound  # x = 0, the row maximum: weight 1
    assert np.all(got >= -1.5 * 2.0**-FRAC_BITS)  # a square of ~0 truncated one ulp low
    assert 8 * sum(s.bytes_sent for s in stats) == x.size * (ITERS * 192 + 192 + extra)
    assert [s.rounds for s in stats] == [2 * ITERS + 1 + (extra > 0)] * 3


def test_input_outside_the_valid_range_is_detected_in_checked_mode():
    with pytest.raises(RangeError, match="needs"):
        _run(np.array([-1.0, 0.75]), checked=True)
    with pytest.raises(RangeError, match="needs"):
        _run(np.array([-40.0, 0.0]), checked=True)
    # x − max may exceed 0 by the max kernel's slack (3·2^-4 here): accepted and computed
    got, _ = _run(np.array([lowest_valid_input(), 0.0, 0.1875, 0.5]), checked=True)
    assert np.allclose(got, [0.0, 1.0, (1 + 0.1875 / 32) ** 32, (1 + 0.5 / 32) ** 32], atol=2e-3)


def test_bad_params_and_selection_rule():
    with pytest.raises(PlanError, match="frac_bits"):
        _run(np.zeros(2), params={})
    with pytest.raises(PlanError, match="at least"):
        _run(np.zeros(2), params={"frac_bits": 10})
    base = dict(source_ring=FXP32(8), cutoff=-14.0, shifted=True)
    assert selects(FXP64(18), **base)
    assert not selects(FXP64(18), **{**base, "shifted": False})  # no upper bound on x
    assert not selects(FXP64(18), **{**base, "cutoff": None})  # no lower bound
    assert not selects(FXP64(18), **{**base, "cutoff": -40.0})  # r_0 < 0
    assert not selects(FXP64(18), **{**base, "source_ring": FXP64(18)})  # single-ring baselines
    assert not selects(FXP32(8), **base)


VIEW_SEED = 13
BROKEN = {
    # every 32-bit pad is zero: the squarings' reshare masks among them
    "no mask": lambda prgs: [PadDouble(p, zero_pads(np.uint32)) for p in prgs],
    # party 0 draws the first squaring's reshare pad meant for party 1 from its stream
    # with party 2, which removes it with its own
    "reused pad": lambda prgs: [PadDouble(prgs[0], pads_from_stream_of(np.uint32, 2, 1)), prgs[1], prgs[2]],
}


def _party2_view(value, broken=None):
    n = 3000
    xs = fixed_view_shares(np.full((n,), value), FXP32(8), "float16")
    prgs = PairwisePRG.deterministic_trio(VIEW_SEED)
    if broken is not None:
        prgs = BROKEN[broken](prgs)
    got = received_messages(lambda ctx, x: exp_taylor_fxp32(ctx, [x], PARAMS), xs, prgs)
    assert got[0][0] == 0  # the first squaring's reshare (x/2^n and + 1 are local)
    view = [(src, np.frombuffer(p, np.uint8).astype(np.float64)) for src, p in got]
    return view + reshare_from_party_0_view(got[0][1], VIEW_SEED, n)


@pytest.mark.parametrize("broken", [None, *BROKEN])
def test_what_party_2_receives_does_not_depend_on_the_secret(broken):
    """Party 2's own components and PRG streams are fixed; the secret (−0.5 vs −12) lives
    in s_1 only. Every message it receives, as received and the first reshare with its own
    pads removed, has the same distribution for both; without the reshare masks, or with
    a pad reused, the squarings' terms show."""
    a, b = _party2_view(-0.5, broken), _party2_view(-12.0, broken)
    assert_views_alike(a, b, broken)
