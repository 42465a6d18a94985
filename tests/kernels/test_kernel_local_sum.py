"""The local sum: exact sums of secret tensors, computed on the shares without messages."""

import numpy as np
import pytest
from threeparty import run_three_parties

from ditto_spu.errors import PlanError
from ditto_spu.kernels.local_sum import selects, sum_local
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.shares import reconstruct, share_values


def _run(x, ring, params):
    xs = share_values(x, ring, "float16" if ring.field == "FM32" else "float32")
    outs = run_three_parties(
        lambda ctx: (sum_local(ctx, [xs[ctx.rank]], params)[0], ctx.link.stats.snapshot()),
        prgs=PairwisePRG.deterministic_trio(1),
    )
    return reconstruct([o for o, _ in outs]), [s for _, s in outs], xs


@pytest.mark.parametrize("ring", [FXP32(8), FXP64(18)])
@pytest.mark.parametrize("axes", [[2], [0, 2], [-1], []])
def test_sum_is_the_exact_sum_of_the_encoded_values_with_no_message(ring, axes):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (2, 3, 8))
    got, stats, xs = _run(x, ring, {"axes": axes})
    encoded = reconstruct(xs)  # the ring's values of x, decoded
    want = encoded.sum(axis=tuple(axes)) if axes else encoded
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # exact: same ring elements as SPU's reduce
    assert all(s.bytes_sent == 0 and s.bytes_received == 0 and s.rounds == 0 for s in stats), stats


def test_negative_sums_wrap_back_correctly():
    """Components are uniform ring words; their sums wrap many times, the result does not."""
    x = np.full((4, 64), -1.5)
    got, _, _ = _run(x, FXP32(8), {"axes": [1]})
    np.testing.assert_array_equal(got, np.full(4, -96.0))


def test_bad_axes_are_plan_errors():
    with pytest.raises(PlanError, match="axes"):
        _run(np.ones((2, 3)), FXP32(8), {"axes": [2]})
    with pytest.raises(PlanError, match="axes"):
        _run(np.ones((2, 3)), FXP32(8), {})


def test_selection_rule():
    assert selects(FXP64(18), mixed=True, secret=True, float_operand=True)
    assert selects(FXP32(8), mixed=True, secret=True, float_operand=True)
    assert not selects(FXP64(18), mixed=False, secret=True, float_operand=True)  # baselines keep SPU's
    assert not selects(FXP32(8), mixed=True, secret=False, float_operand=True)
    assert not selects(None, mixed=True, secret=True, float_operand=True)
