"""Run settings of a saved model directory (ditto_spu.json, or a legacy distill.json)."""

import json

import pytest

from ditto_spu.errors import DittoError
from ditto_spu.models.saved import model_directory, read_run_settings, write_run_settings
from ditto_spu.policy import Policy


def _model_dir(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_settings_round_trip_with_the_policy_inline(tmp_path):
    d = _model_dir(tmp_path / "run" / "student")
    policy = Policy().with_override("layer/3", float16="FXP32[f=12]")
    write_run_settings(d, "ditto", policy, teacher="minilm", seq_len=64)
    s = read_run_settings(tmp_path / "run")  # a run directory resolves to its student/
    assert (s.mode, s.teacher, s.seq_len) == ("ditto", "minilm", 64)
    assert s.policy == policy


def test_legacy_distill_json_names_mode_and_policy_file(tmp_path):
    d = _model_dir(tmp_path / "student")
    pol = tmp_path / "p.json"
    Policy().with_override("layer/1", float16="FXP32[f=10]").save(pol)
    (d / "distill.json").write_text(json.dumps({"teacher": "tiny", "config": {"mode": "ditto-2quad", "policy": str(pol)}}))
    s = read_run_settings(d)
    assert s.mode == "ditto-2quad" and s.policy == Policy.load(pol) and s.teacher == "tiny"
    (d / "distill.json").write_text(json.dumps({"config": {"mode": "ditto", "policy": str(tmp_path / "gone.json")}}))
    with pytest.raises(DittoError, match="pass --policy"):
        read_run_settings(d)


def test_directories_without_settings(tmp_path):
    assert read_run_settings(_model_dir(tmp_path / "plain")) is None
    assert read_run_settings(tmp_path / "nothing") is None
    with pytest.raises(DittoError, match="neither a model directory"):
        model_directory(tmp_path / "nothing")
