"""Plan: what a secure computation does, step by step, independent of how it is run.

A :class:`Plan` is an ordered list of steps over globally named variables:

* :class:`Segment` — a single-ring program compiled by stock ``spu.compile``; SPU runs it
  on the runtime of ``ring``, reading ``input_names`` and writing ``output_names``.
* :class:`KernelStep` — a registered protocol kernel (ring casts today) that reads one
  variable and writes another, possibly in another ring.

plus the bindings: which variables are inputs (their ring, shape, dtype and owner) and
which are outputs (and who receives them). A plan knows nothing of threads or sockets;
it serializes to bytes so that nodes can receive it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Union

from .errors import PlanError
from .rings import RingSpec

PLAN_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class VarInfo:
    """A variable's ring, shape and logical dtype (float32, float16, int32, ...)."""

    ring: RingSpec
    shape: tuple
    dtype: str

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclasses.dataclass(frozen=True)
class Segment:
    """A single-ring SPU program: ``code`` is the output of ``spu.compile``."""

    name: str
    ring: RingSpec
    code: bytes
    input_names: tuple
    output_names: tuple
    source: str = ""  # the StableHLO text it was compiled from (for inspection)

    def __post_init__(self):
        object.__setattr__(self, "input_names", tuple(self.input_names))
        object.__setattr__(self, "output_names", tuple(self.output_names))

    @property
    def reads(self) -> tuple:
        return self.input_names

    @property
    def writes(self) -> tuple:
        return self.output_names


@dataclasses.dataclass(frozen=True)
class KernelStep:
    """Run registered kernel ``kernel`` on variable ``src`` (in ``src_ring``) into ``dst``."""

    name: str
    kernel: str
    src: str
    dst: str
    src_ring: RingSpec
    dst_ring: RingSpec

    @property
    def reads(self) -> tuple:
        return (self.src,)

    @property
    def writes(self) -> tuple:
        return (self.dst,)


@dataclasses.dataclass(frozen=True)
class KernelCall:
    """Run registered n-ary kernel ``kernel`` (e.g. ``matmul_fxp32``).

    Reads ``input_names`` and writes ``output_names`` in ``ring``; ``params`` is a
    JSON-able dict the kernel interprets (e.g. dot_general dimension numbers). A kernel
    that changes rings (the softmax's exp: FXP32 in, FXP64 out) names its inputs' rings
    in ``input_rings``; empty means every input lives in ``ring``.
    """

    name: str
    kernel: str
    input_names: tuple
    output_names: tuple
    ring: RingSpec
    params: dict = dataclasses.field(default_factory=dict)
    input_rings: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "input_names", tuple(self.input_names))
        object.__setattr__(self, "output_names", tuple(self.output_names))
        object.__setattr__(self, "input_rings", tuple(self.input_rings))
        if self.input_rings and len(self.input_rings) != len(self.input_names):
            raise PlanError(
                f"call {self.name!r}: {len(self.input_rings)} input rings for {len(self.input_names)} inputs"
            )

    def ring_of_input(self, index: int) -> RingSpec:
        """The ring input ``index`` is read in."""
        return self.input_rings[index] if self.input_rings else self.ring

    @property
    def reads(self) -> tuple:
        return self.input_names

    @property
    def writes(self) -> tuple:
        return self.output_names


Step = Union[Segment, KernelStep, KernelCall]


@dataclasses.dataclass(frozen=True)
class InputBinding:
    """A plan input: secret-shared into ``info.ring`` by ``owner`` (a free-form label)."""

    name: str
    info: VarInfo
    owner: str = "client"


@dataclasses.dataclass(frozen=True)
class OutputBinding:
    """A plan output, reconstructed only by ``receiver``."""

    name: str
    info: VarInfo
    receiver: str = "client"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Ordered steps plus input/output bindings and every variable's VarInfo."""

    steps: tuple
    inputs: tuple
    outputs: tuple
    variables: dict  # name -> VarInfo

    def __post_init__(self):
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    # ---- queries ---------------------------------------------------------------------
    @property
    def rings(self) -> list[RingSpec]:
        """Every ring some segment runs in (each needs an SPU runtime per party)."""
        return sorted({s.ring for s in self.steps if isinstance(s, Segment)})

    @property
    def segments(self) -> list[Segment]:
        return [s for s in self.steps if isinstance(s, Segment)]

    @property
    def kernel_steps(self) -> list[KernelStep]:
        """The ring casts."""
        return [s for s in self.steps if isinstance(s, KernelStep)]

    @property
    def kernel_calls(self) -> list[KernelCall]:
        return [s for s in self.steps if isinstance(s, KernelCall)]

    def last_uses(self) -> dict:
        """step index -> names whose last read is that step (and that are not outputs)."""
        outputs = {o.name for o in self.outputs}
        last = {}
        for i, step in enumerate(self.steps):
            for name in step.reads:
                last[name] = i
        by_step: dict = {}
        for name, i in last.items():
            if name not in outputs:
                by_step.setdefault(i, []).append(name)
        return by_step

    def validate(self) -> "Plan":
        """Check that every read is defined before and lives in the reading step's ring."""
        defined = {}
        for b in self.inputs:
            if b.name in defined:
                raise PlanError(f"input {b.name!r} is bound twice")
            defined[b.name] = b.info
        for i, step in enumerate(self.steps):
            where = f"step {i} ({type(step).__name__} {step.name!r})"
            for index, name in enumerate(step.reads):
                if name not in defined:
                    raise PlanError(
                        f"{where} reads variable {name!r}, which no input or earlier step defines"
                    )
                if isinstance(step, KernelStep):
                    ring = step.src_ring
                elif isinstance(step, KernelCall):
                    ring = step.ring_of_input(index)
                else:
                    ring = step.ring
                if defined[name].ring != ring:
                    raise PlanError(
                        f"{where} reads {name!r} in {ring}, but it lives in {defined[name].ring}; "
                        f"insert a cast"
                    )
            for name in step.writes:
                if name not in self.variables:
                    raise PlanError(f"{where} writes {name!r}, which has no VarInfo in the plan")
                ring = step.dst_ring if isinstance(step, KernelStep) else step.ring
                if self.variables[name].ring != ring:
                    raise PlanError(
                        f"{where} writes {name!r} in {ring}, but the plan says it lives in "
                        f"{self.variables[name].ring}"
                    )
                defined[name] = self.variables[name]
        for o in self.outputs:
            if o.name not in defined:
                raise PlanError(f"output {o.name!r} is never computed")
        return self

    # ---- serialization -----------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(_plan_to_obj(self))

    def to_bytes(self) -> bytes:
        return self.to_json().encode()

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError(f"plan is not valid JSON: {e}") from None
        return _plan_from_obj(obj)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Plan":
        return cls.from_json(data.decode())


def _info_obj(info: VarInfo) -> dict:
    return {"ring": str(info.ring), "shape": list(info.shape), "dtype": info.dtype}


def _info_from(obj) -> VarInfo:
    return VarInfo(RingSpec.parse(obj["ring"]), tuple(obj["shape"]), obj["dtype"])


def _plan_to_obj(plan: Plan) -> dict:
    steps: list[dict] = []
    for s in plan.steps:
        if isinstance(s, Segment):
            steps.append(
                {
                    "type": "segment",
                    "name": s.name,
                    "ring": str(s.ring),
                    "code": base64.b64encode(s.code).decode(),
                    "inputs": list(s.input_names),
                    "outputs": list(s.output_names),
                    "source": s.source,
                }
            )
        elif isinstance(s, KernelCall):
            steps.append(
                {
                    "type": "call",
                    "name": s.name,
                    "kernel": s.kernel,
                    "inputs": list(s.input_names),
                    "outputs": list(s.output_names),
                    "ring": str(s.ring),
                    "params": s.params,
                    "input_rings": [str(r) for r in s.input_rings],
                }
            )
        else:
            steps.append(
                {
                    "type": "kernel",
                    "name": s.name,
                    "kernel": s.kernel,
                    "src": s.src,
                    "dst": s.dst,
                    "src_ring": str(s.src_ring),
                    "dst_ring": str(s.dst_ring),
                }
            )
    return {
        "format": PLAN_FORMAT_VERSION,
        "steps": steps,
        "inputs": [{"name": b.name, "owner": b.owner, **_info_obj(b.info)} for b in plan.inputs],
        "outputs": [
            {"name": b.name, "receiver": b.receiver, **_info_obj(b.info)} for b in plan.outputs
        ],
        "variables": {k: _info_obj(v) for k, v in plan.variables.items()},
    }


def _plan_from_obj(obj) -> Plan:
    if not isinstance(obj, dict) or obj.get("format") != PLAN_FORMAT_VERSION:
        raise PlanError(
            f"unsupported plan format {obj.get('format') if isinstance(obj, dict) else obj!r}; "
            f"this ditto-spu reads format {PLAN_FORMAT_VERSION}"
        )
    steps: list[Step] = []
    for s in obj["steps"]:
        if s["type"] == "segment":
            steps.append(
                Segment(
                    s["name"],
                    RingSpec.parse(s["ring"]),
                    base64.b64decode(s["code"]),
                    tuple(s["inputs"]),
                    tuple(s["outputs"]),
                    s.get("source", ""),
                )
            )
        elif s["type"] == "kernel":
            steps.append(
                KernelStep(
                    s["name"],
                    s["kernel"],
                    s["src"],
                    s["dst"],
                    RingSpec.parse(s["src_ring"]),
                    RingSpec.parse(s["dst_ring"]),
                )
            )
        elif s["type"] == "call":
            steps.append(
                KernelCall(
                    s["name"], s["kernel"], tuple(s["inputs"]), tuple(s["outputs"]),
                    RingSpec.parse(s["ring"]), dict(s.get("params", {})),
                    tuple(RingSpec.parse(r) for r in s.get("input_rings", ())),
                )
            )
        else:
            raise PlanError(f"unknown step type {s['type']!r}")
    inputs = [InputBinding(b["name"], _info_from(b), b.get("owner", "client")) for b in obj["inputs"]]
    outputs = [
        OutputBinding(b["name"], _info_from(b), b.get("receiver", "client")) for b in obj["outputs"]
    ]
    variables = {k: _info_from(v) for k, v in obj["variables"].items()}
    return Plan(tuple(steps), tuple(inputs), tuple(outputs), variables).validate()
