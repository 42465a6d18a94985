import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ditto_spu.errors import RangeError, RingError, ShareFormatError
from ditto_spu.rings import FXP32, FXP64, RingSpec
from ditto_spu.shares import AShare, reconstruct, share_values


def test_ringspec_str_parse_roundtrip():
    for ring in (FXP32(8), FXP32(12), FXP64(18), FXP64(0)):
        assert RingSpec.parse(str(ring)) == ring
    assert str(FXP64(18)) == "FXP64[f=18]"
    assert FXP32(10).bits == 32 and FXP64(18).dtype == np.uint64


@pytest.mark.parametrize("bad", ["FXP16[f=3]", "FXP32", "fxp32[f=1]", "FXP32[f=-1]", ""])
def test_ringspec_parse_rejects(bad):
    with pytest.raises(RingError):
        RingSpec.parse(bad)


def test_ringspec_rejects_fields_and_bits():
    with pytest.raises(RingError, match="FM128|unknown field"):
        RingSpec("FM128", 26)
    with pytest.raises(RingError, match="fraction bits"):
        RingSpec("FM32", 30)


def test_encode_checks_range():
    ring = FXP32(8)
    ring.encode([ring.max_abs - ring.ulp])
    with pytest.raises(RangeError, match="does not fit FXP32"):
        ring.encode([ring.max_abs])
    with pytest.raises(RangeError, match="non-finite"):
        ring.encode([np.inf])


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([FXP32(8), FXP32(12), FXP64(18)]),
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=20),
)
def test_share_reconstruct_roundtrip(ring, values):
    x = np.array(values)
    shares = share_values(x, ring, "float32")
    assert all(s.ring == ring for s in shares)
    np.testing.assert_allclose(reconstruct(shares), x, atol=ring.ulp / 2 + 1e-12)


def test_shares_are_replicated_and_look_random():
    ring = FXP64(18)
    shares = share_values(np.zeros(1000), ring, "float32")
    for i in range(3):
        assert np.array_equal(shares[i].components[..., 1], shares[(i + 1) % 3].components[..., 0])
    # a single party's components of a zero tensor are not zero (uniform words)
    assert np.count_nonzero(shares[0].components) > 1900


def test_libspu_codec_roundtrip_and_spu_reconstructs():
    from spu import api as spu_api
    from spu import libspu

    for ring in (FXP32(8), FXP64(18)):
        cfg = libspu.RuntimeConfig(
            protocol=libspu.ProtocolKind.ABY3, field=ring.spu_field(), fxp_fraction_bits=ring.frac_bits
        )
        io = spu_api.Io(3, cfg)
        x = np.random.default_rng(0).normal(size=(70, 300)).astype(np.float32)  # > 1 chunk
        spu_shares = io.make_shares(x, libspu.Visibility.VIS_SECRET)
        ours = [AShare.from_libspu(s, ring) for s in spu_shares]
        assert ours[0].dtype == "float32" and ours[0].shape == x.shape
        np.testing.assert_allclose(reconstruct(ours), x, atol=2 * ring.ulp)
        back = io.reconstruct([s.to_libspu() for s in share_values(x, ring)])
        np.testing.assert_allclose(back, x, atol=2 * ring.ulp)


def test_codec_rejects_other_storage_types():
    from spu import api as spu_api
    from spu import libspu

    cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.ABY3, field=libspu.FieldType.FM64)
    io = spu_api.Io(3, cfg)
    public = io.make_shares(np.ones(3, np.float32), libspu.Visibility.VIS_PUBLIC)[0]
    with pytest.raises(ShareFormatError, match="Pub2k<FM64>"):
        AShare.from_libspu(public, FXP64(18))
    boolean = io.make_shares(np.array([True, False]), libspu.Visibility.VIS_SECRET)[0]
    with pytest.raises(ShareFormatError, match=r"BShr"):
        AShare.from_libspu(boolean, FXP64(18))
    semi2k = spu_api.Io(
        3, libspu.RuntimeConfig(protocol=libspu.ProtocolKind.SEMI2K, field=libspu.FieldType.FM64)
    ).make_shares(np.ones(3, np.float32), libspu.Visibility.VIS_SECRET)[0]
    with pytest.raises(ShareFormatError, match="semi2k"):
        AShare.from_libspu(semi2k, FXP64(18))
    arith = io.make_shares(np.ones(3, np.float32), libspu.Visibility.VIS_SECRET)[0]
    with pytest.raises(ShareFormatError, match="FXP32"):
        AShare.from_libspu(arith, FXP32(8))


def test_ashare_validates_layout():
    ring = FXP32(8)
    with pytest.raises(ShareFormatError, match="shape"):
        AShare(ring, (3,), "float32", np.zeros((3,), np.uint32))
    with pytest.raises(ShareFormatError, match="dtype"):
        AShare(ring, (3,), "float32", np.zeros((3, 2), np.uint64))
