"""Secure inference as a service: the model owner uploads once, clients query many times.

Roles (docs/deployment.md):

* **model owner** — :func:`upload_model`: compiles the model under a mode to a Plan (at
  upload, never per query), secret-shares ONLY the weights (the plan inputs that come
  from the parameters), and sends node r its own weight shares, the Plan and the public
  metadata under a model id. Each node stores its shares in memory and on disk
  (:mod:`.store`). Needs the owner's key (config ``owner_key_env``).
* **client** — :class:`Client` / :func:`query`: fetches a model id's public metadata from
  the nodes (mode, sequence length, tokenizer name, vocabulary, input and output
  bindings; the owner's process is not needed), tokenises, shares only its own inputs
  (the token one-hot and the attention mask), sends node r its shares, receives the
  three output shares and alone reconstructs them. Needs the client key
  (``client_key_env``); it cannot upload.

Messages (all in :mod:`.wire`'s schema; nothing is pickled):

* owner → node r: ``upload_begin {model_id, rank, digest, meta, plan, weights}``,
  node: ``ready``; ``upload_chunk {pieces: [{name, start, share}]}`` × n (each at most
  :data:`CHUNK_BYTES` of shares; a large weight is split along its first axis),
  ``upload_commit``; node: ``stored`` or ``error``.
* client → node r: ``model_info {model_id}`` → ``model_info {meta}``; then
  ``query {model_id, upload_id, query_id, rank, digest, inputs, session: null}`` →
  ``admitted`` (the node's turn; nodes are taken in rank order so queries of several
  clients never wait on each other) → client ``start`` to all three → ``result
  {outputs, steps, wall_s, ...}`` → client ``release``. ``abort`` at any point.
"""

from __future__ import annotations

import dataclasses
import secrets
import time

import numpy as np

from ..errors import DittoError, PartyError
from ..shares import reconstruct, share_plan_inputs
from .config import DeploymentConfig
from .driver import _abort, _connect, run_admitted, stats_of
from .store import check_model_id
from .wire import WireError, recv_message, send_message

CHUNK_BYTES = 64 << 20  # shares per upload_chunk message
_SMALL = 1 << 20
PROTOCOL = 1  # the metadata's "protocol": what a client must speak to query the model


@dataclasses.dataclass
class UploadResult:
    model_id: str
    upload_id: str
    meta: dict
    compile_s: float
    share_s: float
    send_s: float
    bytes_per_node: list  # share bytes each node stores

    def summary(self) -> dict:
        return {"model_id": self.model_id, "upload_id": self.upload_id, "model": self.meta["model"],
                "mode": self.meta["mode"], "seq_len": self.meta["seq_len"], "compile_s": self.compile_s,
                "share_s": self.share_s, "send_s": self.send_s, "bytes_per_node": self.bytes_per_node,
                "weights": len(self.meta["weights"]), "task": self.meta.get("task", "infer"),
                "plans": sorted(self.meta.get("plans", {}))}


def send_upload(config: DeploymentConfig, model_id: str, meta: dict, plan_bytes: bytes, per_party: list,
                connect_timeout_s: float, extra: dict | None = None) -> list:
    """The owner's side of an upload: node r gets the metadata, the plan (and ``extra``)
    and its own weight shares ``per_party[r]``, then all three commit. Returns the share
    bytes each node stored; on any failure every node is told to abort."""
    conns = [_connect(config, rank, connect_timeout_s, role="owner") for rank in range(3)]
    try:
        for rank, conn in enumerate(conns):
            _upload_to(config, conn, rank, model_id, meta, plan_bytes, per_party[rank], extra=extra)
        stored = []
        for rank, conn in enumerate(conns):
            send_message(conn, {"type": "upload_commit"})
            stored.append(int(_reply(config, conn, rank, {"stored", "error"}, "upload")["bytes"]))
        return stored
    except BaseException:
        _abort({c: r for r, c in enumerate(conns)}, "upload failed")
        raise
    finally:
        for conn in conns:
            conn.close()


def upload_model(config: DeploymentConfig, model, mode: str = "ditto", *, seq_len: int = 32, policy=None,
                 model_id: str | None = None, model_name: str | None = None, output: str | None = None,
                 rng=None, connect_timeout_s: float = 30.0, progress=None) -> UploadResult:
    """Compile ``model`` (object or name) under ``mode`` and upload its weight shares to
    the three nodes of ``config`` under ``model_id`` (default: the model's name). Needs
    the owner's key. ``policy`` defaults to the config's."""
    import jax

    from ..frontend import compile
    from ..infer import _default_output, check_seq_len, resolve_model
    from ..models import load_mode, load_model, one_hot_ids, prepare_params, secure_forward
    from ..policy import load_policy

    step = progress or (lambda message: None)
    if isinstance(model, str):
        model_name = model_name or model
        model, mode_name, policy, _ = resolve_model(model, mode, policy)
        mode = mode_name
        step(f"loading {model_name}")
        model = load_model(model)
    model_name = model_name or type(model).__name__
    model_id = check_model_id(model_id or model_name)
    check_seq_len(model, seq_len)
    mode_obj = load_mode(mode)
    policy_obj = load_policy(policy or config.policy_object())
    output = output or _default_output(model)

    step("compiling to a mixed-ring plan")
    t0 = time.perf_counter()
    fwd = secure_forward(model, mode_obj, output=output)
    params = prepare_params(model.params, mode_obj)
    vocab = int(model.config.vocab_size)
    x = one_hot_ids(np.zeros((1, seq_len), np.int32), vocab, mode_obj.dtypes.low_dtype)
    mask = np.ones((1, seq_len), np.int32)
    program = compile(fwd, params, x, mask, policy=policy_obj)
    compile_s = time.perf_counter() - t0
    plan = program.plan
    n_params = len(jax.tree_util.tree_leaves(params))
    names = list(program.input_names)
    if len(names) != n_params + 2 or [b.name for b in plan.inputs] != names:
        raise DittoError(
            f"the compiled plan's inputs ({len(plan.inputs)}) are not the model's {n_params} parameters "
            "followed by the one-hot ids and the attention mask; cannot split owner and client inputs"
        )
    weight_names, (ids_name, mask_name) = names[:n_params], names[n_params:]
    flat = program.flatten_inputs(params, x, mask)
    upload_id = secrets.token_hex(8)
    meta = {
        "protocol": PROTOCOL,
        "model_id": model_id,
        "upload_id": upload_id,
        "model": model_name,
        "mode": mode_obj.name,
        "seq_len": seq_len,
        "vocab_size": vocab,
        "one_hot_dtype": np.dtype(mode_obj.dtypes.low_dtype).name,
        "output": output,
        "client_inputs": {"ids_one_hot": ids_name, "attention_mask": mask_name},
        "input_bindings": {
            b.name: {"ring": str(b.info.ring), "shape": list(b.info.shape), "dtype": b.info.dtype}
            for b in plan.inputs if b.name in (ids_name, mask_name)
        },
        "outputs": list(program.output_names),
        "weights": weight_names,
        "rings": [str(r) for r in plan.rings],
        "uploaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    step("secret-sharing the weights")
    t0 = time.perf_counter()
    per_party = share_plan_inputs(plan, {n: flat[n] for n in weight_names}, rng, only=weight_names)
    share_s = time.perf_counter() - t0

    step("sending each node its weight shares")
    t0 = time.perf_counter()
    plan_bytes = plan.to_bytes()
    stored = send_upload(config, model_id, meta, plan_bytes, per_party, connect_timeout_s)
    send_s = time.perf_counter() - t0
    return UploadResult(model_id, upload_id, meta, compile_s, share_s, send_s, stored)


def _reply(config, conn, rank: int, expected: set, what: str) -> dict:
    node = config.nodes[rank]
    try:
        msg = recv_message(conn, max_bytes=_SMALL, expected_types=expected | {"error"})
    except (EOFError, OSError, WireError) as e:
        raise DittoError(
            f"node {rank} ({node.id}, {node.control_address}) closed the connection during the {what} "
            f"({type(e).__name__}: {e}); is it running? (`ditto-spu node --config {config.path} --rank {rank}`)"
        ) from None
    if msg["type"] == "error":
        raise PartyError(rank, what, msg.get("message", "unknown error"))
    return msg


def _upload_to(config, conn, rank: int, model_id: str, meta: dict, plan_bytes: bytes, shares: dict,
               extra: dict | None = None) -> None:
    send_message(conn, {"type": "upload_begin", "rank": rank, "digest": config.digest, "model_id": model_id,
                        "meta": meta, "plan": plan_bytes, "weights": {n: list(s.shape) for n, s in shares.items()},
                        **(extra or {})})
    _reply(config, conn, rank, {"ready"}, "upload")
    pieces: list = []
    size = 0
    for name, share in shares.items():
        rows = share.shape[0] if share.shape else 1
        row_bytes = max(1, share.nbytes // max(rows, 1))
        step = max(1, CHUNK_BYTES // row_bytes) if share.shape else 1
        for start in range(0, rows, step):
            piece = share if not share.shape or step >= rows else dataclasses.replace(
                share, shape=(min(step, rows - start), *share.shape[1:]),
                components=share.components[start : start + step])
            pieces.append({"name": name, "start": start, "share": piece})
            size += piece.nbytes
            if size >= CHUNK_BYTES:
                send_message(conn, {"type": "upload_chunk", "pieces": pieces})
                pieces, size = [], 0
    if pieces:
        send_message(conn, {"type": "upload_chunk", "pieces": pieces})


@dataclasses.dataclass
class QueryResult:
    model_id: str
    output: np.ndarray  # the (first) output, reconstructed by the client
    outputs: dict  # every plan output by name
    tokens: int
    times: dict  # seconds: client_start, input_sharing, secure_run, reconstruction, total
    bytes_sent: list  # per node, during the secure run
    client_bytes_sent: int  # input shares the client sent (all three nodes)
    rounds: int
    stats: object = None

    def summary(self) -> dict:
        return {"model_id": self.model_id, "output_shape": list(self.output.shape), "tokens": self.tokens,
                "times_s": self.times, "bytes_sent": self.bytes_sent, "client_bytes_sent": self.client_bytes_sent,
                "rounds": self.rounds}


class Client:
    """A client of a deployment: ``Client(config).query(model_id, text)``. Keeps each
    model id's metadata after the first query (fetched from the nodes)."""

    def __init__(self, config: DeploymentConfig, *, connect_timeout_s: float = 30.0):
        self.config = config
        self.connect_timeout_s = connect_timeout_s
        self._meta: dict = {}
        self._tokenizers: dict = {}

    def model_info(self, model_id: str, rank: int = 0) -> dict:
        """The public metadata of ``model_id`` as node ``rank`` serves it."""
        check_model_id(model_id)
        with _connect(self.config, rank, self.connect_timeout_s, role="client") as conn:
            send_message(conn, {"type": "model_info", "model_id": model_id})
            meta = _reply(self.config, conn, rank, {"model_info"}, "model_info")["meta"]
        if meta.get("protocol") != PROTOCOL:
            raise DittoError(f"model {model_id!r} was uploaded for protocol {meta.get('protocol')}, this client speaks {PROTOCOL}")
        return meta

    def encode(self, meta: dict, text: str) -> tuple:
        """(inputs by plan name, number of tokens): tokenised ``text``, one-hot ids and mask."""
        from types import SimpleNamespace

        from ..models import one_hot_ids
        from ..models.tokens import tokenize

        if not isinstance(text, str) or not text.strip():
            raise DittoError(f"text must be a non-empty string, got {text!r}; give the sentence to run (--text)")
        shim = SimpleNamespace(config=SimpleNamespace(vocab_size=meta["vocab_size"]))  # word-hash models
        ids, mask = tokenize(meta["model"], shim, [text], meta["seq_len"])
        x = one_hot_ids(ids, meta["vocab_size"], np.dtype(meta["one_hot_dtype"]))
        names = meta["client_inputs"]
        return {names["ids_one_hot"]: x, names["attention_mask"]: mask}, int(mask.sum())

    def query(self, model_id: str, text: str, *, rng=None) -> QueryResult:
        t_start = time.perf_counter()
        meta = self._meta.get(model_id) or self.model_info(model_id)
        self._meta[model_id] = meta
        if meta.get("task") == "generate":
            raise DittoError(f"model {model_id!r} was uploaded for generation: use `ditto-spu generate --config ... "
                             f"--model-id {model_id}` (generation.GenerationClient), not a single query")
        inputs, tokens = self.encode(meta, text)
        conns = [_connect(self.config, rank, self.connect_timeout_s, role="client") for rank in range(3)]
        t_ready = time.perf_counter()
        try:
            per_party = _share_client_inputs(meta, inputs, rng)
            t_shared = time.perf_counter()
            query_id = secrets.token_hex(6)
            requests = [
                {"type": "query", "rank": r, "digest": self.config.digest, "model_id": model_id,
                 "upload_id": meta["upload_id"], "query_id": query_id, "inputs": per_party[r], "session": None}
                for r in range(3)
            ]
            try:
                results = run_admitted(self.config, conns, requests, "query")
            except PartyError as e:
                if "another upload" in str(e) or "no model" in str(e):
                    self._meta.pop(model_id, None)  # refetch next time
                raise
            t_run = time.perf_counter()
        finally:
            for conn in conns:
                conn.close()
        outputs = {name: reconstruct([results[r]["outputs"][name] for r in range(3)]) for name in meta["outputs"]}
        t_end = time.perf_counter()
        stats = stats_of(results, t_run - t_shared)
        times = {
            "client_start": t_ready - t_start,
            "input_sharing": t_shared - t_ready,
            "secure_run": t_run - t_shared,
            "reconstruction": t_end - t_run,
            "total": t_end - t_start,
            "node_wall": max(r["wall_s"] for r in results),
            "link_setup": max(r["link_setup_s"] for r in results),
        }
        client_bytes = sum(s.nbytes for p in per_party for s in p.values())
        return QueryResult(model_id, np.asarray(outputs[meta["outputs"][0]], np.float64), outputs, tokens, times,
                           stats.bytes_sent, client_bytes, stats.rounds, stats)


def _share_client_inputs(meta: dict, inputs: dict, rng) -> list:
    """Share the client's inputs into the rings the model's plan binds them to (known from
    the metadata's ``input_bindings``)."""
    from ..plan import InputBinding, VarInfo
    from ..rings import RingSpec
    from ..shares import share_bound_inputs

    bindings = [
        InputBinding(name, VarInfo(RingSpec.parse(info["ring"]), tuple(info["shape"]), info["dtype"]))
        for name, info in meta["input_bindings"].items()
    ]
    return share_bound_inputs(bindings, inputs, rng)


def query(config: DeploymentConfig, model_id: str, text: str, **kwargs) -> QueryResult:
    """One query of ``model_id`` on ``text`` as a client (see :class:`Client`)."""
    return Client(config).query(model_id, text, **kwargs)
