"""Modes: an approximation set × a dtype policy, loaded from configs/modes/*.json.

A :class:`Mode` says two independent things about a stock HF Flax model:

* :class:`Approximations` - which GeLU and which softmax replace the model's own
  (names from :data:`ditto_spu.approx.GELUS` / :data:`~ditto_spu.approx.SOFTMAXES`;
  GeLU ``"exact"`` keeps the model's configured activation, e.g. erf GeLU for BERT and
  the tanh form for GPT-2, so the exact mode reproduces the stock model);
* :class:`DtypePolicy` - which element type each kind of computation runs in. The
  compiler assigns rings from these dtypes (float16/bfloat16 → FXP32, float32 → FXP64).
  ``low = None`` means everything in ``high`` (one ring).

Keeping them apart makes an ablation one call: ``load_mode("ditto").all_high()`` is
Ditto's approximations on FXP64 only; ``load_mode("mpcformer").replace(low="float16")``
is MPCFormer's approximations on mixed rings.

JSON layout (configs/modes/ditto.json)::

    {"name": "ditto", "description": "...",
     "approximations": {"gelu": "quad", "softmax": "puma"},
     "dtypes": {"low": "float16", "high": "float32", "gelu": "low"}}
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Union

import jax.numpy as jnp

from ..approx import GELUS, SOFTMAXES
from ..configs_dir import configs_dir
from ..errors import DittoError

#: Where the named modes live: <repo>/configs/modes/<name>.json.
MODES_DIR = configs_dir() / "modes"

_LOW_DTYPES = ("float16", "bfloat16")
_HIGH_DTYPES = ("float32",)
_PLACES = ("low", "high")


class ModeError(DittoError, ValueError):
    """A mode file or a mode override is malformed."""


@dataclasses.dataclass(frozen=True)
class Approximations:
    """Which non-linearities replace the model's: ``gelu`` and ``softmax`` by name."""

    gelu: str = "exact"
    softmax: str = "exact"

    def __post_init__(self):
        if self.gelu not in GELUS:
            raise ModeError(f"unknown gelu {self.gelu!r}: choose one of {sorted(GELUS)}")
        if self.softmax not in SOFTMAXES:
            raise ModeError(
                f"unknown softmax {self.softmax!r}: choose one of {sorted(SOFTMAXES)}"
            )


@dataclasses.dataclass(frozen=True)
class DtypePolicy:
    """Element types per kind of computation.

    * ``low`` (``"float16"`` / ``"bfloat16"`` / ``None``): linear layers - Dense / Conv1D
      projections (Q, K, V, attention output, FFN, pooler, heads), the one-hot × table
      embeddings, the attention score and context matmuls, and the softmax's
      ``x − max(x)`` and cut-off (or 2Quad's square). ``None``: all in ``high``.
    * ``high`` (``"float32"``): residual adds, LayerNorm, exp / sum / division of the
      softmax, the pooler's tanh.
    * ``gelu`` (``"low"`` / ``"high"``): where the GeLU (approximation) runs. Ditto's
      quad GeLU is a polynomial that FXP32 holds; keeping it ``low`` avoids up-casting
      the widest tensor of the layer (seq × 4·hidden) and down-casting it again for
      the FFN's second matmul.
    """

    low: Optional[str] = None
    high: str = "float32"
    gelu: str = "low"

    def __post_init__(self):
        if self.low is not None and self.low not in _LOW_DTYPES:
            raise ModeError(f"dtypes.low must be one of {_LOW_DTYPES} or null, got {self.low!r}")
        if self.high not in _HIGH_DTYPES:
            raise ModeError(f"dtypes.high must be one of {_HIGH_DTYPES}, got {self.high!r}")
        if self.gelu not in _PLACES:
            raise ModeError(f"dtypes.gelu must be 'low' or 'high', got {self.gelu!r}")

    @property
    def mixed(self) -> bool:
        """True when two element types (two rings) are in play."""
        return self.low is not None

    @property
    def low_dtype(self) -> jnp.dtype:
        """The dtype of linear computations (``high_dtype`` when not mixed)."""
        return jnp.dtype(self.low if self.low is not None else self.high)

    @property
    def high_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.high)

    @property
    def gelu_dtype(self) -> jnp.dtype:
        return self.low_dtype if self.gelu == "low" else self.high_dtype


@dataclasses.dataclass(frozen=True)
class Mode:
    """A named pair (approximations, dtypes). See the module docstring."""

    name: str
    approximations: Approximations = Approximations()
    dtypes: DtypePolicy = DtypePolicy()
    description: str = ""

    # -- derived views ----------------------------------------------------------------
    @property
    def gelu(self) -> str:
        return self.approximations.gelu

    @property
    def softmax(self) -> str:
        return self.approximations.softmax

    # -- variants -------------------------------------------------------------------
    def replace(self, *, name: Optional[str] = None, gelu=None, softmax=None, **dtypes) -> "Mode":
        """A copy with some approximations / dtype fields changed.

        ``dtypes`` keys: ``low`` (pass ``low=None`` for one ring), ``high``, ``gelu_in``
        (where GeLU runs: "low"/"high"). The name gets a suffix unless given.
        """
        unknown = set(dtypes) - {"low", "high", "gelu_in"}
        if unknown:
            raise ModeError(f"unknown dtype override(s) {sorted(unknown)}: use low, high, gelu_in")
        approx = dataclasses.replace(
            self.approximations,
            **{k: v for k, v in (("gelu", gelu), ("softmax", softmax)) if v is not None},
        )
        dt_kwargs = {k: v for k, v in dtypes.items() if k in ("low", "high")}
        if "gelu_in" in dtypes:
            dt_kwargs["gelu"] = dtypes["gelu_in"]
        dt = dataclasses.replace(self.dtypes, **dt_kwargs)
        if name is None:
            parts = [f"{k}={v}" for k, v in (("gelu", gelu), ("softmax", softmax)) if v is not None]
            parts += [f"{k}={v}" for k, v in dtypes.items()]
            name = f"{self.name}[{','.join(parts)}]" if parts else self.name
        return Mode(name=name, approximations=approx, dtypes=dt, description=self.description)

    def all_high(self) -> "Mode":
        """Same approximations, every computation in ``high`` (one FXP64 ring)."""
        return self.replace(name=f"{self.name}@{self.dtypes.high}", low=None)

    # -- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "approximations": dataclasses.asdict(self.approximations),
            "dtypes": dataclasses.asdict(self.dtypes),
        }

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "<dict>") -> "Mode":
        unknown = set(d) - {"name", "description", "approximations", "dtypes"}
        if unknown:
            raise ModeError(f"{source}: unknown key(s) {sorted(unknown)}")
        if "name" not in d:
            raise ModeError(f"{source}: a mode needs a 'name'")
        try:
            approx = Approximations(**d.get("approximations", {}))
            dtypes = DtypePolicy(**d.get("dtypes", {}))
        except TypeError as e:  # unexpected keyword
            raise ModeError(f"{source}: {e}") from None
        except ModeError as e:
            raise ModeError(f"{source}: {e}") from None
        return cls(
            name=d["name"],
            approximations=approx,
            dtypes=dtypes,
            description=d.get("description", ""),
        )

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def __str__(self) -> str:
        dt = self.dtypes
        prec = f"{dt.low}/{dt.high}, gelu in {dt.gelu}" if dt.mixed else f"all {dt.high}"
        return f"{self.name}: gelu={self.gelu}, softmax={self.softmax}, {prec}"


def available_modes() -> list[str]:
    """Names of the modes shipped in configs/modes/."""
    return sorted(p.stem for p in MODES_DIR.glob("*.json"))


def load_mode(name_or_path: Union[str, Path, Mode]) -> Mode:
    """A :class:`Mode` by name (``"exact"``, ``"puma"``, ``"mpcformer"``, ``"ditto"``) or
    from a JSON file path. A :class:`Mode` is returned unchanged.

    ``"<name>@float32"`` gives the named mode with every computation in float32
    (:meth:`Mode.all_high`), e.g. ``"ditto@float32"``.
    """
    if isinstance(name_or_path, Mode):
        return name_or_path
    s = str(name_or_path)
    if s.endswith("@float32") and not Path(s).exists():
        return load_mode(s[: -len("@float32")]).all_high()
    path = Path(s)
    if not path.suffix == ".json" or not path.exists():
        candidate = MODES_DIR / f"{s}.json"
        if candidate.exists():
            path = candidate
        elif not path.exists():
            raise ModeError(
                f"no mode {s!r}: not a file and not one of {available_modes()} in {MODES_DIR}"
            )
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModeError(f"{path}: not valid JSON ({e})") from None
    return Mode.from_dict(d, source=str(path))
