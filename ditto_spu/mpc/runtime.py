"""PartyRuntime: one party's executor of a Plan.

Per party: one SPU ``Runtime`` per RingSpec in use, all over the party's single link
(SPU allows several runtimes on one link when every party calls them in the same
order); a counted view of the same link for our kernels; pairwise PRG seeds set up once
per session. Variables have global names and live in the SPU runtime of their ring; a
kernel step reads its input share out of one runtime and writes its output into
another. The simulator and the node processes both use this class unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

from .. import native
from ..errors import DittoError, PartyError, PlanError
from ..kernels.base import CommStats, CountedLink, PartyContext
from ..kernels.casts import run_cast
from ..kernels.registry import find_call_kernel
from ..plan import KernelCall, KernelStep, Plan, Segment
from ..rings import RingSpec
from ..shares import AShare, is_fixed_point
from ..spu_config import SpuOptions
from .profile_log import ProfileLog

_RUN_IDS = itertools.count()
_SEGMENT_FLOAT = {"float16": "float32", "bfloat16": "float32"}


@dataclasses.dataclass
class StepStats:
    """What one step cost one party."""

    name: str
    kind: str  # "segment" or the kernel's name
    ring: str  # ring of a segment, "SRC->DST" for a cast
    wall_s: float
    bytes_sent: int | None  # None: not measured (SPU profiling off)
    bytes_received: int | None
    rounds: int | None  # kernel rounds; for SPU segments: send actions (an upper bound on rounds)
    elements: int = 0
    ops: list = dataclasses.field(default_factory=list)  # per-op profile of a segment

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return d


def check_party_inputs(plan: Plan, inputs: dict, rank: int) -> None:
    """Raise PlanError unless ``inputs`` holds every input share ``plan`` reads, each in the
    ring and shape the plan declares (checked before any party talks to a peer)."""
    for binding in plan.inputs:
        if binding.name not in inputs:
            raise PlanError(f"party {rank}: missing input {binding.name!r}")
        share = inputs[binding.name]
        if share.ring != binding.info.ring or share.shape != binding.info.shape:
            raise PlanError(
                f"party {rank}: input {binding.name!r} is {share.ring} {share.shape}, "
                f"the plan expects {binding.info.ring} {binding.info.shape}"
            )


class PartyRuntime:
    """Runs Plans for one party over one link (``libspu.link.Context``)."""

    def __init__(self, link, *, options: SpuOptions | None = None, checked: bool = False):
        from ..kernels.prg import PairwisePRG

        self.rank = link.rank
        self.options = options or SpuOptions()
        self.checked = checked
        self._raw_link = link
        self.setup_stats = CommStats()
        self.link = CountedLink(link, CommStats())
        self.prg = PairwisePRG.setup(CountedLink(link, self.setup_stats))
        self.ctx = PartyContext(self.rank, self.link, self.prg, checked)
        self._runtimes: dict = {}
        self._location: dict = {}  # variable name -> RingSpec it lives in
        self._held: dict = {}  # variable name -> AShare held in Python
        self._in_spu: set = set()  # variable names present in their ring's SPU runtime
        self._profile = ProfileLog.get() if self.options.profile else None

    # ---- runtimes -----------------------------------------------------------------
    def runtime(self, ring: RingSpec):
        """The SPU runtime of ``ring`` (created on first use; all parties in the same order)."""
        rt = self._runtimes.get(ring)
        if rt is None:
            from spu import api as spu_api

            native.require_for_field(ring.field)
            rt = spu_api.Runtime(self._raw_link, self.options.runtime_config(ring))
            self._runtimes[ring] = rt
        return rt

    @property
    def rings(self) -> list:
        return sorted(self._runtimes)

    # ---- variables ------------------------------------------------------------------
    # A variable lives in one ring. Its share is held in Python (``_held``) when a kernel
    # or the input binding made it, and is moved into the SPU runtime of its ring only
    # when a segment reads it (``_in_spu``); values made by segments are fetched from SPU
    # when a kernel needs them. So values that only kernels touch never pay SPU's
    # protobuf round trip.
    def set_share(self, name: str, share: AShare) -> None:
        """Hold this party's share of ``name`` (ring taken from the share). The very share
        already held (a weight kept between runs) stays where it is, in SPU too."""
        if not isinstance(share, AShare):
            raise PlanError(f"party {self.rank}: value for {name!r} is not an AShare")
        if self._held.get(name) is share and self._location.get(name) == share.ring:
            return
        self.delete(name)
        self._held[name] = share
        self._location[name] = share.ring

    def get_share(self, name: str, ring: RingSpec | None = None) -> AShare:
        """This party's share of ``name`` (PlanError naming it if it does not exist)."""
        where = self._location.get(name)
        if where is None:
            raise PlanError(
                f"party {self.rank}: variable {name!r} does not exist (known: "
                f"{sorted(self._location)[:20]})"
            )
        if ring is not None and ring != where:
            raise PlanError(f"party {self.rank}: variable {name!r} lives in {where}, not in {ring}")
        share = self._held.get(name)
        if share is None:
            raw = self._runtimes[where].get_var(name)
            share = AShare.from_libspu(raw, where, where=f"party {self.rank} variable {name!r}")
            self._held[name] = share
        return share

    def _push_to_spu(self, name: str) -> None:
        if name not in self._in_spu:
            share = self._held[name]
            if share.dtype in _SEGMENT_FLOAT:
                # Emitted segments declare 16-bit floats as f32 (SPU has no secret bf16 and
                # fails on f16 converts); the share must carry the type the segment
                # declares, or SPU's dtype checks trip on mixed operands.
                share = dataclasses.replace(share, dtype=_SEGMENT_FLOAT[share.dtype])
            self.runtime(self._location[name]).set_var(name, share.to_libspu())
            self._in_spu.add(name)

    def delete(self, name: str) -> None:
        ring = self._location.pop(name, None)
        self._held.pop(name, None)
        if name in self._in_spu:
            self._in_spu.discard(name)
            self._runtimes[ring].del_var(name)

    def has(self, name: str) -> bool:
        return name in self._location

    # ---- execution ----------------------------------------------------------------------
    def run(self, plan: Plan, inputs: dict, *, free_dead: bool = True, keep=frozenset()) -> tuple[dict, list]:
        """Run ``plan`` with this party's input shares; return (output shares, step stats).

        Variables are freed after their last use (``free_dead``), except the inputs named in
        ``keep``: a runtime that serves several runs keeps them (weights loaded once)."""
        check_party_inputs(plan, inputs, self.rank)
        for binding in plan.inputs:
            self.set_share(binding.name, inputs[binding.name])
        # Create every runtime up front, in ring order, so all parties agree.
        for ring in plan.rings:
            self.runtime(ring)
        dead = plan.last_uses() if free_dead else {}
        stats = []
        for index, step in enumerate(plan.steps):
            try:
                if isinstance(step, Segment):
                    stats.append(self._run_segment(step))
                elif isinstance(step, KernelStep):
                    stats.append(self._run_kernel(step, plan.variables[step.dst].dtype))
                elif isinstance(step, KernelCall):
                    stats.append(self._run_call(step, plan))
                else:
                    raise PlanError(f"unknown step type {type(step).__name__}")
            except DittoError as e:
                raise PartyError(self.rank, f"{index}:{step.name}", e) from e
            except Exception as e:  # SPU raises RuntimeError with a C++ trace
                raise PartyError(self.rank, f"{index}:{step.name}", _first_line(e)) from e
            for name in dead.get(index, ()):
                if name not in keep:
                    self.delete(name)
        outputs = {b.name: self.get_share(b.name, b.info.ring) for b in plan.outputs}
        return outputs, stats

    def _run_segment(self, step: Segment) -> StepStats:
        from spu import libspu

        for name in step.input_names:
            if self._location.get(name) != step.ring:
                raise PlanError(
                    f"party {self.rank}: segment {step.name!r} needs {name!r} in {step.ring}, "
                    f"it is {'missing' if name not in self._location else self._location[name]}"
                )
            self._push_to_spu(name)
        run_name = f"{step.name}#{next(_RUN_IDS)}@P{self.rank}"
        exe = libspu.Executable(run_name, list(step.input_names), list(step.output_names), step.code)
        t0 = time.perf_counter()
        self._runtimes[step.ring].run(exe)
        wall = time.perf_counter() - t0
        for name in step.output_names:
            self._held.pop(name, None)
            self._location[name] = step.ring
            self._in_spu.add(name)
        if self._profile is None:  # profiling off: no counts (totals over them raise)
            return StepStats(step.name, "segment", str(step.ring), wall, None, None, None)
        profile = self._profile.take(run_name)
        if profile is None:
            raise DittoError(
                f"party {self.rank}: SPU logged no profile for segment {step.name!r} within 5 s, so its "
                "bytes and messages cannot be counted (is something else configuring libspu's logging?)"
            )
        return StepStats(
            step.name,
            "segment",
            str(step.ring),
            wall,
            profile.bytes_sent,
            profile.bytes_received,
            profile.send_actions,
            ops=[dataclasses.asdict(o) for o in profile.ops],
        )

    def _run_kernel(self, step: KernelStep, dst_dtype: str) -> StepStats:
        share = self.get_share(step.src, step.src_ring)
        if step.kernel != "cast":
            raise PlanError(f"party {self.rank}: unknown kernel {step.kernel!r} in step {step.name!r}")
        if is_fixed_point(share.dtype) != is_fixed_point(dst_dtype):
            raise PlanError(
                f"party {self.rank}: step {step.name!r} casts {share.dtype} to {dst_dtype}; a ring "
                f"cast keeps the number kind (fixed point or integer)"
            )
        result = run_cast(self.ctx, share, step.dst_ring)
        # The logical dtype (e.g. float32 -> float16) is what the next segment declares.
        self.set_share(step.dst, dataclasses.replace(result.share, dtype=dst_dtype))
        return StepStats(
            step.name,
            _kernel_name(share.ring, step.dst_ring),
            f"{share.ring}->{step.dst_ring}",
            result.seconds,
            result.comm.bytes_sent,
            result.comm.bytes_received,
            result.comm.rounds,
            elements=share.numel,
        )


    def _run_call(self, step: KernelCall, plan: Plan) -> StepStats:
        kernel = find_call_kernel(step.kernel)
        shares = [self.get_share(name, step.ring_of_input(i)) for i, name in enumerate(step.input_names)]
        before = self.link.stats.snapshot()
        t0 = time.perf_counter()
        outputs = kernel(self.ctx, shares, step.params)
        wall = time.perf_counter() - t0
        comm = self.link.stats.since(before)
        if len(outputs) != len(step.output_names):
            raise PlanError(
                f"party {self.rank}: kernel {step.kernel!r} returned {len(outputs)} values for "
                f"{len(step.output_names)} outputs in step {step.name!r}"
            )
        elements = 0
        for name, share in zip(step.output_names, outputs):
            info = plan.variables[name]
            if share.shape != info.shape:
                raise PlanError(
                    f"party {self.rank}: kernel {step.kernel!r} made {name!r} with shape "
                    f"{share.shape}, the plan says {info.shape}"
                )
            self.set_share(name, dataclasses.replace(share, dtype=info.dtype))
            elements += share.numel
        return StepStats(
            step.name,
            step.kernel,
            str(step.ring),
            wall,
            comm.bytes_sent,
            comm.bytes_received,
            comm.rounds,
            elements=elements,
        )


def _kernel_name(src: RingSpec, dst: RingSpec) -> str:
    from ..kernels.casts import find_cast_kernel

    return find_cast_kernel(src, dst).name


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and line not in ("what:",):
            return line
    return type(e).__name__
