"""How a saved model directory is meant to run securely: ``ditto_spu.json`` beside it.

A student written by ``ditto-spu distill`` was trained for one mode and one precision
policy; run under another it computes something else. The directory therefore records
them (the policy inline, so the directory is self-contained), plus the teacher it was
distilled from (the FP32 model a user compares it with)::

    {"mode": "ditto", "policy": {...policy JSON...}, "teacher": "minilm", "seq_len": 64}

``read_run_settings`` also understands directories written before this file existed: their
``distill.json`` names the mode and the policy file of the run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from ..errors import DittoError
from ..policy import Policy, load_policy

SETTINGS_FILE = "ditto_spu.json"


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The mode, policy and teacher a model directory was trained for."""

    mode: str
    policy: Policy
    teacher: Optional[str] = None
    seq_len: Optional[int] = None
    source: str = ""  # the file they were read from


def model_directory(path) -> Path:
    """A model directory (with ``config.json``) from itself or a distill run directory
    (whose ``student/`` holds the model)."""
    p = Path(path)
    if (p / "student" / "config.json").exists():
        return p / "student"
    if (p / "config.json").exists():
        return p
    raise DittoError(f"{p}: neither a model directory (config.json) nor a distill run directory (student/)")


def write_run_settings(directory, mode: str, policy, *, teacher: Optional[str] = None, seq_len: Optional[int] = None) -> Path:
    """Record ``mode`` and ``policy`` (a Policy, path or name) in ``directory``."""
    path = Path(directory) / SETTINGS_FILE
    obj = {"mode": str(mode), "policy": load_policy(policy).to_obj(), "teacher": teacher, "seq_len": seq_len}
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def read_run_settings(directory) -> Optional[RunSettings]:
    """The settings recorded in a model or run directory; None if it records none."""
    try:
        d = model_directory(directory)
    except DittoError:
        return None
    settings = d / SETTINGS_FILE
    if settings.exists():
        obj = json.loads(settings.read_text())
        try:
            return RunSettings(obj["mode"], Policy.from_obj(obj["policy"]), obj.get("teacher"), obj.get("seq_len"), str(settings))
        except KeyError as e:
            raise DittoError(f"{settings}: missing key {e}; rewrite it with ditto-spu distill") from None
    legacy = d / "distill.json"
    if legacy.exists():
        obj = json.loads(legacy.read_text())
        config = obj.get("config", {})
        if "mode" in config and config.get("policy"):
            try:
                policy = load_policy(config["policy"])
            except DittoError as e:
                raise DittoError(
                    f"{legacy} names the policy {config['policy']!r}, which is not found from here ({e}); "
                    "pass --policy explicitly"
                ) from None
            return RunSettings(config["mode"], policy, obj.get("teacher"), config.get("seq_len"), str(legacy))
    return None
