"""Rescale within one ring: exact local shift up, one-round wrap-count truncation down."""

import numpy as np
import pytest
from casting import (
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
from threeparty import PadDouble, RecordingLink, assert_views_alike, fixed_view_shares, run_three_parties, zero_pads

from ditto_spu.errors import RangeError, RingError
from ditto_spu.kernels.casts import find_cast_kernel, registered_cast_kernels, run_cast
from ditto_spu.kernels.prg import PairwisePRG
from ditto_spu.kernels.rescale import (
    rescale_fewer_frac_bits_fxp32,
    rescale_fewer_frac_bits_fxp32_w8,
    rescale_fewer_frac_bits_fxp32_w16,
    rescale_fewer_frac_bits_fxp64,
    rescale_fewer_frac_bits_fxp64_w8,
    rescale_fewer_frac_bits_fxp64_w16,
    rescale_fewer_frac_bits_fxp64_wide,
    rescale_more_frac_bits,
)
from ditto_spu.rings import FXP32, FXP64, RingSpec
from ditto_spu.shares import reconstruct, share_values

DOWN_CASES = [
    (FXP64(18), FXP64(10), rescale_fewer_frac_bits_fxp64_w8),
    (FXP64(18), FXP64(17), rescale_fewer_frac_bits_fxp64_w8),
    (FXP64(36), FXP64(18), rescale_fewer_frac_bits_fxp64),
    (FXP64(40), FXP64(8), rescale_fewer_frac_bits_fxp64),
    (FXP64(30), FXP64(14), rescale_fewer_frac_bits_fxp64_w16),
    (FXP64(20), FXP64(11), rescale_fewer_frac_bits_fxp64_w16),
    (FXP64(60), FXP64(0), rescale_fewer_frac_bits_fxp64_wide),
    (FXP64(50), FXP64(10), rescale_fewer_frac_bits_fxp64_wide),
    (FXP32(12), FXP32(5), rescale_fewer_frac_bits_fxp32_w8),
    (FXP32(28), FXP32(0), rescale_fewer_frac_bits_fxp32),
    (FXP32(28), FXP32(11), rescale_fewer_frac_bits_fxp32),
    (FXP32(8), FXP32(7), rescale_fewer_frac_bits_fxp32_w8),
    (FXP32(20), FXP32(10), rescale_fewer_frac_bits_fxp32_w16),
    (FXP32(24), FXP32(8), rescale_fewer_frac_bits_fxp32_w16),
]


@pytest.mark.parametrize("src,dst,kernel", DOWN_CASES, ids=lambda v: str(v) if isinstance(v, RingSpec) else "")
def test_truncation_within_bound_over_the_whole_valid_range(src, dst, kernel):
    assert find_cast_kernel(src, dst) is kernel
    low, high = kernel.valid_scaled_bounds(src, dst)
    x = boundary_and_random(low, high, 20000, seed=src.frac_bits)
    out, results = cast_on_parties(share_scaled(x, src), dst)
    err = error_in_dst_ulps(scaled_of(out), x, src.frac_bits, dst.frac_bits)
    assert err.min() > -1.5 and err.max() <= 1.5
    assert out[0].ring == dst and out[0].components.dtype == dst.dtype
    n = x.size
    assert total_comm(results).bytes_sent * 8 / n == kernel.bits_per_element
    assert [r.comm.rounds for r in results] == [1, 1, 1] and kernel.rounds == 1


def test_truncation_error_is_centred_and_values_round_trip():
    src, dst = FXP64(18), FXP64(8)
    low, high = rescale_fewer_frac_bits_fxp64.valid_scaled_bounds(src, dst)
    x = boundary_and_random(low, high, 50000, seed=1)
    out, _ = cast_on_parties(share_scaled(x, src), dst)
    assert abs(error_in_dst_ulps(scaled_of(out), x, 18, 8).mean()) < 0.05
    values = np.array([0.0, -1.0, 3.25, -1234.5, 1e6])
    out, _ = cast_on_parties(share_values(values, src), dst)
    np.testing.assert_allclose(reconstruct(out), values, atol=1.5 * dst.ulp, rtol=0)


def test_valid_range_is_spus_safe_range_minus_half_an_ulp():
    src, dst = FXP64(18), FXP64(10)
    low, high = rescale_fewer_frac_bits_fxp64.valid_scaled_bounds(src, dst)
    assert (low, high) == (-(2**62) - 2**7, 2**62 - 2**7 - 1)


@pytest.mark.parametrize("src,dst", [(FXP64(10), FXP64(18)), (FXP32(4), FXP32(12)), (FXP64(18), FXP64(18))])
def test_more_frac_bits_is_an_exact_local_shift(src, dst):
    kernel = rescale_more_frac_bits
    assert find_cast_kernel(src, dst) is kernel
    low, high = kernel.valid_scaled_bounds(src, dst)
    x = boundary_and_random(low, high, 10000)
    out = cast_locally(kernel, share_scaled(x, src), dst)
    assert np.all(error_in_dst_ulps(scaled_of(out), x, src.frac_bits, dst.frac_bits) == 0)
    _, results = cast_on_parties(share_scaled(x, src), dst)
    assert total_comm(results).bytes_sent == 0 and all(r.comm.rounds == 0 for r in results)


def test_integer_tensors_are_unchanged():
    ints = np.array([0, 5, -5, 2**40], dtype=np.int64)
    out, results = cast_on_parties(share_scaled(ints, FXP64(18), "int64"), FXP64(10))
    np.testing.assert_array_equal(reconstruct(out), ints)
    assert total_comm(results).bytes_sent == 0


@pytest.mark.parametrize(
    "src,dst,bad",
    [
        (FXP64(18), FXP64(10), 2**62),
        (FXP64(18), FXP64(10), -(2**62) - 2**7 - 1),
        (FXP32(12), FXP32(4), 2**30),
        (FXP64(10), FXP64(18), 2**55),  # up: x·2^8 overflows 64 bits
        (FXP32(4), FXP32(12), -(2**23) - 1),
    ],
)
def test_checked_mode_rejects_out_of_range(src, dst, bad):
    x = np.array([3, bad], dtype=np.int64)
    with pytest.raises(RangeError, match="rescale_.*valid range"):
        cast_on_parties(share_scaled(x, src), dst, checked=True)


def test_unchecked_out_of_range_does_not_hang():
    out, _ = cast_on_parties(share_scaled(np.array([2**62 + 5]), FXP64(18)), FXP64(10), recv_timeout_ms=5000)
    assert out[0].shape == (1,)


def test_every_ring_pair_has_a_kernel_except_the_documented_gaps():
    rings = [FXP32(f) for f in range(0, 29, 4)] + [FXP64(f) for f in range(0, 61, 6)]
    for src in rings:
        for dst in rings:
            gap = (src.field, dst.field) == ("FM64", "FM32") and src.frac_bits - dst.frac_bits > 32
            gap |= (src.field, dst.field) == ("FM32", "FM64") and dst.frac_bits - src.frac_bits > 32
            if gap:
                with pytest.raises(RingError):
                    find_cast_kernel(src, dst)
                continue
            kernel = find_cast_kernel(src, dst)
            assert sum(k.applies(src, dst) for k in registered_cast_kernels()) == 1, (src, dst)
            assert kernel.valid_range(src, dst) > 0


def test_every_kernel_exposes_its_contract():
    for kernel in registered_cast_kernels():
        assert isinstance(kernel.name, str)
        assert kernel.max_error_ulps in (0.0, 1.5)
        assert kernel.rounds in (0, 1) and kernel.bits_per_element in (0, 48, 96, 192, 384)
        assert callable(kernel.applies) and callable(kernel.valid_range) and callable(kernel)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    field=st.sampled_from(["FM32", "FM64"]),
    f=st.integers(1, 60),
    d=st.integers(1, 60),
    fraction=st.floats(-1.0, 1.0),
)
def test_property_truncation_bound(field, f, d, fraction):
    bits = 32 if field == "FM32" else 64
    f = min(f, bits - 4)
    d = min(d, f)
    src, dst = RingSpec(field, f), RingSpec(field, f - d)
    kernel = find_cast_kernel(src, dst)
    low, high = kernel.valid_scaled_bounds(src, dst)
    x = np.array([int(fraction * high), low, high, 0], dtype=np.int64)
    out, _ = cast_on_parties(share_scaled(x, src), dst)
    err = error_in_dst_ulps(scaled_of(out), x, src.frac_bits, dst.frac_bits)
    assert err.min() > -1.5 and err.max() <= 1.5


# ---- what a receiver sees, for the 8- and 16-bit wrap-count words ------------------------------
VIEW_CASES = [(FXP32(16), FXP32(8), np.uint8), (FXP64(30), FXP64(14), np.uint16)]


def _first_row_zero(word):
    """Rewrite: the first row of every (3, n) draw of ``word`` pads (t0 / t1, the output
    shares' re-randomisation) is zero, so the share party 2 derives is the wrap count."""

    def rewrite(inner, peer, shape, dtype):
        pad = np.array(inner.shared(peer, shape, dtype))
        if np.dtype(dtype) == np.dtype(word) and len(shape) == 2 and shape[0] == 3:
            pad[0] = 0
        return pad

    return rewrite


VIEW_BROKEN = {
    "no mask": lambda prgs, word: [PadDouble(p, zero_pads(word)) for p in prgs],
    "no re-randomisation": lambda prgs, word: [PadDouble(p, _first_row_zero(word)) for p in prgs],
}


def _party2_truncation_view(value, src, dst, word, broken=None):
    """Party 2's messages (as byte values) and its own output components, for a
    truncation of ``value`` in which party 2's input components are fixed constants
    s_2 = −s_0, so that the wrap count (which the broken variants expose) is 0 for a
    positive value and 1 for a negative one."""
    xs = fixed_view_shares(np.full((4000,), value), src, "float32", constants=(0x2545F491, -0x2545F491))
    prgs = PairwisePRG.deterministic_trio(11)
    if broken is not None:
        prgs = VIEW_BROKEN[broken](prgs, word)
    outs = run_three_parties(
        lambda ctx: (run_cast(ctx, xs[ctx.rank], dst).share.components, ctx.link.received),
        prgs=prgs,
        link_class=RecordingLink,
    )
    own_output, received = outs[2]
    view = [(s, np.frombuffer(p, np.uint8).astype(np.float64)) for s, p in received]
    return view + [("own output", np.ascontiguousarray(own_output).view(np.uint8).ravel().astype(np.float64))]


@pytest.mark.parametrize("src,dst,word", VIEW_CASES, ids=["fxp32-8bit-words", "fxp64-16bit-words"])
@pytest.mark.parametrize("broken", [None, *VIEW_BROKEN])
def test_what_party_2_sees_of_a_narrow_word_truncation_does_not_depend_on_the_secret(src, dst, word, broken):
    """Given its own (fixed) components and PRG streams, party 2's received words and the
    output share it derives look the same for two secrets with different wrap counts
    (0.01 and −3000);
    without the masks, or without the re-randomisation of the output shares, they do not."""
    assert find_cast_kernel(src, dst).bits_per_element == 6 * 8 * np.dtype(word).itemsize
    a = _party2_truncation_view(0.01, src, dst, word, broken)
    b = _party2_truncation_view(-3000.0, src, dst, word, broken)
    assert_views_alike(a, b, broken)
