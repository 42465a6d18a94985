"""A party process: ``ditto-spu node --config configs/3pc.json --rank i [--store DIR]``.

The node listens on its control address (:mod:`.channel`: TLS when the config enables it,
and an HMAC challenge in which the peer proves the key of its role: ``owner``, ``client``
or ``driver``) and serves each connection in a thread of its own. Messages follow the
schema of :mod:`.wire` (JSON headers plus raw arrays; nothing is unpickled); a malformed,
oversize or unauthenticated one is logged and dropped, and the node keeps serving. What a
role may ask is :data:`ROLE_REQUESTS`.

* ``upload_begin`` / ``upload_chunk`` / ``upload_commit`` (owner): the node receives ITS
  OWN weight shares of a model, the Plan and the public metadata, checks them against
  the plan's bindings and keeps them in memory and in its store (:mod:`.store`), which it
  reloads when it starts.
* ``model_info`` (client): a model's public metadata.
* ``query`` (client): the client's input shares for a stored model; the node waits for
  its turn (the run lock, ``queue_timeout_s``), says ``admitted``, and on ``start`` opens
  a fresh SPU brpc link to the other two nodes, runs the stored Plan through the same
  PartyRuntime as the simulator on its weight shares plus the client's, and returns its
  output shares (the client alone reconstructs them).
* ``open_session`` / ``close_session`` (client) and ``query`` with a ``session`` part: a
  generation's passes; the node keeps its own shares between them (the key/value cache,
  :mod:`.sessions`: fed into a plan's inputs, kept from its outputs, never sent), with a
  time-to-live and a memory bound per session.
* ``run`` (driver, ``ditto-spu run``): the same with a Plan and every input's shares in
  the message.

Faults: a query that fails or is aborted after its link was opened is reported to the
client and the node re-executes itself (:func:`restart_process`: the link's state is
unknown, SPU threads may be blocked in a receive that cannot be cancelled), coming back
with its stored models; the other nodes do the same when the client aborts the query. A
failed ``run`` job still ends the node with status 1 (a supervisor restarts it). A node
is never left waiting forever: every receive on the link has ``link.recv_timeout_ms``.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time
import traceback

from ..errors import DittoError
from ..plan import Plan
from .channel import Listener, server_context
from .config import ConfigError, DeploymentConfig
from .sessions import SessionStore
from .store import ModelStore, StoredModel, check_model_id, default_store_dir
from .wire import WireError, recv_message, send_message

# What a node accepts, by the role a connection authenticated as (channel.py), and when.
ROLE_REQUESTS = {
    "driver": {"hello", "shutdown", "run", "model_info", "list_models"},
    "owner": {"hello", "upload_begin", "model_info", "list_models", "query", "open_session", "close_session"},
    "client": {"hello", "model_info", "query", "open_session", "close_session"},
}
REQUESTS = set().union(*ROLE_REQUESTS.values())
UPLOAD = {"upload_chunk", "upload_commit", "abort"}
BEFORE_START = {"start", "abort"}
DURING_JOB = {"abort"}
AFTER_JOB = {"release"}

EXIT_JOB_FAILED = 1
_SMALL = 1 << 20


def _log(rank: int, message: str) -> None:
    print(f"[ditto-spu node {rank}] {message}", file=sys.stderr, flush=True)


def _report_error(conn, rank: int, message: str) -> None:
    """Tell the peer on ``conn`` what failed, if it is still there to hear it."""
    try:
        send_message(conn, {"type": "error", "rank": rank, "message": message})
    except OSError:
        pass


def _check_port_free(address: str, what: str, rank: int) -> None:
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), int(port)))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise DittoError(
                    f"node {rank}: {what} {address} is already in use — another node or "
                    f"program listens there; stop it or change the port in the config"
                ) from None
            raise DittoError(f"node {rank}: cannot bind {what} {address}: {e}") from None


def restart_process(rank: int, reason: str) -> None:
    """Replace this process by a fresh copy of itself (same command line, same pid): the
    way a node leaves a query whose SPU link failed or was aborted. SPU's threads may be
    blocked in a receive that cannot be cancelled and the link's state is unknown, so the
    node does not reuse anything of it; the new process reloads its stored models."""
    _log(rank, f"restarting ({reason}); stored models are reloaded from the store")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError as e:
        _log(rank, f"cannot restart ({e}); exiting")
    os._exit(EXIT_JOB_FAILED)


def serve(config: DeploymentConfig, rank: int, *, max_jobs: int | None = None, store: str | None = None,
          restart=restart_process) -> int:
    """Serve requests until told to shut down; returns the process exit status.
    ``store``: the model store directory (default: the config's ``nodes[rank].store``,
    else ``~/.cache/ditto-spu/node{rank}``). ``restart(rank, reason)``: what the node does
    after a query whose link failed (default: re-execute itself)."""
    if rank not in (0, 1, 2):
        raise ConfigError(f"--rank must be 0, 1 or 2 (the config has 3 nodes), got {rank}")
    node = config.nodes[rank]
    _check_port_free(node.link_address, "link address", rank)
    keys = config.node_keys()
    server = NodeServer(config, rank, store or node.store or default_store_dir(rank), max_jobs, restart)
    try:
        listener = Listener(node.control_host_port, keys, server_context(config))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DittoError(
                f"node {rank}: control address {node.control_address} is already in use; "
                f"stop the other process or change the port in {config.path}"
            ) from None
        raise DittoError(f"node {rank}: cannot listen on {node.control_address}: {e}") from None
    tls = "TLS" if config.link.tls_enabled else "no TLS (authenticated, not encrypted)"
    _log(rank, f"ready: id {node.id}, control {node.control_address} ({tls}), link {node.link_address}, "
               f"store {server.store.root} ({len(server.models)} model(s): {sorted(server.models)})")
    with listener:
        listener.sock.settimeout(0.5)
        while not server.stopped.is_set():
            try:
                raw, peer = listener.accept_raw()
            except socket.timeout:
                server.expire_sessions()
                continue
            raw.settimeout(None)
            server.expire_sessions()
            threading.Thread(target=server.handle, args=(listener, raw, peer), daemon=True).start()
    return server.exit_status


class NodeServer:
    """A node's state: its stored models (weight shares of this party only), the run
    lock that puts queries and jobs in turn, and the request handlers (one thread per
    control connection)."""

    def __init__(self, config: DeploymentConfig, rank: int, store_dir: str, max_jobs, restart):
        self.config, self.rank = config, rank
        self.store = ModelStore(store_dir, rank)
        self.models: dict = {}
        for model_id in self.store.model_ids():
            try:
                self.models[model_id] = self.store.load(model_id)
            except DittoError as e:
                _log(rank, f"skipping stored model {model_id!r}: {e}")
        self.models_lock = threading.Lock()
        self.run_lock = threading.Lock()
        self.stopped = threading.Event()
        self.exit_status = 0
        self.max_jobs = max_jobs
        self.jobs = 0
        self.restart = restart
        self.sessions = SessionStore(rank)

    def expire_sessions(self) -> None:
        for session_id, nbytes in self.sessions.expire():
            _log(self.rank, f"session {session_id} expired (unused for its ttl): freed {nbytes / 1e6:.2f} MB of shares")

    # ---- connections ------------------------------------------------------------------
    def handle(self, listener, raw, peer) -> None:
        rank = self.rank
        try:
            conn = listener.authenticate(raw, peer)
        except Exception as e:  # TLS or key failure, malformed greeting, reset connection
            _log(rank, f"rejected a control connection: {type(e).__name__}: {e}")
            return
        with conn:
            try:
                msg = recv_message(conn, max_bytes=self.config.max_message_bytes, expected_types=REQUESTS)
            except EOFError:
                return
            except (WireError, OSError) as e:
                _log(rank, f"dropped a malformed control message: {e}")
                return
            kind = msg["type"]
            try:
                if kind not in ROLE_REQUESTS[conn.role]:
                    _log(rank, f"refused {kind!r} from a {conn.role} connection")
                    allowed = [r for r, kinds in ROLE_REQUESTS.items() if kind in kinds]
                    raise DittoError(
                        f"node {rank} refuses {kind!r} from a connection with the {conn.role} key; it needs "
                        f"the {' or '.join(allowed)} key (${' or $'.join(self.config.key_env(r) for r in allowed)})"
                    )
                if kind == "hello":
                    send_message(conn, {"type": "hello", "rank": rank, "id": self.config.nodes[rank].id,
                                        "digest": self.config.digest, "role": conn.role})
                elif kind == "shutdown":
                    send_message(conn, {"type": "bye"})
                    _log(rank, "shutting down")
                    self.stopped.set()
                elif kind == "list_models":
                    with self.models_lock:
                        send_message(conn, {"type": "models", "rank": rank, "models": sorted(self.models)})
                elif kind == "model_info":
                    model = self._model(msg.get("model_id"))
                    send_message(conn, {"type": "model_info", "rank": rank, "meta": model.meta})
                elif kind == "upload_begin":
                    self._upload(conn, msg)
                elif kind == "query":
                    self._query(conn, msg)
                elif kind == "open_session":
                    self._open_session(conn, msg)
                elif kind == "close_session":
                    freed = self.sessions.close(msg.get("session_id"))
                    _log(rank, f"session {msg.get('session_id')} closed: freed {freed / 1e6:.2f} MB of shares")
                    send_message(conn, {"type": "closed", "rank": rank, "session_id": msg.get("session_id"),
                                        "freed_bytes": freed, "open_sessions": len(self.sessions)})
                elif kind == "run":
                    self._job(conn, msg)
            except DittoError as e:
                try:
                    send_message(conn, {"type": "error", "rank": rank, "message": str(e)})
                except OSError:
                    pass
            except (EOFError, WireError, OSError) as e:
                _log(rank, f"{kind}: the connection failed ({type(e).__name__}: {e})")

    def _check_digest_rank(self, msg: dict) -> None:
        rank = self.rank
        if msg.get("digest") != self.config.digest:
            raise DittoError(
                f"node {rank}'s config ({self.config.path}) differs from the driver's; "
                "all nodes and the driver must use the same file"
            )
        if msg.get("rank") != rank:
            raise DittoError(
                f"job for rank {msg.get('rank')} was sent to node {rank}; check the "
                "nodes' --rank flags against the config's node order"
            )

    def _model(self, model_id) -> StoredModel:
        check_model_id(model_id)
        with self.models_lock:
            model = self.models.get(model_id)
            known = sorted(self.models)
        if model is None:
            raise DittoError(
                f"node {self.rank} has no model {model_id!r} (it holds {known or 'none'}); the model "
                "owner uploads it with `ditto-spu upload --model-id ...`"
            )
        return model

    # ---- upload (owner) -----------------------------------------------------------------
    def _upload(self, conn, msg: dict) -> None:
        """upload_begin {model_id, rank, digest, meta, plan, weights: {name: [shape...]}}
        then upload_chunk {pieces: [{name, start, share}]}... then upload_commit: the
        node checks every weight arrived whole, stores it, answers ``stored``."""
        from ..shares import AShare

        rank = self.rank
        self._check_digest_rank(msg)
        model_id = check_model_id(msg.get("model_id"))
        meta, plan_bytes, weights = msg.get("meta"), msg.get("plan"), msg.get("weights")
        if not isinstance(meta, dict) or not isinstance(plan_bytes, bytes) or not isinstance(weights, dict):
            raise DittoError(f"node {rank}: upload_begin needs meta (object), plan (bytes), weights (names)")
        plan = Plan.from_bytes(plan_bytes)
        bindings = {b.name: b for b in plan.inputs}
        plans_bytes = msg.get("plans") or {}
        if not isinstance(plans_bytes, dict) or not all(isinstance(b, bytes) for b in plans_bytes.values()):
            raise DittoError(f"node {rank}: upload_begin's plans are {{name: bytes}}")
        plans = {name: Plan.from_bytes(b) for name, b in plans_bytes.items()}
        if plans:
            _check_generation_plans(rank, meta, plans, weights)
        else:
            client = set(meta.get("client_inputs", {}).values())
            if set(weights) | client != set(bindings) or set(weights) & client:
                raise DittoError(
                    f"node {rank}: the upload's weights and client inputs do not partition the plan's inputs"
                )
        parts: dict = {name: [] for name in weights}
        rows: dict = {name: 0 for name in weights}
        send_message(conn, {"type": "ready", "rank": rank})
        while True:
            chunk = recv_message(conn, max_bytes=self.config.max_message_bytes, expected_types=UPLOAD)
            if chunk["type"] == "abort":
                _log(rank, f"upload of {model_id!r} aborted by the owner")
                return
            if chunk["type"] == "upload_commit":
                break
            for piece in chunk.get("pieces", []):
                name, share = piece.get("name"), piece.get("share")
                if name not in parts or not isinstance(share, AShare) or piece.get("start") != rows[name]:
                    raise DittoError(f"node {rank}: upload piece for {name!r} is unknown, malformed or out of order")
                parts[name].append(share)
                rows[name] += share.shape[0] if share.shape else 1
        shares = {}
        for name, pieces in parts.items():
            b = bindings[name]
            if not pieces:
                raise DittoError(f"node {rank}: the upload of {model_id!r} lacks weight {name!r}")
            first = pieces[0]
            if len(pieces) == 1:
                share = first
            else:
                import numpy as np

                share = AShare(first.ring, (rows[name], *first.shape[1:]), first.dtype,
                               np.concatenate([p.components for p in pieces]))
            if share.ring != b.info.ring or share.shape != b.info.shape:
                raise DittoError(
                    f"node {rank}: weight {name!r} arrived as {share.ring} {share.shape}, the plan "
                    f"expects {b.info.ring} {b.info.shape}"
                )
            shares[name] = share
        model = StoredModel(model_id, rank, meta, plan, plan_bytes, shares, plans, plans_bytes)
        with self.models_lock:  # one upload of a model id at a time; queries use the old one until now
            self.store.save(model)
            self.models[model_id] = model
        _log(rank, f"stored model {model_id!r}: {len(shares)} weight shares, {model.nbytes / 1e6:.1f} MB")
        send_message(conn, {"type": "stored", "rank": rank, "model_id": model_id, "bytes": model.nbytes})

    # ---- queries (client) and jobs (driver) -------------------------------------------------
    def _admit(self, conn) -> bool:
        """Wait for the run lock (queries and jobs take turns, ``queue_timeout_s``), say
        ``admitted`` and wait for ``start``. False (lock released) if the peer leaves."""
        deadline = time.monotonic() + self.config.queue_timeout_s
        while not self.run_lock.acquire(timeout=0.2):
            if conn.poll(0):  # the peer gave up (EOF) or sent something out of turn
                return False
            if time.monotonic() > deadline:
                raise DittoError(
                    f"node {self.rank} was busy with other queries for queue_timeout_s = "
                    f"{self.config.queue_timeout_s:.0f} s; try again later"
                )
        try:
            send_message(conn, {"type": "admitted", "rank": self.rank})
            if not conn.poll(self.config.queue_timeout_s + 60):
                raise DittoError(f"node {self.rank}: no start within the queue timeout")
            start = recv_message(conn, max_bytes=_SMALL, expected_types=BEFORE_START)
            if start["type"] != "start":
                return False
        except BaseException:
            self.run_lock.release()
            raise
        return True

    def _query(self, conn, msg: dict) -> None:
        rank = self.rank
        self._check_digest_rank(msg)
        model = self._model(msg.get("model_id"))
        if msg.get("upload_id") != model.meta.get("upload_id"):
            raise DittoError(
                f"node {rank} holds another upload of model {model.model_id!r} (upload id "
                f"{model.meta.get('upload_id')}, the client's metadata says {msg.get('upload_id')}); "
                "an upload did not reach every node, or it changed meanwhile: upload the model again"
            )
        if msg.get("session") is not None:
            self._session_query(conn, msg, model)
            return
        inputs = msg.get("inputs")
        expected = set(model.meta["client_inputs"].values())
        if not isinstance(inputs, dict) or set(inputs) != expected:
            raise DittoError(
                f"node {rank}: a query of {model.model_id!r} gives exactly the client inputs "
                f"{sorted(expected)}, got {sorted(inputs) if isinstance(inputs, dict) else inputs!r}"
            )
        if not self._admit(conn):
            return
        try:
            query_id = str(msg.get("query_id", "?"))[:64]
            _log(rank, f"query {query_id} of {model.model_id!r} started")
            self._execute(conn, model.plan, {**model.shares, **inputs}, f"query {query_id}")
        finally:
            self.run_lock.release()

    # ---- sessions (client): shares kept at the node between queries -------------------------
    def _open_session(self, conn, msg: dict) -> None:
        """open_session {model_id, upload_id, session_id, ttl_s, rank, digest} → session."""
        self._check_digest_rank(msg)
        model = self._model(msg.get("model_id"))
        if msg.get("upload_id") != model.meta.get("upload_id"):
            raise DittoError(f"node {self.rank} holds another upload of model {model.model_id!r}; fetch its metadata again")
        if not model.plans:
            raise DittoError(f"node {self.rank}: model {model.model_id!r} was uploaded for single queries, not for "
                             "sessions (upload it with `ditto-spu upload --task generate`)")
        session = self.sessions.open(msg.get("session_id"), model.model_id, model.meta["upload_id"], msg.get("ttl_s"))
        _log(self.rank, f"session {session.session_id} of {model.model_id!r} opened (ttl {session.ttl_s:.0f} s, "
                        f"at most {session.max_bytes / 1e6:.0f} MB)")
        send_message(conn, {"type": "session", "rank": self.rank, "session_id": session.session_id,
                            "ttl_s": session.ttl_s, "max_bytes": session.max_bytes})

    def _session_query(self, conn, msg: dict, model: StoredModel) -> None:
        """A query in a session: the plan named in ``session.plan``, inputs from the
        message plus the session's ``feed``; the outputs in ``keep`` stay here."""
        rank, spec = self.rank, msg["session"]
        plan = model.plans.get(spec.get("plan")) if isinstance(spec, dict) else None
        if plan is None:
            raise DittoError(f"node {rank}: model {model.model_id!r} has no plan "
                             f"{spec.get('plan') if isinstance(spec, dict) else spec!r} (it has {sorted(model.plans)})")
        prepared = self.sessions.prepare(spec, model.model_id, model.meta["upload_id"], plan, model.shares)
        try:
            inputs = msg.get("inputs")
            expected = {b.name for b in plan.inputs} - set(model.shares) - set(prepared.inputs)
            if not isinstance(inputs, dict) or set(inputs) != expected:
                raise DittoError(
                    f"node {rank}: step {spec['step']} of session {spec['id']} gives exactly the client inputs "
                    f"{sorted(expected)}, got {sorted(inputs) if isinstance(inputs, dict) else inputs!r}"
                )
            admitted = self._admit(conn)
        except BaseException:
            self.sessions.release(prepared)
            raise
        if not admitted:
            self.sessions.release(prepared)
            return
        try:
            what = f"session {spec['id']} step {spec['step']} ({spec['plan']})"
            _log(rank, f"{what} of {model.model_id!r} started")
            self._execute(conn, plan, {**model.shares, **prepared.inputs, **inputs}, what,
                          keep=lambda outputs: self.sessions.commit(prepared, outputs))
        finally:
            self.sessions.release(prepared)
            self.run_lock.release()

    def _job(self, conn, msg: dict) -> None:
        self._check_digest_rank(msg)
        if not self._admit(conn):
            return
        try:
            self.jobs += 1
            _serve_job(self.config, self.rank, conn, msg)
        finally:
            self.run_lock.release()
        if self.max_jobs is not None and self.jobs >= self.max_jobs:
            self.stopped.set()

    def _execute(self, conn, plan: Plan, inputs: dict, what: str, keep=None) -> None:
        """Run ``plan`` on a fresh link in a worker thread; on success send ``result`` and
        keep the link until ``release``; on failure or abort report it and restart.
        ``keep(outputs)``: keeps some outputs at the node (a session), returns the rest:
        only those are sent."""
        rank = self.rank
        result: dict = {}
        done = spu_worker().submit(_run_plan_inputs, self.config, rank, plan, inputs, False, result)
        while not done.wait(0.2):
            if conn.poll(0):
                try:
                    request = recv_message(conn, max_bytes=_SMALL, expected_types=DURING_JOB)
                except EOFError:
                    request = {"type": "abort", "reason": "the client disconnected"}
                except (WireError, OSError) as e:
                    request = {"type": "abort", "reason": f"malformed message during the query ({e})"}
                self.restart(rank, f"{what} aborted: {request.get('reason', 'by the client')}")
                return
        if "error" in result:
            _log(rank, f"{what} failed: {result['error']}")
            _report_error(conn, rank, result["error"])
            self.restart(rank, f"{what} failed")
            return
        value = result["value"]
        if keep is not None:
            try:
                value = {**value, "outputs": keep(value["outputs"])}
            except DittoError as e:
                send_message(conn, {"type": "error", "rank": rank, "message": str(e)})
                _await_release(self.config, rank, conn)
                return
        send_message(conn, {"type": "result", "rank": rank, **value})
        _log(rank, f"{what} done in {value['wall_s']:.2f} s")
        _await_release(self.config, rank, conn)
        result.clear()


def _check_generation_plans(rank: int, meta: dict, plans: dict, weights: dict) -> None:
    """A generation upload: every plan's inputs are the weights (bound the same in every
    plan: one set of weight shares serves them all), its client inputs and its cache
    inputs (fed from a session), as the metadata's ``plans`` says."""
    described = meta.get("plans")
    if not isinstance(described, dict) or set(described) != set(plans):
        raise DittoError(f"node {rank}: the upload's metadata does not describe its plans {sorted(plans)}")
    first = None
    for name, plan in plans.items():
        bindings = {b.name: b.info for b in plan.inputs}
        desc = described[name]
        client = set(desc.get("client_inputs", {}).values())
        cache = set(desc.get("cache_inputs", {}).get("keys", [])) | set(desc.get("cache_inputs", {}).get("values", []))
        parts = [set(weights), client, cache]
        if set().union(*parts) != set(bindings) or sum(len(p) for p in parts) != len(bindings):
            raise DittoError(f"node {rank}: plan {name!r}'s inputs are not its weights, client and cache inputs")
        infos = {w: (bindings[w].ring, bindings[w].shape) for w in weights}
        if first is None:
            first = (name, infos)
        elif infos != first[1]:
            diff = next(w for w in weights if infos[w] != first[1][w])
            raise DittoError(f"node {rank}: plan {name!r} binds weight {diff!r} as {infos[diff]}, plan {first[0]!r} "
                             f"as {first[1][diff]}: one set of weight shares cannot serve both")


class SpuWorker:
    """The one thread of a node process that runs SPU (links, runtimes, plans), for its
    whole life.

    Each query used to run on a fresh ``threading.Thread`` that exited when the query
    was done, so a node process went through one SPU-running thread per query (before
    the service a node ran one job and exited). About one query in 25 then killed a node
    with SIGSEGV in libc's ``strlen`` (AVX-512 variant, first load) on an unmapped
    address ``0x...fc5e0``: the same offset, 0xa20 bytes below a page boundary, in the
    region of 8 MB thread stacks, i.e. in the thread-local/first-frame area at the top
    of the stack of a thread that had exited and whose stack glibc had unmapped. Which
    code keeps that pointer is not pinned down (libspu keeps per-thread state: OpenMP
    teams per master thread, thread-locals); running all SPU work on one thread for
    the life of the process removes the churn of the threads SPU runs on (measured in
    docs/deployment.md, "Known problem": 0 crashes in 100 MiniLM queries; the evidence is
    statistical). Jobs run one at a time (the run lock already ensures it).
    """

    def __init__(self):
        import queue

        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="ditto-spu-worker", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            fn, args, done = self._jobs.get()
            try:
                fn(*args)
            except BaseException:  # the job functions report their own errors; never die
                traceback.print_exc()
            finally:
                done.set()

    def submit(self, fn, *args) -> threading.Event:
        """Queue ``fn(*args)``; the returned event is set once it has returned."""
        done = threading.Event()
        self._jobs.put((fn, args, done))
        return done


_WORKER: SpuWorker | None = None
_WORKER_LOCK = threading.Lock()


def spu_worker() -> SpuWorker:
    """This process's SPU thread (started on first use)."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = SpuWorker()
        return _WORKER


def _serve_job(config: DeploymentConfig, rank: int, conn, msg: dict) -> int:
    """A driver's ``run`` (``ditto-spu run``: plan and every input's shares in the
    message). A failure ends the node process (status 1), as before the service."""
    _log(rank, "job started")
    result: dict = {}
    done = spu_worker().submit(_run_job, config, rank, msg, result)
    while not done.wait(0.2):
        if conn.poll(0):
            try:
                request = recv_message(conn, max_bytes=1 << 20, expected_types=DURING_JOB)
            except EOFError:
                request = {"type": "abort", "reason": "the driver disconnected"}
            except (WireError, OSError) as e:
                request = {"type": "abort", "reason": f"malformed message during the job ({e})"}
            if request.get("type") == "abort":
                _log(rank, f"job aborted: {request.get('reason', 'by the driver')}; exiting")
                _hard_exit(EXIT_JOB_FAILED)
    if "error" in result:
        _log(rank, f"job failed: {result['error']}")
        _report_error(conn, rank, result["error"])
        _hard_exit(EXIT_JOB_FAILED)
    send_message(conn, {"type": "result", "rank": rank, **result["value"]})
    _log(rank, f"job done in {result['value']['wall_s']:.2f} s")
    _await_release(config, rank, conn)
    result.clear()  # only now is the link (and its brpc server) destroyed
    return 0


def _await_release(config: DeploymentConfig, rank: int, conn) -> None:
    """Keep this node's link — its brpc server — alive until every node has finished.

    ``stop_link`` (yacl's WaitLinkTaskFinish) returns once this node's own messages are
    acknowledged, but a peer's last request to this node (an ack or its fin) may have
    been processed here while its reply is still being written — over TLS brpc always
    writes from a background bthread. Destroying the link at that moment closes the
    connection under the peer's RPC: brpc reports an EOF with error code 0 ("Check
    failed: false. error_code is 0", controller.cpp:457), yacl retries against the
    stopped server for 9 s and then ends the peer with exit(-1). A node's result reaches
    the driver only after its own link work is complete, so once the driver has all three
    results (it then sends ``release``, or closes the connection) no request is in flight.
    """
    deadline = time.monotonic() + max(10.0, config.link.recv_timeout_ms / 1000)
    while time.monotonic() < deadline:
        if not conn.poll(0.2):
            continue
        try:
            recv_message(conn, max_bytes=1 << 20, expected_types=AFTER_JOB)
        except EOFError:
            pass  # the driver closed the connection: it is done with every node
        except (WireError, OSError) as e:
            _log(rank, f"dropped a malformed message after the job ({e}); releasing the link")
        return
    _log(rank, "the driver did not confirm the end of the job in time; releasing the link")


def _run_job(config: DeploymentConfig, rank: int, msg: dict, result: dict) -> None:
    try:
        if not isinstance(msg.get("plan"), bytes) or not isinstance(msg.get("inputs"), dict):
            raise DittoError(f"node {rank}: a run request needs 'plan' (bytes) and 'inputs' (shares by name)")
        plan = Plan.from_bytes(msg["plan"])
    except DittoError as e:
        result["error"] = str(e)
        return
    _run_plan_inputs(config, rank, plan, msg["inputs"], bool(msg.get("checked")), result)


def _run_plan_inputs(config: DeploymentConfig, rank: int, plan, inputs: dict, checked: bool, result: dict) -> None:
    """Open this node's link to the other two, run ``plan`` on ``inputs`` (shares by
    name), fill ``result`` with ``value`` (outputs, steps, times) or ``error``."""
    try:
        from spu import libspu

        from ..mpc.runtime import PartyRuntime

        t0 = time.perf_counter()
        try:
            link = libspu.link.create_brpc(config.link_desc(rank), rank)
        except RuntimeError as e:
            raise DittoError(
                f"node {rank}: could not connect to the other nodes "
                f"({[n.link_address for n in config.nodes]}): {_first_line(e)}"
            ) from None
        link_s = time.perf_counter() - t0
        result["link"] = link  # destroyed after the driver's release (_await_release)
        runtime = PartyRuntime(link, options=config.spu, checked=checked)
        outputs, steps = runtime.run(plan, inputs)
        wall = time.perf_counter() - t0
        try:
            link.stop_link()
        except RuntimeError:
            pass
        result["link"] = link  # destroyed after the driver's release (_await_release)
        result["value"] = {
            "outputs": outputs,
            "steps": steps,
            "wall_s": wall,
            "link_setup_s": link_s,
            "setup_bytes_sent": runtime.setup_stats.bytes_sent,
        }
    except DittoError as e:
        result["error"] = str(e)
    except Exception as e:  # report, never hang
        result["error"] = f"{type(e).__name__}: {_first_line(e)}\n{traceback.format_exc(limit=3)}"


def _first_line(e: BaseException) -> str:
    for line in str(e).splitlines():
        line = line.strip()
        if line and line != "what:":
            return line
    return type(e).__name__


def _hard_exit(status: int) -> None:
    # SPU threads may be blocked in a receive that cannot be cancelled: leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
