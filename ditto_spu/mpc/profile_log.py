"""Communication of SPU segments, read from SPU's own profiler.

The Python binding of SPU's link exposes no byte counters, but with
``enable_pphlo_profile`` every ``Runtime.run`` logs, at its end, one block:
``[Profiling] SPU execution NAME completed ...``, one line per op
(``- pphlo.dot, executed N times, duration Ts, send bytes B recv bytes R, send actions
A, recv actions C``) and ``Link details: total send bytes ...``. We route SPU's log to a
file once per process and give every run a unique executable name (it carries the
party's rank), so each party reads back its own block.

Blocks of different parties that finish at the same instant may interleave line by
line; blocks are matched first-opened, first-closed, which is exact unless two blocks
interleave AND close in the opposite order (then per-op lines may be swapped between
the two parties; totals remain exact).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import threading
import time

_HEADER = re.compile(r"\[Profiling\] SPU execution (\S+) completed")
_OP = re.compile(
    r"- (\S+), executed (\d+) times, duration ([0-9.e+-]+)s, send bytes (\d+) recv bytes (\d+), "
    r"send actions (\d+), recv actions (\d+)"
)
_LINK = re.compile(
    r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), recv actions (\d+)"
)


@dataclasses.dataclass
class OpProfile:
    op: str
    count: int
    seconds: float
    bytes_sent: int
    bytes_received: int
    send_actions: int


@dataclasses.dataclass
class RunProfile:
    name: str
    ops: list
    bytes_sent: int = 0
    bytes_received: int = 0
    send_actions: int = 0
    recv_actions: int = 0


class ProfileLog:
    """Process-wide reader of SPU's profiling output (one log file per process)."""

    _instance = None
    _instance_lock = threading.Lock()

    def __init__(self, path: str):
        self.path = path
        self._offset = 0
        self._partial = ""
        self._open: list = []
        self._done: dict = {}
        self._lock = threading.Lock()

    @classmethod
    def get(cls) -> "ProfileLog":
        with cls._instance_lock:
            if cls._instance is None:
                from spu import libspu

                fd, path = tempfile.mkstemp(prefix="ditto-spu-", suffix=".log")
                os.close(fd)
                opts = libspu.logging.LogOptions()
                opts.enable_console_logger = False
                opts.system_log_path = path
                libspu.logging.setup_logging(opts)
                cls._instance = cls(path)
            return cls._instance

    def _consume(self) -> None:
        with open(self.path, "r", errors="replace") as f:
            f.seek(self._offset)
            data = f.read()
            self._offset = f.tell()
        if not data:
            return
        data = self._partial + data
        lines = data.split("\n")
        self._partial = lines.pop()
        for line in lines:
            m = _HEADER.search(line)
            if m:
                self._open.append(RunProfile(m.group(1), []))
                continue
            if not self._open:
                continue
            m = _OP.search(line)
            if m:
                self._open[0].ops.append(
                    OpProfile(
                        m.group(1),
                        int(m.group(2)),
                        float(m.group(3)),
                        int(m.group(4)),
                        int(m.group(5)),
                        int(m.group(6)),
                    )
                )
                continue
            m = _LINK.search(line)
            if m:
                run = self._open.pop(0)
                run.bytes_sent, run.bytes_received = int(m.group(1)), int(m.group(2))
                run.send_actions, run.recv_actions = int(m.group(3)), int(m.group(4))
                self._done[run.name] = run

    def take(self, name: str, timeout_s: float = 5.0) -> RunProfile | None:
        """The profile of the run called ``name`` (None if SPU did not log one in time)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                self._consume()
                if name in self._done:
                    return self._done.pop(name)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
