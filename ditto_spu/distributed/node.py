"""A party process: ``ditto-spu node --config configs/3pc.json --rank i``.

The node listens on its control address for jobs from the driver (:mod:`.channel`: TLS
when the config enables it, and an HMAC challenge on the deployment's key). Messages
follow the schema of :mod:`.wire` (JSON headers plus raw arrays; nothing is unpickled); a
malformed, oversize or unauthenticated one is logged and dropped, and the node keeps
serving. A job
carries a Plan and this node's input shares (never a plaintext); the node opens the SPU brpc link to
the other two nodes, runs the plan through the same PartyRuntime as the simulator, and
returns its output shares to the driver (the client, who alone reconstructs them).

Faults: a job that fails (a peer died, a receive timed out, a bad plan) is reported to
the driver and the node exits with status 1 — the link's state is unknown after a
failure, and a supervisor restarts nodes. If the driver aborts the job or disappears,
the node exits with status 1 too. A node is never left waiting forever: every receive
on the link has ``link.recv_timeout_ms``.
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
from .channel import Listener, server_context
from .config import ConfigError, DeploymentConfig
from .wire import WireError, recv_message, send_message

# What a node accepts from the driver, and when.
REQUESTS = {"hello", "shutdown", "run"}
DURING_JOB = {"abort"}
AFTER_JOB = {"release"}

EXIT_JOB_FAILED = 1


def _log(rank: int, message: str) -> None:
    print(f"[ditto-spu node {rank}] {message}", file=sys.stderr, flush=True)


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


def serve(config: DeploymentConfig, rank: int, *, max_jobs: int | None = None) -> int:
    """Serve jobs until told to shut down; returns the process exit status."""
    if rank not in (0, 1, 2):
        raise ConfigError(f"--rank must be 0, 1 or 2 (the config has 3 nodes), got {rank}")
    node = config.nodes[rank]
    _check_port_free(node.link_address, "link address", rank)
    try:
        listener = Listener(node.control_host_port, config.authkey(), server_context(config))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DittoError(
                f"node {rank}: control address {node.control_address} is already in use; "
                f"stop the other process or change the port in {config.path}"
            ) from None
        raise DittoError(f"node {rank}: cannot listen on {node.control_address}: {e}") from None
    tls = "TLS" if config.link.tls_enabled else "no TLS (authenticated, not encrypted)"
    _log(rank, f"ready: id {node.id}, control {node.control_address} ({tls}), link {node.link_address}")
    jobs = 0
    with listener:
        while max_jobs is None or jobs < max_jobs:
            try:
                conn = listener.accept()
            except Exception as e:  # TLS or key failure, malformed greeting, reset connection
                _log(rank, f"rejected a control connection: {type(e).__name__}: {e}")
                continue
            with conn:
                try:
                    msg = recv_message(conn, max_bytes=config.max_message_bytes, expected_types=REQUESTS)
                except EOFError:
                    continue
                except (WireError, OSError) as e:
                    _log(rank, f"dropped a malformed control message: {e}")
                    continue
                kind = msg["type"]
                if kind == "hello":
                    send_message(conn, {"type": "hello", "rank": rank, "id": node.id, "digest": config.digest})
                elif kind == "shutdown":
                    send_message(conn, {"type": "bye"})
                    _log(rank, "shutting down")
                    return 0
                elif kind == "run":
                    jobs += 1
                    status = _serve_job(config, rank, conn, msg)
                    if status != 0:
                        return status
    return 0


def _serve_job(config: DeploymentConfig, rank: int, conn, msg: dict) -> int:
    if msg.get("digest") != config.digest:
        send_message(
            conn,
            {
                "type": "error",
                "rank": rank,
                "message": f"node {rank}'s config ({config.path}) differs from the driver's; "
                "all nodes and the driver must use the same file",
            }
        )
        return 0
    if msg.get("rank") != rank:
        send_message(
            conn,
            {
                "type": "error",
                "rank": rank,
                "message": f"job for rank {msg.get('rank')} was sent to node {rank}; check the "
                "nodes' --rank flags against the config's node order",
            }
        )
        return 0
    _log(rank, "job started")
    result: dict = {}
    worker = threading.Thread(target=_run_job, args=(config, rank, msg, result), daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
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
        try:
            send_message(conn, {"type": "error", "rank": rank, "message": result["error"]})
        except OSError:
            pass
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
        from spu import libspu

        from ..mpc.runtime import PartyRuntime
        from ..plan import Plan

        if not isinstance(msg.get("plan"), bytes) or not isinstance(msg.get("inputs"), dict):
            raise DittoError(f"node {rank}: a run request needs 'plan' (bytes) and 'inputs' (shares by name)")
        plan = Plan.from_bytes(msg["plan"])
        t0 = time.perf_counter()
        try:
            link = libspu.link.create_brpc(config.link_desc(rank), rank)
        except RuntimeError as e:
            raise DittoError(
                f"node {rank}: could not connect to the other nodes "
                f"({[n.link_address for n in config.nodes]}): {_first_line(e)}"
            ) from None
        link_s = time.perf_counter() - t0
        runtime = PartyRuntime(link, options=config.spu, checked=bool(msg.get("checked")))
        outputs, steps = runtime.run(plan, msg["inputs"])
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
