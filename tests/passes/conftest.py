import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HLO_DIR = ROOT / "tests" / "data" / "hlo"



@pytest.fixture
def hlo():
    """Read a snippet from tests/data/hlo by stem."""

    def read(name: str) -> str:
        return (HLO_DIR / f"{name}.mlir").read_text()

    return read
