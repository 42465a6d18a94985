"""A node's multi-step sessions: its OWN shares that one run produces for the next.

A client opens a session against an uploaded model (``open_session``); each later
``query`` with a ``session`` part names

* ``feed`` ``{plan input: session variable}`` — inputs the node takes from the session
  instead of the message. A variable with fewer slots (axis 1) than the input's binding
  is padded with zero shares first, at the node (a valid sharing of 0; local), and kept
  padded: a key/value cache moving up to a bigger bucket;
* ``keep`` ``{plan output: {"var", "slot", "count"}}`` — outputs the node keeps instead of
  sending them: the first ``count`` positions (axis 1) of the output are written into the
  variable at slots ``[slot, slot + count)`` (:func:`~ditto_spu.shares.write_slots`, on
  this node's own share components; a new variable starts as zero shares). Kept outputs
  never leave the node.

Nothing here is ever reconstructed or sent: the session holds one party's shares only.

Bounds: a session lives ``ttl_s`` seconds after its last use (the client's choice, at most
:data:`MAX_TTL_S`), then it is dropped, as on ``close_session``; it holds at most
``max_bytes`` of shares (:data:`DEFAULT_MAX_BYTES` per session, checked before a run: a
step that would exceed it is refused) and a node holds at most :data:`MAX_SESSIONS`
sessions, so a node's session memory is bounded by their product. A node that restarts
(after a failed query) loses its sessions; the client's next step is refused with a
clear error.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from typing import Callable

import numpy as np

from ..errors import DittoError, PlanError
from ..shares import AShare, is_fixed_point, pad_slots, write_slots

DEFAULT_TTL_S = 300.0
MAX_TTL_S = 3600.0
DEFAULT_MAX_BYTES = 256 << 20
MAX_SESSIONS = 16
SESSION_ID = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")
VAR_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class SessionError(DittoError):
    """A session request that cannot be served (the message says why)."""


def check_session_id(session_id) -> str:
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise SessionError(f"session id {session_id!r} is not valid: 8-64 letters, digits, '_' or '-'")
    return session_id


@dataclasses.dataclass
class Session:
    session_id: str
    model_id: str
    upload_id: str
    ttl_s: float
    max_bytes: int
    last_used: float
    vars: dict = dataclasses.field(default_factory=dict)  # name -> this node's AShare
    step: int = 0  # the next step the node accepts
    busy: bool = False  # a run is using it: it does not expire meanwhile

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.vars.values())


@dataclasses.dataclass
class Prepared:
    """A session step checked before its run: the inputs it feeds, what it keeps."""

    session: Session
    inputs: dict  # plan input -> AShare (padded where its binding has more slots)
    padded: dict  # session variable -> padded AShare (stored when the step commits)
    keep: dict  # plan output -> (var, slot, count)


class SessionStore:
    """The sessions of node ``rank`` (thread-safe)."""

    def __init__(self, rank: int, *, max_sessions: int = MAX_SESSIONS, max_bytes: int = DEFAULT_MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic):
        self.rank = rank
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self.clock = clock
        self._sessions: dict = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def open(self, session_id, model_id: str, upload_id: str, ttl_s=None) -> Session:
        check_session_id(session_id)
        ttl = DEFAULT_TTL_S if ttl_s is None else ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL_S:
            raise SessionError(f"node {self.rank}: ttl_s must be a number in (0, {MAX_TTL_S:.0f}] seconds, got {ttl_s!r}")
        self.expire()
        with self._lock:
            if session_id in self._sessions:
                raise SessionError(f"node {self.rank}: session {session_id!r} is already open")
            if len(self._sessions) >= self.max_sessions:
                raise SessionError(
                    f"node {self.rank} holds {len(self._sessions)} sessions, its limit; close one or wait until "
                    "one expires"
                )
            session = Session(session_id, model_id, upload_id, float(ttl), self.max_bytes, self.clock())
            self._sessions[session_id] = session
        return session

    def close(self, session_id) -> int:
        """Drop a session; the bytes of shares it held."""
        check_session_id(session_id)
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise SessionError(f"node {self.rank} has no session {session_id!r} (closed, expired, or the node restarted)")
        return session.nbytes

    def expire(self) -> list:
        """Drop every session unused for its ttl; [(session id, bytes freed)]."""
        now = self.clock()
        with self._lock:
            gone = [s for s in self._sessions.values() if not s.busy and now - s.last_used > s.ttl_s]
            for s in gone:
                del self._sessions[s.session_id]
        return [(s.session_id, s.nbytes) for s in gone]

    def get(self, session_id) -> Session:
        check_session_id(session_id)
        self.expire()
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise SessionError(
                f"node {self.rank} has no session {session_id!r}: it was closed, it expired (no use for its "
                "ttl_s), or the node restarted; open a new one"
            )
        return session

    # ---- one step ---------------------------------------------------------------------------
    def prepare(self, spec: dict, model_id: str, upload_id: str, plan, weights) -> Prepared:
        """Check a query's ``session`` part against the session and the plan (before any
        run): the step is the next one, ``feed`` names session variables for non-weight
        plan inputs (in their binding's ring and shape, up to padding of axis 1),
        ``keep`` names plan outputs and valid slots, and the session stays within its
        memory bound afterwards. Marks the session busy (:meth:`release` or :meth:`commit`)."""
        if not isinstance(spec, dict) or not set(spec) <= {"id", "step", "plan", "feed", "keep"}:
            raise SessionError(f"node {self.rank}: a query's session part is {{id, step, plan, feed, keep}}")
        session = self.get(spec.get("id"))
        if session.model_id != model_id or session.upload_id != upload_id:
            raise SessionError(
                f"node {self.rank}: session {session.session_id!r} belongs to model {session.model_id!r} "
                f"(upload {session.upload_id}), not {model_id!r} (upload {upload_id})"
            )
        if spec.get("step") != session.step:
            raise SessionError(
                f"node {self.rank}: session {session.session_id!r} expects step {session.step}, got "
                f"{spec.get('step')!r} (a step out of order)"
            )
        feed, keep = spec.get("feed") or {}, spec.get("keep") or {}
        if not isinstance(feed, dict) or not isinstance(keep, dict):
            raise SessionError(f"node {self.rank}: session feed and keep are objects")
        bindings = {b.name: b.info for b in plan.inputs}
        outputs = {b.name: b.info for b in plan.outputs}
        shapes = {name: (s.shape, s.ring) for name, s in session.vars.items()}
        inputs, padded = {}, {}
        for name, var in feed.items():
            if name not in bindings or name in weights:
                raise SessionError(f"node {self.rank}: feed names {name!r}, not a client-side input of the plan")
            if var not in session.vars:
                raise SessionError(f"node {self.rank}: session {session.session_id!r} holds no variable {var!r}")
            share, info = session.vars[var], bindings[name]
            if share.ring != info.ring or is_fixed_point(share.dtype) != is_fixed_point(info.dtype) or \
                    len(share.shape) != len(info.shape) or share.shape[:1] + share.shape[2:] != info.shape[:1] + info.shape[2:] \
                    or share.shape[1] > info.shape[1]:
                raise SessionError(
                    f"node {self.rank}: session variable {var!r} is {share.ring} {share.shape}, plan input {name!r} "
                    f"takes {info.ring} {info.shape}"
                )
            if share.shape[1] < info.shape[1]:
                share = padded[var] = pad_slots(share, info.shape[1])
                shapes[var] = (share.shape, share.ring)
            inputs[name] = AShare(share.ring, share.shape, info.dtype, share.components)
        kept: dict = {}
        for name, target in keep.items():
            if name not in outputs:
                raise SessionError(f"node {self.rank}: keep names {name!r}, not an output of the plan")
            if not isinstance(target, dict) or set(target) != {"var", "slot", "count"}:
                raise SessionError(f"node {self.rank}: keep[{name!r}] is {{var, slot, count}}")
            var, slot, count = target["var"], target["slot"], target["count"]
            info = outputs[name]
            if not isinstance(var, str) or not VAR_NAME.match(var):
                raise SessionError(f"node {self.rank}: session variable name {var!r} is not valid")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (slot, count)) or len(info.shape) < 2 \
                    or not (0 <= slot and 0 <= count <= info.shape[1]):
                raise SessionError(f"node {self.rank}: keep[{name!r}]: slot {slot!r} / count {count!r} do not fit "
                                   f"output shape {info.shape}")
            if var in shapes:
                shape, ring = shapes[var]
                if ring != info.ring or shape[:1] + shape[2:] != info.shape[:1] + info.shape[2:]:
                    raise SessionError(f"node {self.rank}: output {name!r} ({info.ring} {info.shape}) does not fit "
                                       f"session variable {var!r} ({ring} {shape})")
                slots = max(shape[1], slot + count)
            else:
                slots = max(info.shape[1], slot + count)
            shapes[var] = ((info.shape[0], slots) + tuple(info.shape[2:]), info.ring)
            kept[name] = (var, slot, count)
        after = sum(2 * math.prod(shape) * np.dtype(ring.dtype).itemsize for shape, ring in shapes.values())
        if after > session.max_bytes:
            raise SessionError(
                f"node {self.rank}: session {session.session_id!r} would hold {after / 1e6:.1f} MB of shares, over "
                f"its bound of {session.max_bytes / 1e6:.1f} MB"
            )
        with self._lock:
            if session.busy:
                raise SessionError(f"node {self.rank}: session {session.session_id!r} is running another step")
            session.busy = True
        return Prepared(session, inputs, padded, kept)

    def commit(self, prepared: Prepared, outputs: dict) -> dict:
        """After the run: store the padded variables and write the kept outputs into
        their slots (this node's own shares); returns the outputs to send (the others)."""
        session = prepared.session
        try:
            new_vars = dict(session.vars)
            new_vars.update(prepared.padded)
            for name, (var, slot, count) in prepared.keep.items():
                share = outputs[name]
                if var not in new_vars:
                    slots = max(share.shape[1], slot + count)
                    shape = (share.shape[0], slots) + tuple(share.shape[2:])
                    new_vars[var] = AShare(share.ring, shape, share.dtype, np.zeros(shape + (2,), share.ring.dtype))
                elif new_vars[var].shape[1] < slot + count:
                    new_vars[var] = pad_slots(new_vars[var], slot + count)
                try:
                    new_vars[var] = write_slots(new_vars[var], share, slot, count)
                except PlanError as e:
                    raise SessionError(f"node {self.rank}: keeping {name!r} in {var!r}: {e}") from None
            session.vars = new_vars
            session.step += 1
            return {name: share for name, share in outputs.items() if name not in prepared.keep}
        finally:
            self.release(prepared)

    def release(self, prepared: Prepared) -> None:
        with self._lock:
            prepared.session.busy = False
            prepared.session.last_used = self.clock()
