"""Policy: which ring a value lives in, from its element type and its op's name scope.

Rule (the ring of a *value*):

* ``float16`` and ``bfloat16`` → :attr:`Policy.low` (default ``FXP32[f=8]``);
* ``float32`` and ``float64`` → :attr:`Policy.high` (default ``FXP64[f=18]``);
* integers and booleans have **no ring of their own**: SPU stores them as plain ring
  integers, so they follow the computation around them. An integer/bool value lives in the
  ring of the op that defines it when that op touches floats (``compare`` of f16 values →
  the f16 ring); otherwise in the ring of its users when they agree; otherwise in
  :attr:`Policy.integer` (default ``FXP64[f=18]``, wide enough for any int32). Ops on
  constants only are not placed at all: they are cloned into each segment that needs them.

Per-scope overrides (layer-wise dyadic quantization): an :class:`Override` names a glob
``scope`` matched against jax's name scope of the op defining the value (e.g.
``encoder/layer/3/attention/self/query/dot_general``), or the argument's name for
function arguments, and replaces the ring of some dtypes. The pattern matches when
``fnmatch(scope, pattern)`` holds or, for patterns without wildcards, when it occurs as
a ``/``-delimited part of the scope (``"layer/3"`` matches ``encoder/layer/3/attention``
but not ``encoder/layer/30``). Later overrides win.

JSON form (``configs/policy_default.json``)::

    {"float16": "FXP32[f=8]", "bfloat16": "FXP32[f=8]", "float32": "FXP64[f=18]",
     "float64": "FXP64[f=18]", "integer": "FXP64[f=18]",
     "overrides": [{"scope": "encoder/layer/3/", "float16": "FXP32[f=12]"}]}

Comparison bounds (the ranges the reduced-ring kernels rely on,
:mod:`ditto_spu.kernels.reduce_max`, :mod:`ditto_spu.kernels.threshold_select`):
``comparison_bound`` (top level, default :data:`DEFAULT_COMPARISON_BOUND`) is a public
bound on |x| for the maxima of low-ring values (the softmax's row max and cut-off) and on
|x − c| for the comparisons with a public constant c that select a value (PUMA's GeLU
steps, in mixed-ring programs); an override may carry its own ``comparison_bound`` for its
scope, and ``null`` at the top level keeps every such comparison in SPU. ``rsqrt_range`` ([low, high], default :data:`DEFAULT_RSQRT_RANGE`; ``null``: SPU's
own) is the calibrated range of rsqrt's input (LayerNorm's variance + ε) for
:mod:`ditto_spu.kernels.rsqrt`. The default comparison bound holds attention scores up to ±488 next to the ring-safe mask bias
(−1024 after the max shift: 1024 + 2·488 = 2000); calibration records the real range
and the emulator's range report flags a value beyond its bound, naming the layer.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os

from .errors import DittoError
from .rings import FXP32, FXP64, RingSpec

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
DEFAULT_COMPARISON_BOUND = 2000.0
DEFAULT_RSQRT_RANGE = (2.0**-12, 2.0**16)
_ELEM_TO_DTYPE = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64"}


class PolicyError(DittoError):
    """A policy file or override is malformed."""


def _scope_matches(pattern: str, scope: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(scope, pattern)
    p = pattern.strip("/")
    if not p:
        return True
    return f"/{p}/" in f"/{scope.strip('/')}/"


@dataclasses.dataclass(frozen=True)
class Override:
    """Rings for some float dtypes of values defined in ops whose scope matches ``scope``."""

    scope: str
    rings: tuple  # ((dtype name, RingSpec), ...)
    comparison_bound: float | None = None

    def matches(self, scope: str) -> bool:
        return _scope_matches(self.scope, scope)

    def ring_for(self, dtype: str):
        for d, r in self.rings:
            if d == dtype:
                return r
        return None

    def to_obj(self) -> dict:
        obj: dict = {"scope": self.scope, **{d: str(r) for d, r in self.rings}}
        if self.comparison_bound is not None:
            obj["comparison_bound"] = self.comparison_bound
        return obj

    @classmethod
    def from_obj(cls, obj) -> "Override":
        if not isinstance(obj, dict) or "scope" not in obj:
            raise PolicyError(f"an override needs a 'scope' and dtype rings, got {obj!r}")
        rings = []
        bound = None
        for k, v in obj.items():
            if k == "scope":
                continue
            if k == "comparison_bound":
                bound = _bound(v, f"override for scope {obj['scope']!r}")
                continue
            if k not in FLOAT_DTYPES:
                raise PolicyError(
                    f"override for scope {obj['scope']!r}: unknown dtype {k!r}; "
                    f"use one of {', '.join(FLOAT_DTYPES)}"
                )
            rings.append((k, RingSpec.parse(v)))
        return cls(str(obj["scope"]), tuple(rings), bound)


def _range(value):
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise PolicyError(f"rsqrt_range must be [low, high] or null, got {value!r}") from None
    if not 0 < low <= high < float("inf"):
        raise PolicyError(f"rsqrt_range needs 0 < low <= high, got {value!r}")
    return (low, high)


def _bound(value, where: str):
    if value is None:
        return None
    try:
        bound = float(value)
    except (TypeError, ValueError):
        bound = float("nan")
    if not bound > 0 or bound == float("inf"):
        raise PolicyError(f"{where}: comparison_bound must be a positive number or null, got {value!r}")
    return bound


@dataclasses.dataclass(frozen=True)
class Policy:
    """Element type (+ scope) → RingSpec. See the module docstring for the rule."""

    low: RingSpec = dataclasses.field(default_factory=FXP32)  # float16, bfloat16
    high: RingSpec = dataclasses.field(default_factory=FXP64)  # float32, float64
    integer: RingSpec = dataclasses.field(default_factory=FXP64)
    overrides: tuple = ()
    bfloat16: RingSpec | None = None  # None: same as ``low``
    float64: RingSpec | None = None  # None: same as ``high``
    comparison_bound: float | None = DEFAULT_COMPARISON_BOUND
    rsqrt_range: tuple | None = DEFAULT_RSQRT_RANGE

    def bound_for(self, scope: str = "") -> float | None:
        """The comparison bound of an op in ``scope``: the last matching override's, else
        the policy's (None: no reduced-ring comparison there)."""
        bound = self.comparison_bound
        for o in self.overrides:
            if o.comparison_bound is not None and o.matches(scope):
                bound = o.comparison_bound
        return bound

    @classmethod
    def uniform(cls, ring: RingSpec) -> "Policy":
        """Every value in one ring (e.g. ``Policy.uniform(FXP64())`` = stock SPU)."""
        return cls(low=ring, high=ring, integer=ring)

    def base_ring(self, dtype: str) -> RingSpec | None:
        if dtype == "float16":
            return self.low
        if dtype == "bfloat16":
            return self.bfloat16 or self.low
        if dtype == "float32":
            return self.high
        if dtype == "float64":
            return self.float64 or self.high
        return None

    def ring_for(self, dtype: str, scope: str = "") -> RingSpec | None:
        """Ring of a value of logical ``dtype`` (``"float16"`` or MLIR ``"f16"``) defined
        in ``scope``; ``None`` for integers and booleans (they follow their ops)."""
        dtype = _ELEM_TO_DTYPE.get(dtype, dtype)
        ring = self.base_ring(dtype)
        if ring is None:
            return None
        for o in self.overrides:
            if o.matches(scope):
                r = o.ring_for(dtype)
                if r is not None:
                    ring = r
        return ring

    def with_override(self, scope: str, **rings) -> "Policy":
        """A copy with one more override, e.g. ``with_override("layer/3", float16="FXP32[f=12]")``."""
        o = Override.from_obj({"scope": scope, **{k: str(v) for k, v in rings.items()}})
        return dataclasses.replace(self, overrides=self.overrides + (o,))

    @property
    def rings(self) -> list:
        """Every ring the policy can assign."""
        rs = {self.low, self.high, self.integer}
        rs.update(r for r in (self.bfloat16, self.float64) if r is not None)
        for o in self.overrides:
            rs.update(r for _, r in o.rings)
        return sorted(rs)

    # ---- JSON ---------------------------------------------------------------------------
    def to_obj(self) -> dict:
        return {
            "float16": str(self.low),
            "bfloat16": str(self.bfloat16 or self.low),
            "float32": str(self.high),
            "float64": str(self.float64 or self.high),
            "integer": str(self.integer),
            "comparison_bound": self.comparison_bound,
            "rsqrt_range": list(self.rsqrt_range) if self.rsqrt_range is not None else None,
            "overrides": [o.to_obj() for o in self.overrides],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_obj(), indent=2)

    @classmethod
    def from_obj(cls, obj) -> "Policy":
        if not isinstance(obj, dict):
            raise PolicyError(f"a policy is a JSON object, got {type(obj).__name__}")
        known = {"float16", "bfloat16", "float32", "float64", "integer", "overrides", "comment", "comparison_bound", "rsqrt_range"}
        unknown = set(obj) - known
        if unknown:
            raise PolicyError(f"unknown policy keys {sorted(unknown)}; known: {sorted(known)}")
        low = RingSpec.parse(obj.get("float16", str(FXP32())))
        high = RingSpec.parse(obj.get("float32", str(FXP64())))
        bf16 = RingSpec.parse(obj["bfloat16"]) if "bfloat16" in obj else None
        f64 = RingSpec.parse(obj["float64"]) if "float64" in obj else None
        return cls(
            low=low,
            high=high,
            integer=RingSpec.parse(obj.get("integer", str(FXP64()))),
            overrides=tuple(Override.from_obj(o) for o in obj.get("overrides", [])),
            bfloat16=None if bf16 == low else bf16,
            float64=None if f64 == high else f64,
            comparison_bound=_bound(obj.get("comparison_bound", DEFAULT_COMPARISON_BOUND), "policy"),
            rsqrt_range=_range(obj.get("rsqrt_range", list(DEFAULT_RSQRT_RANGE))),
        )

    @classmethod
    def from_json(cls, text: str) -> "Policy":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise PolicyError(f"policy is not valid JSON: {e}") from None
        return cls.from_obj(obj)

    @classmethod
    def load(cls, path) -> "Policy":
        with open(path) as f:
            return cls.from_json(f.read())

    def save(self, path) -> None:
        with open(path, "w") as f:
            f.write(self.to_json() + "\n")


def default_policy() -> Policy:
    """The policy in configs/policy_default.json (f16/bf16 → FXP32[f=8], f32 → FXP64[f=18])."""
    return Policy()


def load_policy(spec) -> Policy:
    """A Policy from a Policy, ``None`` (default), a JSON file path, or a config name
    (``"default"`` → configs/policy_default.json)."""
    if spec is None:
        return default_policy()
    if isinstance(spec, Policy):
        return spec
    path = str(spec)
    if not os.path.exists(path):
        from .configs_dir import configs_dir

        candidate = os.path.join(configs_dir(), f"policy_{path}.json")
        if os.path.exists(candidate):
            path = candidate
        else:
            raise PolicyError(f"no policy file {spec!r} (nor {candidate})")
    return Policy.load(path)
