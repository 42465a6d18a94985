"""Downcast FXP64[f] -> FXP32[f']: error within 1.5 ulps over the valid range, no traffic."""

import numpy as np
import pytest
from casting import (
    assert_same_shape_and_ring,
    boundary_and_random,
    cast_locally,
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
from ditto_spu.kernels.downcast import downcast_fxp64_to_fxp32 as kernel
from ditto_spu.rings import FXP32, FXP64
from ditto_spu.shares import reconstruct, share_values

FRAC_PAIRS = [(18, 10), (18, 8), (18, 18), (40, 8), (60, 28), (8, 20), (1, 0), (32, 0)]


@pytest.mark.parametrize("f,g", FRAC_PAIRS)
def test_error_within_bound_over_the_whole_valid_range(f, g):
    src, dst = FXP64(f), FXP32(g)
    low, high = kernel.valid_scaled_bounds(src, dst)
    x = boundary_and_random(low, high, 20000, seed=f * 100 + g)
    out = cast_locally(kernel, share_scaled(x, src, seed=g), dst)
    err = error_in_dst_ulps(scaled_of(out), x, f, g)
    if f <= g:
        assert np.all(err == 0)
    else:
        assert err.min() > -kernel.max_error_ulps and err.max() <= kernel.max_error_ulps
    assert_same_shape_and_ring(out, dst, share_scaled(x, src)[0])


def test_error_is_centred():
    src, dst = FXP64(18), FXP32(8)
    low, high = kernel.valid_scaled_bounds(src, dst)
    x = boundary_and_random(low, high, 100000, seed=3)
    err = error_in_dst_ulps(scaled_of(cast_locally(kernel, share_scaled(x, src), dst)), x, 18, 8)
    assert abs(err.mean()) < 0.05


def test_real_values_round_trip():
    src, dst = FXP64(18), FXP32(10)
    values = np.array([[0.0, -0.0009765625, 3.14159, -2.5], [1000.25, -1e5, 2**20, -(2**20)]])
    out = cast_locally(kernel, share_values(values, src, "float32"), dst)
    np.testing.assert_allclose(reconstruct(out), values, atol=1.5 * dst.ulp, rtol=0)
    assert out[0].shape == (2, 4)


def test_integer_tensors_are_unscaled_and_exact():
    ints = np.array([0, 1, -1, 2**31 - 1, -(2**31), 123456], dtype=np.int64)
    shares = share_values(ints, FXP64(18), "int32")
    out = cast_locally(kernel, shares, FXP32(8))
    np.testing.assert_array_equal(reconstruct(out), ints)
    assert out[0].dtype == "int32"


def test_sends_nothing_over_the_link():
    src, dst = FXP64(18), FXP32(10)
    x = boundary_and_random(*kernel.valid_scaled_bounds(src, dst), 1000)
    out, results = cast_on_parties(share_scaled(x, src), dst)
    assert total_comm(results).bytes_sent == 0 and all(r.comm.rounds == 0 for r in results)
    assert np.abs(error_in_dst_ulps(scaled_of(out), x, 18, 10)).max() <= 1.5


def test_contract_and_registry():
    assert find_cast_kernel(FXP64(18), FXP32(10)) is kernel
    assert (kernel.rounds, kernel.bits_per_element, kernel.max_error_ulps) == (0, 0, 1.5)
    assert kernel.applies(FXP64(40), FXP32(8)) and not kernel.applies(FXP64(41), FXP32(8))
    assert not kernel.applies(FXP32(8), FXP64(18))
    assert kernel.valid_range(FXP64(18), FXP32(10)) == pytest.approx(2.0**21)


@pytest.mark.parametrize("outside", [1, -1])
def test_checked_mode_rejects_values_that_do_not_fit(outside):
    src, dst = FXP64(18), FXP32(10)
    low, high = kernel.valid_scaled_bounds(src, dst)
    bad = high + 1 if outside > 0 else low - 1
    x = np.array([0, 5, bad, -7], dtype=np.int64)
    with pytest.raises(RangeError, match="downcast_fxp64_to_fxp32.*valid range.*index \\(2,\\)"):
        cast_on_parties(share_scaled(x, src), dst, checked=True)
    # the boundary itself is accepted; the check costs one round
    good = np.array([low, high], dtype=np.int64)
    out, results = cast_on_parties(share_scaled(good, src), dst, checked=True)
    assert all(r.comm.rounds == 1 for r in results)
    assert np.abs(error_in_dst_ulps(scaled_of(out), good, 18, 10)).max() <= 1.5


def test_unchecked_mode_runs_on_out_of_range_values():
    src, dst = FXP64(18), FXP32(10)
    x = np.array([2**60, -(2**61)], dtype=np.int64)
    out, _ = cast_on_parties(share_scaled(x, src), dst)  # garbage, but returns
    assert out[0].shape == (2,)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    f=st.integers(0, 60),
    g=st.integers(0, 28),
    fraction=st.floats(-1.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_error_bound(f, g, fraction, seed):
    src, dst = FXP64(f), FXP32(g)
    if not kernel.applies(src, dst):
        return
    low, high = kernel.valid_scaled_bounds(src, dst)
    x = np.array([int(fraction * high), low, high], dtype=np.int64)
    out = cast_locally(kernel, share_scaled(x, src, seed=seed), dst)
    err = error_in_dst_ulps(scaled_of(out), x, f, g)
    assert err.min() > -1.5 and err.max() <= 1.5
