"""PairwisePRG: holders agree, draws never repeat, pairs and parties differ, setup is counted."""

import numpy as np
import pytest
from threeparty import run_three_parties

from ditto_spu.kernels.prg import PairwisePRG

PAIRS = [(0, 1), (1, 2), (2, 0)]


def trio(seed=7):
    return PairwisePRG.deterministic_trio(seed)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.int64, np.uint8])
@pytest.mark.parametrize("i,j", PAIRS)
def test_both_holders_draw_identical_pads(i, j, dtype):
    prgs = trio()
    for shape in [(5,), (3, 7), (1000,)]:
        a = prgs[i].shared(j, shape, dtype)
        b = prgs[j].shared(i, shape, dtype)
        assert a.dtype == np.dtype(dtype) and a.shape == shape
        np.testing.assert_array_equal(a, b)


def test_successive_draws_differ_and_never_overlap():
    prg = trio()[0]
    first = prg.shared(1, 4096, np.uint64)
    second = prg.shared(1, 4096, np.uint64)
    assert not np.intersect1d(first, second).size  # 64-bit collisions would mean reuse
    assert prg.calls_with(1) == 2


def test_different_pairs_and_private_streams_differ():
    prgs = trio()
    draws = {
        (i, j): prgs[i].shared(j, 1024, np.uint64) for i, j in PAIRS
    }
    privates = [p.private(1024, np.uint64) for p in prgs]
    everything = list(draws.values()) + privates
    for a in range(len(everything)):
        for b in range(a + 1, len(everything)):
            assert not np.array_equal(everything[a], everything[b])


def test_the_third_party_cannot_derive_a_pair_pad():
    prgs = trio()
    pad_01 = prgs[0].shared(1, 1024, np.uint64)
    # party 2 holds only the P1–P2 and P2–P0 seeds; neither stream matches P0–P1's
    assert not np.array_equal(prgs[2].shared(0, 1024, np.uint64), pad_01)
    assert not np.array_equal(prgs[2].shared(1, 1024, np.uint64), pad_01)


def test_from_seeds_follows_the_documented_convention():
    seeds = (11, 22, 33)  # k_0 shared by P2–P0, k_1 by P0–P1, k_2 by P1–P2
    p0 = PairwisePRG.from_seeds(0, seeds)
    p0_other = PairwisePRG.from_seeds(0, (11, 22, 99))
    np.testing.assert_array_equal(p0.shared(1, 8), p0_other.shared(1, 8))  # k_1 only
    np.testing.assert_array_equal(p0.shared(2, 8), p0_other.shared(2, 8))  # k_0 only
    p1_changed = PairwisePRG.from_seeds(1, (11, 22, 99))
    assert not np.array_equal(PairwisePRG.from_seeds(1, seeds).shared(2, 8), p1_changed.shared(2, 8))


def test_pads_look_uniform():
    pad = trio().pop().shared(0, 1 << 15, np.uint32)
    bits = np.unpackbits(pad.view(np.uint8)).reshape(-1, 32).mean(axis=0)
    assert np.all(np.abs(bits - 0.5) < 0.02)


def test_rejects_bad_arguments():
    prg = trio()[0]
    with pytest.raises(TypeError, match="integer"):
        prg.shared(1, 4, np.float64)
    with pytest.raises(ValueError, match="shares no seed"):
        prg.shared(0, 4)
    with pytest.raises(ValueError, match="3 seeds"):
        PairwisePRG.from_seeds(0, (1, 2))


def test_setup_over_the_link_agrees_and_is_counted():
    def party(ctx):
        stats = ctx.link.stats.as_dict()
        return stats, ctx.prg.shared(ctx.next_rank, 64, np.uint64), ctx.prg.shared(ctx.prev_rank, 64, np.uint64)

    first = run_three_parties(party)
    for rank in range(3):
        stats, with_next, _ = first[rank]
        _, _, next_with_prev = first[(rank + 1) % 3]
        np.testing.assert_array_equal(with_next, next_with_prev)
        assert stats["rounds"] == 1 and stats["bytes_sent"] == 16 and stats["bytes_received"] == 16
    second = run_three_parties(party)
    assert not np.array_equal(first[0][1], second[0][1])  # fresh seeds per session
