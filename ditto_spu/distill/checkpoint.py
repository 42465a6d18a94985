"""Resumable training checkpoints: parameters, optimizer state, step and RNG key.

A checkpoint is two files written atomically (temporary file, then rename) in the run
directory: ``checkpoint.msgpack`` (``flax.serialization`` bytes of the train state) and
``checkpoint.json`` (step, stage, loss history, elapsed time and the run's settings, so a
resume with different settings is refused instead of silently mixing runs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from flax import serialization

from ..errors import DittoError

STATE_FILE = "checkpoint.msgpack"
META_FILE = "checkpoint.json"


class CheckpointError(DittoError):
    """A checkpoint is missing, corrupt or belongs to a run with other settings."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(run_dir, state: Any, meta: dict) -> Path:
    """Write ``state`` (a pytree of arrays / ints) and ``meta`` (JSON-able) to ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(run_dir / STATE_FILE, serialization.to_bytes(state))
    _atomic_write(run_dir / META_FILE, (json.dumps(meta, indent=2, default=float) + "\n").encode())
    return run_dir / STATE_FILE


def read_checkpoint_meta(run_dir) -> Optional[dict]:
    """The metadata of the checkpoint in ``run_dir``, or None when there is none."""
    path = Path(run_dir) / META_FILE
    if not path.exists() or not (Path(run_dir) / STATE_FILE).exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e}); delete the run directory") from None


def load_checkpoint(run_dir, template: Any) -> Any:
    """The saved state, restored into the structure of ``template``."""
    path = Path(run_dir) / STATE_FILE
    try:
        return serialization.from_bytes(template, path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{path}: does not match this run's model / optimizer ({e}); use another --out"
        ) from None
