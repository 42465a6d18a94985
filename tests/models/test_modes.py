"""Mode configs: the shipped modes say what the design says, and round-trip."""

import json

import jax.numpy as jnp
import pytest

from ditto_spu.models import Mode, ModeError, available_modes, load_mode
from ditto_spu.models.modes import MODES_DIR


def test_shipped_modes():
    assert set(available_modes()) >= {"exact", "puma", "mpcformer", "ditto"}
    exact, puma, mpc, ditto = (load_mode(n) for n in ("exact", "puma", "mpcformer", "ditto"))
    assert (exact.gelu, exact.softmax, exact.dtypes.mixed) == ("exact", "exact", False)
    assert (puma.gelu, puma.softmax, puma.dtypes.mixed) == ("puma", "puma", False)
    assert (mpc.gelu, mpc.softmax, mpc.dtypes.mixed) == ("quad", "2quad", False)
    assert (ditto.gelu, ditto.softmax, ditto.dtypes.mixed) == ("quad", "puma", True)
    assert ditto.dtypes.low_dtype == jnp.float16 and ditto.dtypes.high_dtype == jnp.float32
    for m in (exact, puma, mpc):
        assert m.dtypes.low_dtype == m.dtypes.high_dtype == jnp.float32


def test_ablation_is_one_call():
    d32 = load_mode("ditto").all_high()
    assert (d32.gelu, d32.softmax, d32.dtypes.mixed) == ("quad", "puma", False)
    assert load_mode("ditto@float32") == d32
    mixed_mpc = load_mode("mpcformer").replace(low="float16")
    assert mixed_mpc.dtypes.mixed and mixed_mpc.softmax == "2quad"
    assert load_mode("ditto").replace(gelu_in="high").dtypes.gelu_dtype == jnp.float32


def test_round_trip_and_path(tmp_path):
    m = load_mode("ditto").replace(name="mine", softmax="2quad")
    p = tmp_path / "mine.json"
    m.save(p)
    assert load_mode(p) == m
    assert Mode.from_dict(json.loads(p.read_text())) == m
    assert load_mode(MODES_DIR / "puma.json") == load_mode("puma")


@pytest.mark.parametrize(
    "bad, msg",
    [
        ({"name": "x", "approximations": {"gelu": "relu"}}, "unknown gelu"),
        ({"name": "x", "approximations": {"softmax": "2relu"}}, "unknown softmax"),
        ({"name": "x", "dtypes": {"low": "int8"}}, "dtypes.low"),
        ({"name": "x", "dtypes": {"gelu": "mid"}}, "dtypes.gelu"),
        ({"name": "x", "extra": 1}, "unknown key"),
        ({"approximations": {}}, "needs a 'name'"),
    ],
)
def test_bad_modes_say_what_is_wrong(bad, msg):
    with pytest.raises(ModeError, match=msg):
        Mode.from_dict(bad)


def test_unknown_mode_name():
    with pytest.raises(ModeError, match="no mode 'nope'"):
        load_mode("nope")
