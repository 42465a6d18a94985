"""Upcast FXP32[f'] -> FXP64[f]: exact over |x·2^f'| < 2^30, one round, 192 bits per element."""

import numpy as np
import pytest
from casting import (
    assert_same_shape_and_ring,
    boundary_and_random,
    cast_on_parties,
    error_in_dst_ulps,
    scaled_of,
    share_scaled,
    total_comm,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ditto_spu.errors import RangeError
from ditto_spu.kernels.casts import find_cast_kernel
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.kernels.upcast import (
    upcast_fxp32_to_fxp64 as exact_kernel,
)
from ditto_spu.kernels.upcast import (
    upcast_fxp32_to_fxp64_fewer_frac_bits as rounding_kernel,
)
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.shares import reconstruct, share_values

EXACT_PAIRS = [(8, 18), (10, 18), (12, 12), (0, 32), (28, 60), (0, 0)]
ROUNDING_PAIRS = [(12, 10), (28, 0), (19, 18)]


@pytest.mark.parametrize("f,g", EXACT_PAIRS)
def test_exact_over_the_whole_valid_range(f, g):
    src, dst = FXP32(f), FXP64(g)
    low, high = exact_kernel.valid_scaled_bounds(src, dst)
    assert (low, high) == (-(2**30), 2**30 - 1)
    x = boundary_and_random(low, high, 20000, seed=f + g)
    shares = share_scaled(x, src, seed=f)
    out, results = cast_on_parties(shares, dst)
    assert {r.comm.rounds for r in results} == {1}
    assert np.all(error_in_dst_ulps(scaled_of(out), x, f, g) == 0)
    assert_same_shape_and_ring(out, dst, shares[0])


@pytest.mark.parametrize("f,g", ROUNDING_PAIRS)
def test_fewer_destination_frac_bits_within_bound(f, g):
    src, dst = FXP32(f), FXP64(g)
    assert find_cast_kernel(src, dst) is rounding_kernel
    low, high = rounding_kernel.valid_scaled_bounds(src, dst)
    x = boundary_and_random(low, high, 20000, seed=f)
    out, _ = cast_on_parties(share_scaled(x, src), dst)
    err = error_in_dst_ulps(scaled_of(out), x, f, g)
    assert err.min() > -1.5 and err.max() <= 1.5


def test_real_values_and_shapes():
    src, dst = FXP32(10), FXP64(18)
    values = np.linspace(-1000.0, 1000.0, 24).reshape(2, 3, 4)
    out, _ = cast_on_parties(share_values(values, src, "float16"), dst)
    np.testing.assert_array_equal(reconstruct(out), np.rint(values * 1024) / 1024)
    assert out[0].shape == (2, 3, 4) and out[0].dtype == "float16"
    scalar, _ = cast_on_parties(share_values(np.float32(-3.5), src), dst)
    assert scalar[0].shape == () and reconstruct(scalar) == -3.5
    empty, results = cast_on_parties(share_values(np.zeros((0, 4), np.float32), src), dst)
    assert empty[0].shape == (0, 4) and total_comm(results).bytes_sent == 0


def test_integer_tensors_are_exact():
    ints = np.array([0, 1, -1, 2**30 - 1, -(2**30), 77], dtype=np.int64)
    out, _ = cast_on_parties(share_scaled(ints, FXP32(8), "int32"), FXP64(18))
    np.testing.assert_array_equal(reconstruct(out), ints)  # unscaled: no 2^(f-f') factor


def test_cost_one_round_192_bits_per_element():
    n = 4096
    src, dst = FXP32(10), FXP64(18)
    x = boundary_and_random(*exact_kernel.valid_scaled_bounds(src, dst), n - 9)
    _, results = cast_on_parties(share_scaled(x, src), dst)
    sent = [r.comm.bytes_sent * 8 / n for r in results]
    assert sent == [4 * 32, 32, 32]  # P0: two OT candidates to each of P1, P2
    assert results[0].comm.bytes_received == 0  # P0 learns nothing
    assert sum(sent) == exact_kernel.bits_per_element == 192 <= 384
    assert [r.comm.rounds for r in results] == [1, 1, 1] and exact_kernel.rounds == 1

    _, results = cast_on_parties(share_scaled(x, src), FXP64(9))
    assert sum(r.comm.bytes_sent for r in results) * 8 / n == rounding_kernel.bits_per_element == 384


def test_deterministic_given_the_prg():
    """All randomness comes from ctx.prg: same PRG seeds, same shares -> same output."""
    src, dst = FXP32(10), FXP64(18)
    shares = share_scaled(np.arange(-50, 50), src)
    runs = [cast_on_parties(shares, dst, prgs=PairwisePRG.deterministic_trio(5))[0] for _ in range(2)]
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a.components, b.components)
    other = cast_on_parties(shares, dst, prgs=PairwisePRG.deterministic_trio(6))[0]
    assert not np.array_equal(other[0].components, runs[0][0].components)
    np.testing.assert_array_equal(scaled_of(other), scaled_of(runs[0]))


@pytest.mark.parametrize("bad", [2**30, -(2**30) - 1, 2**31 - 1, -(2**31)])
def test_checked_mode_rejects_out_of_range_inputs(bad):
    src, dst = FXP32(10), FXP64(18)
    x = np.array([1, bad, 2], dtype=np.int64)
    with pytest.raises(RangeError, match="upcast_fxp32_to_fxp64 .*valid range.*2\\^30"):
        cast_on_parties(share_scaled(x, src), dst, checked=True)


def test_checked_mode_accepts_boundaries_and_counts_its_extra_round():
    src, dst = FXP32(10), FXP64(18)
    x = np.array([-(2**30), 2**30 - 1, 0], dtype=np.int64)
    out, results = cast_on_parties(share_scaled(x, src), dst, checked=True)
    assert np.all(error_in_dst_ulps(scaled_of(out), x, 10, 18) == 0)
    assert [r.comm.rounds for r in results] == [2, 2, 2]


def test_unchecked_mode_gives_garbage_but_does_not_hang():
    src, dst = FXP32(10), FXP64(18)
    x = np.array([2**30, -(2**31)], dtype=np.int64)
    out, _ = cast_on_parties(share_scaled(x, src), dst, recv_timeout_ms=5000)
    assert out[0].shape == (2,)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    f=st.integers(0, 28),
    extra=st.integers(-28, 32),
    values=st.lists(st.integers(-(2**30), 2**30 - 1), min_size=1, max_size=8),
)
def test_property_upcast_matches_plaintext(f, extra, values):
    g = f + extra
    if not 0 <= g <= 60:
        return
    src, dst = FXP32(f), FXP64(g)
    kernel = find_cast_kernel(src, dst)
    low, high = kernel.valid_scaled_bounds(src, dst)
    x = np.clip(np.array(values, dtype=np.int64), low, high)
    out, _ = cast_on_parties(share_scaled(x, src), dst)
    err = error_in_dst_ulps(scaled_of(out), x, f, g)
    if extra >= 0:
        assert np.all(err == 0)
    else:
        assert err.min() > -1.5 and err.max() <= 1.5
