"""The driver: secret-shares inputs, sends each node its shares and the Plan, collects
output shares and reconstructs them (it plays the client; in this command it also
plays the model owner, sharing the weights itself — only shares reach the nodes).

Faults: a node that cannot be reached, dies, or reports an error stops the whole job:
the driver tells the other nodes to abort (they exit non-zero) and raises a clear error.
"""

from __future__ import annotations

import ssl
import time

from ..errors import DittoError, PartyError
from ..mpc.stats import RunStats
from ..plan import Plan
from ..shares import reconstruct, share_plan_inputs
from .channel import AuthenticationError, client_context, connect, wait
from .config import DeploymentConfig
from .wire import WireError, recv_message, send_message

_SMALL = 1 << 20  # replies other than results are small


def _connect(config: DeploymentConfig, rank: int, timeout_s: float, role: str = "driver"):
    node = config.nodes[rank]
    key, tls = config.role_key(role), client_context(config)
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            return connect(node.control_host_port, key, tls, timeout=max(1.0, deadline - time.monotonic()), role=role)
        except ssl.SSLError as e:  # not a node still starting up: do not retry
            if isinstance(e, ssl.SSLCertVerificationError):
                hint = f"its certificate does not verify against link.tls.ca ({config.link.tls_ca})"
            else:
                hint = "does the node run with TLS off (its link.tls) while this config enables it?"
            raise DittoError(
                f"TLS handshake with node {rank} ({node.id}) at {node.control_address} failed: {hint} ({e})"
            ) from None
        except AuthenticationError as e:
            raise DittoError(
                f"node {rank} ({node.id}): {e}; the {role} and every node need the same {role} key in "
                f"${config.key_env(role)} and the same link.tls setting"
            ) from None
        except OSError as e:
            last = e
            time.sleep(0.25)
    raise DittoError(
        f"cannot reach node {rank} ({node.id}) at {node.control_address} within {timeout_s:.0f} s "
        f"({last}); start it with `ditto-spu node --config {config.path} --rank {rank}`"
    )


def ping(config: DeploymentConfig, timeout_s: float = 10.0, ranks=(0, 1, 2)) -> list:
    """Ask nodes (default: every node) for their rank and config digest: are they up?"""
    answers = []
    for rank in ranks:
        with _connect(config, rank, timeout_s) as conn:
            send_message(conn, {"type": "hello"})
            answers.append(recv_message(conn, max_bytes=_SMALL, expected_types={"hello", "error"}))
    return answers


def shutdown(config: DeploymentConfig, timeout_s: float = 5.0) -> None:
    for rank in range(3):
        try:
            with _connect(config, rank, timeout_s) as conn:
                send_message(conn, {"type": "shutdown"})
                recv_message(conn, max_bytes=_SMALL, expected_types={"bye"})
        except (DittoError, EOFError, OSError):
            pass


def run_plan(
    config: DeploymentConfig,
    plan: Plan,
    inputs: dict,
    *,
    rng=None,
    connect_timeout_s: float = 30.0,
    checked: bool = False,
) -> tuple[dict, RunStats]:
    """Run ``plan`` on the three nodes; return (plaintext outputs, stats)."""
    plan.validate()
    per_party = share_plan_inputs(plan, inputs, rng)
    conns = [_connect(config, rank, connect_timeout_s) for rank in range(3)]
    plan_bytes = plan.to_bytes()
    requests = [
        {"type": "run", "rank": rank, "digest": config.digest, "plan": plan_bytes, "inputs": per_party[rank],
         "checked": checked}
        for rank in range(3)
    ]
    t0 = time.perf_counter()
    try:
        results = run_admitted(config, conns, requests, "job")
    finally:
        for conn in conns:
            conn.close()
    wall = time.perf_counter() - t0
    stats = stats_of(results, wall)
    outputs = {
        b.name: reconstruct([results[rank]["outputs"][b.name] for rank in range(3)]) for b in plan.outputs
    }
    return outputs, stats


def stats_of(results: list, wall_s: float) -> RunStats:
    """The RunStats of three nodes' ``result`` messages."""
    return RunStats(
        wall_s,
        [r["steps"] for r in results],
        [r["setup_bytes_sent"] for r in results],
        [r["link_setup_s"] for r in results],
    )


def run_admitted(config: DeploymentConfig, conns: list, requests: list, what: str) -> list:
    """Send node r ``requests[r]`` (a ``run`` or ``query``) in rank order, each only once
    the previous node has admitted its own (its run lock: queries take turns, and since
    every caller takes the nodes in the same order no two wait on each other), then tell
    all three to start; collect the three ``result`` messages and release the nodes.
    A node that fails, dies or refuses stops everything: the others are told to abort
    and the DittoError names the node."""
    for rank, conn in enumerate(conns):
        others = {c: r for r, c in enumerate(conns) if r != rank}
        node = config.nodes[rank]
        try:
            send_message(conn, requests[rank])
            conn.sock.settimeout(config.queue_timeout_s + 30)
            reply = recv_message(conn, max_bytes=_SMALL, expected_types={"admitted", "error"})
            conn.sock.settimeout(None)
        except (OSError, EOFError, WireError) as e:
            # the nodes that already have their request would otherwise wait for a start
            _abort(others, f"node {rank} died")
            raise DittoError(
                f"node {rank} ({node.id}, {node.control_address}) closed its connection while the {what} was being "
                f"sent ({type(e).__name__}: {e}): it died or was killed; the other nodes were told to abort"
            ) from None
        if reply["type"] == "error":
            _abort(others, f"node {rank} refused the {what}")
            raise PartyError(rank, what, reply.get("message", "unknown error"))
    t0 = time.monotonic()
    for rank, conn in enumerate(conns):
        try:
            send_message(conn, {"type": "start"})
        except OSError:
            _abort({c: r for r, c in enumerate(conns) if r != rank}, f"node {rank} died")
            raise DittoError(f"node {rank} ({config.nodes[rank].id}) closed its connection before the {what} started") from None
    results = _collect(config, conns, t0)
    for conn in conns:  # every node is done with its link: they may close them now
        try:
            send_message(conn, {"type": "release"})
        except OSError:
            pass
    return results


def _collect(config: DeploymentConfig, conns: list, t0: float) -> list:
    results: list = [None] * 3
    pending = {conn: rank for rank, conn in enumerate(conns)}
    deadline = t0 + config.job_timeout_s
    while pending:
        if time.monotonic() > deadline:
            _abort(pending, "job timeout")
            raise DittoError(f"job did not finish within job_timeout_s = {config.job_timeout_s} s")
        for conn in wait(list(pending), timeout=1.0):
            rank = pending.pop(conn)
            try:
                msg = recv_message(conn, max_bytes=config.max_message_bytes, expected_types={"result", "error"})
            except WireError as e:
                _abort(pending, f"node {rank} sent a malformed reply")
                raise DittoError(f"node {rank} ({config.nodes[rank].control_address}) sent a malformed reply: {e}") from None
            except (EOFError, OSError):
                _abort(pending, f"node {rank} died")
                raise DittoError(
                    f"node {rank} ({config.nodes[rank].id}, {config.nodes[rank].control_address}) closed its "
                    f"connection mid-run: it died or was killed; the other nodes were told to abort"
                ) from None
            if msg.get("type") == "error":
                _abort(pending, f"node {rank} failed")
                raise PartyError(rank, "job", msg.get("message", "unknown error"))
            results[rank] = msg
    return results


def _abort(pending: dict, reason: str) -> None:
    for conn in list(pending):
        try:
            send_message(conn, {"type": "abort", "reason": reason})
        except OSError:
            pass


class NodesRunner:
    """Runs plans on a three-node deployment: the same ``run(plan, inputs)`` as the
    simulator, so every caller (inference, benchmarks) can use either."""

    def __init__(self, config: DeploymentConfig, **options):
        self.config = config
        self.options = options

    def run(self, plan: Plan, inputs: dict, rng=None):
        return run_plan(self.config, plan, inputs, rng=rng, **self.options)
