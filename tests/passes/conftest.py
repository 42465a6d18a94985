import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HLO_DIR = ROOT / "tests" / "data" / "hlo"

# pytest puts tests/ on sys.path, where this directory would shadow the top-level
# ``passes`` package as a namespace package: make the real one win.
if str(ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(ROOT))
if getattr(sys.modules.get("passes"), "__file__", None) is None:
    sys.modules.pop("passes", None)
import passes  # noqa: E402,F401


@pytest.fixture
def hlo():
    """Read a snippet from tests/data/hlo by stem."""

    def read(name: str) -> str:
        return (HLO_DIR / f"{name}.mlir").read_text()

    return read
