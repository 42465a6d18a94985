import pytest

from ditto_spu.policy import Policy, PolicyError, load_policy
from ditto_spu.rings import FXP32, FXP64


def test_default_rings():
    p = Policy()
    assert p.ring_for("float16") == FXP32(8)
    assert p.ring_for("bf16") == FXP32(8)
    assert p.ring_for("f32") == FXP64(18)
    assert p.ring_for("float64") == FXP64(18)
    assert p.ring_for("int32") is None and p.ring_for("i1") is None


def test_config_default_matches_code():
    assert load_policy("default") == Policy()


def test_scope_overrides_match_whole_path_parts_and_later_wins():
    p = (
        Policy()
        .with_override("encoder/layer/3", float16="FXP32[f=12]")
        .with_override("*/query/*", float16="FXP32[f=11]")
    )
    assert p.ring_for("f16", "encoder/layer/3/attention/self/key/dot_general") == FXP32(12)
    assert p.ring_for("f16", "encoder/layer/30/attention/self/key/dot_general") == FXP32(8)
    assert p.ring_for("f16", "encoder/layer/3/attention/self/query/dot_general") == FXP32(11)
    assert p.ring_for("f32", "encoder/layer/3/attention/self/key/add") == FXP64(18)


def test_json_round_trip(tmp_path):
    p = Policy(high=FXP64(20)).with_override("layer/1/", float16="FXP32[f=10]", float32="FXP64[f=16]")
    path = tmp_path / "p.json"
    p.save(path)
    assert Policy.load(path) == p
    assert load_policy(str(path)) == p
    assert load_policy("layerwise_example").overrides


def test_bad_policy_is_clear():
    with pytest.raises(PolicyError, match="unknown dtype"):
        Policy.from_obj({"overrides": [{"scope": "x", "float8": "FXP32[f=8]"}]})
    with pytest.raises(PolicyError, match="unknown policy keys"):
        Policy.from_obj({"float17": "FXP32[f=8]"})
