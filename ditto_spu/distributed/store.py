"""A node's store of uploaded models: its OWN weight shares, the Plan and public metadata.

One file per model id, ``<store>/<model_id>.model``, in the control channel's schema
(:mod:`.wire`: a JSON header plus raw share buffers; never pickle)::

    {"type": "stored_model", "rank": r, "meta": {...public metadata...},
     "plan": <bytes: Plan JSON>, "shares": {weight name: AShare of party r},
     "plans": {plan name: <bytes>}}   # a generation model's plans (prompt / step buckets)

It is written to ``<model_id>.model.tmp`` and renamed over the old file, so a node killed
mid-write keeps the previous upload (or none), never half of one. A node loads every
model of its store when it starts: a restarted node serves the models it had. A file
whose ``rank`` is not the node's own is refused (a store copied to the wrong node).

The store directory is the node's secret: it holds one replicated share of every weight
(two of the three additive components). Any two nodes' stores together reveal the
weights; keep each on its own host, readable by the node's user only (created 0700).
"""

from __future__ import annotations

import dataclasses
import os
import re

from ..errors import DittoError
from ..plan import Plan
from .wire import WireError, decode, encode

MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_SUFFIX = ".model"


class StoreError(DittoError):
    """A model store that cannot be read or written (the message names the file)."""


def check_model_id(model_id) -> str:
    if not isinstance(model_id, str) or not MODEL_ID.match(model_id):
        raise DittoError(
            f"model id {model_id!r} is not valid: 1-64 characters, letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return model_id


def default_store_dir(rank: int) -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "ditto-spu", f"node{rank}")


@dataclasses.dataclass
class StoredModel:
    """One uploaded model as node ``rank`` holds it."""

    model_id: str
    rank: int
    meta: dict  # public metadata (what clients fetch)
    plan: Plan
    plan_bytes: bytes
    shares: dict  # weight name -> this node's AShare
    plans: dict = dataclasses.field(default_factory=dict)  # a generation model's plans: name -> Plan
    plans_bytes: dict = dataclasses.field(default_factory=dict)  # name -> serialized Plan

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.shares.values())


class ModelStore:
    """The models of node ``rank`` under directory ``root``."""

    def __init__(self, root: str, rank: int):
        self.root = os.path.abspath(root)
        self.rank = rank
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(f"node {rank}: cannot create its model store {self.root}: {e}") from None

    def path(self, model_id: str) -> str:
        return os.path.join(self.root, check_model_id(model_id) + _SUFFIX)

    def save(self, model: StoredModel) -> None:
        if model.rank != self.rank:
            raise StoreError(f"node {self.rank} was asked to store party {model.rank}'s shares")
        data = encode({"type": "stored_model", "rank": model.rank, "meta": model.meta,
                       "plan": model.plan_bytes, "shares": model.shares, "plans": model.plans_bytes})
        path = self.path(model.model_id)
        tmp = path + ".tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            raise StoreError(f"node {self.rank}: cannot write {path}: {e}") from None

    def load(self, model_id: str) -> StoredModel:
        path = self.path(model_id)
        try:
            with open(path, "rb") as f:
                msg = decode(f.read(), {"stored_model"})
        except OSError as e:
            raise StoreError(f"node {self.rank}: cannot read {path}: {e}") from None
        except WireError as e:
            raise StoreError(f"node {self.rank}: {path} is damaged: {e}") from None
        if msg.get("rank") != self.rank:
            raise StoreError(
                f"node {self.rank}: {path} holds party {msg.get('rank')}'s shares, not this node's; "
                "was the store copied from another node? Upload the model again"
            )
        meta, shares = msg.get("meta"), msg.get("shares")
        if not isinstance(meta, dict) or not isinstance(shares, dict) or not isinstance(msg.get("plan"), bytes):
            raise StoreError(f"node {self.rank}: {path} lacks meta, plan or shares")
        plans_bytes = msg.get("plans") or {}
        if not isinstance(plans_bytes, dict) or not all(isinstance(b, bytes) for b in plans_bytes.values()):
            raise StoreError(f"node {self.rank}: {path} has malformed plans")
        return StoredModel(model_id, self.rank, meta, Plan.from_bytes(msg["plan"]), msg["plan"], shares,
                           {name: Plan.from_bytes(b) for name, b in plans_bytes.items()}, plans_bytes)

    def model_ids(self) -> list:
        return sorted(
            name[: -len(_SUFFIX)] for name in os.listdir(self.root)
            if name.endswith(_SUFFIX) and MODEL_ID.match(name[: -len(_SUFFIX)])
        )
