"""A delaying TCP relay: real network latency (and a bandwidth cap) between the nodes of
one machine, where ``tc netem`` is not available.

Each node's brpc link listens on its ``link_address``; with ``link_connect_address`` set
in the deployment config, its peers connect there instead, to a :class:`DelayRelay` that
forwards every byte to the node after ``one_way_delay_s`` and, with ``rate_bytes_per_s``,
no faster than that rate (a FIFO per direction: byte k leaves at
``max(arrival_k + delay, previous departure + size/rate)``). A round trip through two
relays therefore costs ``2 · one_way_delay_s`` more than a direct link.

Threads, not asyncio: ``time.sleep`` keeps sub-millisecond delays (epoll timeouts round
to milliseconds). Every connection direction has a reader thread (stamps chunks with their
departure time) and a writer thread (sleeps until it, sends). :attr:`DelayRelay.stats`
counts bytes and the achieved extra delay, so a measurement can state the delay it really
added. Loopback only: the relay binds the address it is given and connects to the node's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import socket
import threading
import time


@dataclasses.dataclass
class RelayStats:
    bytes_forwarded: int = 0
    chunks: int = 0
    late_s: float = 0.0  # summed lateness of chunks behind their departure time

    @property
    def mean_late_s(self) -> float:
        return self.late_s / self.chunks if self.chunks else 0.0


class DelayRelay:
    """Forwards TCP connections from ``listen`` to ``target`` (``(host, port)`` pairs)."""

    def __init__(self, listen: tuple, target: tuple, *, one_way_delay_s: float = 0.0, rate_bytes_per_s: float | None = None):
        self.listen, self.target = listen, target
        self.delay = float(one_way_delay_s)
        self.rate = rate_bytes_per_s
        self.stats = RelayStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server(listen, reuse_port=False)
        self._server.settimeout(0.2)
        self._threads: list = []
        self._sockets: list = []
        self._accept = threading.Thread(target=self._accept_loop, daemon=True, name=f"relay-{listen[1]}")
        self._accept.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            self._sockets += [client, upstream]
            self._pipe(client, upstream)
            self._pipe(upstream, client)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        chunks: queue.Queue = queue.Queue()

        def read():
            next_free = 0.0
            while True:
                try:
                    data = src.recv(1 << 16)
                except OSError:
                    data = b""
                now = time.perf_counter()
                if self.rate and data:
                    next_free = max(next_free, now) + len(data) / self.rate
                    depart = next_free + self.delay
                else:
                    depart = now + self.delay
                chunks.put((depart, data))
                if not data:
                    return

        def write():
            while True:
                depart, data = chunks.get()
                wait = depart - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):  # the peer may already be gone
                        dst.shutdown(socket.SHUT_WR)
                    return
                late = time.perf_counter() - depart
                try:
                    dst.sendall(data)
                except OSError:
                    return
                with self._lock:
                    self.stats.bytes_forwarded += len(data)
                    self.stats.chunks += 1
                    self.stats.late_s += max(late, 0.0)

        for fn in (read, write):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self._stop.set()
        for s in (self._server, *self._sockets):
            with contextlib.suppress(OSError):  # already closed by the other side
                s.close()


class Relays:
    """One :class:`DelayRelay` per node of ``config`` (from its ``link_connect_address`` to
    its ``link_address``); a context manager. Change ``delay`` / ``rate`` between runs with
    :meth:`set`."""

    def __init__(self, config, *, one_way_delay_s: float = 0.0, rate_bytes_per_s: float | None = None):
        self.relays = []
        for node in config.nodes:
            if not node.link_connect_address:
                raise ValueError(f"node {node.id} has no link_connect_address: nothing to relay")
            listen = _host_port(node.link_connect_address)
            self.relays.append(DelayRelay(listen, _host_port(node.link_address),
                                          one_way_delay_s=one_way_delay_s, rate_bytes_per_s=rate_bytes_per_s))

    def set(self, *, one_way_delay_s: float, rate_bytes_per_s: float | None) -> None:
        for r in self.relays:
            r.delay, r.rate = float(one_way_delay_s), rate_bytes_per_s

    def stats(self) -> RelayStats:
        total = RelayStats()
        for r in self.relays:
            total.bytes_forwarded += r.stats.bytes_forwarded
            total.chunks += r.stats.chunks
            total.late_s += r.stats.late_s
        return total

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for r in self.relays:
            r.close()


def _host_port(address: str) -> tuple:
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)
