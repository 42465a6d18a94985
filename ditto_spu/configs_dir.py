"""Where the configs that ship with ditto-spu are: modes, precision policies, deployment
examples. In a source checkout (and an editable install) they are the repository's
``configs/``; ``pip install .`` / a wheel installs the same files as ``ditto_spu/configs``
(setup.py maps the folder into the package)."""

from __future__ import annotations

from pathlib import Path

from .errors import DittoError

_HERE = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """The folder holding ``modes/`` and the ``policy_*.json`` files."""
    for candidate in (_HERE / "configs", _HERE.parent / "configs"):
        if (candidate / "modes").is_dir():
            return candidate
    raise DittoError(
        f"ditto-spu's configs are missing (looked in {_HERE / 'configs'} and {_HERE.parent / 'configs'}): "
        "reinstall the package (pip install .)"
    )


def config_path(name: str) -> Path:
    """A shipped config file by name, e.g. ``config_path("policy_minilm_ditto.json")``."""
    return configs_dir() / name
