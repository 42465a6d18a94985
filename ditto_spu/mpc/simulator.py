"""Three-party simulation: threads and in-memory links running the real PartyRuntime.

In the manner of ``spu.utils.simulation``: the simulator owns the options, secret-shares
the inputs (as their owners would), starts one thread per party with an in-memory SPU
link, runs the plan through :class:`~ditto_spu.mpc.runtime.PartyRuntime` — the same class the
node processes use — and reconstructs the outputs. If a party fails, ``run`` raises
:class:`~ditto_spu.errors.PartyError` for it at once; the other parties' threads stop
by themselves when their next receive times out (``recv_timeout_s``).
:meth:`Simulator.session` keeps the three parties up between runs (a party keeps the
inputs a run names, e.g. weights loaded once, as a node process would).
"""

from __future__ import annotations

import queue
import threading
import time

from ..errors import DittoError, PartyError
from ..plan import Plan
from ..shares import WORLD_SIZE, reconstruct, share_plan_inputs
from ..spu_config import SpuOptions
from .stats import RunStats


class _PartyThread(threading.Thread):
    def __init__(self, rank, target):
        super().__init__(name=f"ditto-party-{rank}", daemon=True)
        self.rank = rank
        self._target_fn = target
        self.result = None
        self.error = None
        self.failed_step = "setup"
        self.failed_at = float("inf")

    def run(self):
        try:
            self.result = self._target_fn(self)
        except BaseException as e:  # reported to the caller by Simulator.run
            self.error = e
            self.failed_at = time.monotonic()


class Simulator:
    """Runs Plans on three simulated parties.

    ``options`` are the SPU runtime options of every ring; ``checked`` turns on the
    kernels' range checks (debugging: it costs extra communication and reveals ranges).
    """

    def __init__(
        self,
        options: SpuOptions | None = None,
        *,
        checked: bool = False,
        recv_timeout_s: float = 120.0,
    ):
        self.options = options or SpuOptions()
        self.checked = checked
        self.recv_timeout_s = recv_timeout_s

    def share_inputs(self, plan: Plan, inputs: dict, rng=None) -> list:
        """Secret-share plaintext inputs into their rings: one dict of AShares per party."""
        return share_plan_inputs(plan, inputs, rng)

    def run_shares(self, plan: Plan, party_inputs: list) -> tuple[list, RunStats]:
        """Run ``plan`` on already shared inputs; return (per-party output shares, stats)."""
        from spu import libspu

        from .runtime import PartyRuntime

        plan.validate()
        _check_all_inputs(plan, party_inputs)
        desc = libspu.link.Desc()
        for rank in range(WORLD_SIZE):
            desc.add_party(f"party{rank}", f"thread_{rank}")
        desc.recv_timeout_ms = int(self.recv_timeout_s * 1000)

        def party_main(thread: _PartyThread):
            link = libspu.link.create_mem(desc, thread.rank)
            try:
                runtime = PartyRuntime(link, options=self.options, checked=self.checked)
                outputs, steps = runtime.run(plan, party_inputs[thread.rank])
                return outputs, steps, runtime.setup_stats.bytes_sent
            finally:
                _stop_link(link)

        threads = [_PartyThread(rank, party_main) for rank in range(WORLD_SIZE)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        _wait_all(threads, self.recv_timeout_s)
        wall = time.perf_counter() - t0
        results = [t.result for t in threads]
        stats = RunStats(wall, [r[1] for r in results], [r[2] for r in results])
        return [r[0] for r in results], stats

    def session(self) -> "SimulatedSession":
        """Three parties that stay up between runs (``with simulator.session() as s:``):
        links, SPU runtimes and what each party keeps (see :meth:`SimulatedSession.run_shares`)."""
        return SimulatedSession(self)

    def run(self, plan: Plan, inputs: dict, rng=None) -> tuple[dict, RunStats]:
        """Share ``inputs``, run ``plan``, reconstruct its outputs (float64 / int64)."""
        shares = self.share_inputs(plan, inputs, rng)
        outputs, stats = self.run_shares(plan, shares)
        plain = {}
        for b in plan.outputs:
            plain[b.name] = reconstruct([outputs[rank][b.name] for rank in range(WORLD_SIZE)])
        return plain, stats


class SimulatedSession:
    """Three party threads, each with its link and :class:`~.runtime.PartyRuntime`, serving
    one run after another: a party keeps the inputs a run names in ``keep`` (e.g. its weight
    shares, loaded into SPU once) for the next run. Each party's state stays in its own
    thread's runtime; a run hands each party only its own input shares.

    A failed run ends the session (a link's state is unknown after a failure): the error is
    raised for the party that failed of its own accord, and later runs raise too.
    """

    def __init__(self, simulator: Simulator):
        self.simulator = simulator
        self._jobs: list = [queue.Queue() for _ in range(WORLD_SIZE)]
        self._results: queue.Queue = queue.Queue()
        self._threads: list = []
        self._setup_bytes: list | None = None
        self._failed: BaseException | None = None

    def __enter__(self) -> "SimulatedSession":
        from spu import libspu

        desc = libspu.link.Desc()
        for rank in range(WORLD_SIZE):
            desc.add_party(f"party{rank}", f"thread_{rank}")
        desc.recv_timeout_ms = int(self.simulator.recv_timeout_s * 1000)
        for rank in range(WORLD_SIZE):
            t = threading.Thread(target=self._party, args=(rank, desc), name=f"ditto-session-party-{rank}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _party(self, rank: int, desc) -> None:
        from spu import libspu

        from .runtime import PartyRuntime

        link = libspu.link.create_mem(desc, rank)
        try:
            runtime = None
            while True:
                job = self._jobs[rank].get()
                if job is None:
                    return
                plan, inputs, keep = job
                try:
                    if runtime is None:
                        runtime = PartyRuntime(link, options=self.simulator.options, checked=self.simulator.checked)
                        setup = runtime.setup_stats.bytes_sent
                    else:
                        setup = 0
                    outputs, steps = runtime.run(plan, inputs, keep=keep)
                    self._results.put((rank, None, (outputs, steps, setup), time.monotonic()))
                except BaseException as e:  # reported by run_shares
                    self._results.put((rank, e, None, time.monotonic()))
                    return
        finally:
            _stop_link(link)

    def run_shares(self, plan: Plan, party_inputs: list, keep=frozenset()) -> tuple[list, RunStats]:
        """Run ``plan`` on the parties' input shares; each party keeps its inputs named in
        ``keep`` afterwards. Returns (per-party output shares, stats)."""
        if self._failed is not None:
            raise DittoError(f"this simulated session failed earlier ({self._failed}); start a new one")
        plan.validate()
        _check_all_inputs(plan, party_inputs)  # before any party starts: the session stays usable
        t0 = time.perf_counter()
        for rank in range(WORLD_SIZE):
            self._jobs[rank].put((plan, party_inputs[rank], frozenset(keep)))
        # No overall deadline: a long plan may run for many minutes. A party waiting on a dead
        # or stuck peer fails by itself within the link's receive timeout and reports it.
        timeout = self.simulator.recv_timeout_s
        results: dict = {}
        errors: list = []
        grace_end = None
        while len(results) + len(errors) < WORLD_SIZE:
            if grace_end is not None and time.monotonic() > grace_end:
                break
            try:
                rank, err, value, when = self._results.get(timeout=1.0)
            except queue.Empty:
                if not all(t.is_alive() for t in self._threads) and self._results.empty():
                    break  # a party thread ended without a report
                continue
            if err is None:
                results[rank] = value
            else:
                errors.append((when, rank, err))
                if grace_end is None:  # give the others their receive timeout to fail too
                    grace_end = time.monotonic() + 2 * timeout + 5
        if errors or len(results) < WORLD_SIZE:
            causes = _causes(errors, lambda e: e[2])
            if not causes:
                self._failed = DittoError(f"parties {sorted(set(range(WORLD_SIZE)) - set(results))} did not finish")
                raise self._failed
            _, rank, err = min(causes, key=lambda e: (e[0], e[1]))
            self._failed = err if isinstance(err, PartyError) else PartyError(rank, _step_of(err), err)
            raise self._failed
        wall = time.perf_counter() - t0
        ordered = [results[rank] for rank in range(WORLD_SIZE)]
        return [r[0] for r in ordered], RunStats(wall, [r[1] for r in ordered], [r[2] for r in ordered])

    def close(self) -> None:
        for q in self._jobs:
            q.put(None)
        for t in self._threads:
            t.join(self.simulator.recv_timeout_s + 5)

    def __exit__(self, *exc) -> None:
        self.close()


def _stop_link(link) -> None:
    """Close a party's link cleanly (it waits for the peers' goodbye, bounded by the
    receive timeout) so no link thread outlives the party; a peer already gone is fine."""
    try:
        link.stop_link()
    except RuntimeError:
        pass


def _wait_all(threads: list, timeout_s: float) -> None:
    """Join party threads; when one fails, give the others until their receive timeout to
    stop (they fail too: their peer is gone), then raise PartyError (never wait forever)."""
    deadline = time.monotonic() + 3 * timeout_s + 60
    while True:
        failed = [t for t in threads if not t.is_alive() and t.error is not None]
        if failed:
            grace = time.monotonic() + 2 * timeout_s + 5
            for t in threads:
                t.join(max(0.0, grace - time.monotonic()))
            failed = [t for t in threads if not t.is_alive() and t.error is not None]
            # the cause: the first party to fail of its own accord; the others failed
            # waiting for it (a receive timeout), which on a loaded machine can come first
            causes = _causes(failed, lambda t: t.error)
            first = min(causes, key=lambda t: (t.failed_at, t.rank))
            err = first.error
            if isinstance(err, PartyError):
                raise err
            raise PartyError(first.rank, _step_of(err), err) from err
        if all(not t.is_alive() for t in threads):
            return
        if time.monotonic() > deadline:
            raise DittoError(
                f"simulation did not finish within {3 * timeout_s + 60:.0f} s; parties still "
                f"running: {[t.rank for t in threads if t.is_alive()]}"
            )
        for t in threads:
            if t.is_alive():
                t.join(0.05)
                break


def _check_all_inputs(plan: Plan, party_inputs: list) -> None:
    from .runtime import check_party_inputs

    if len(party_inputs) != WORLD_SIZE:
        raise DittoError(f"expected input shares for {WORLD_SIZE} parties, got {len(party_inputs)}")
    for rank, inputs in enumerate(party_inputs):
        try:
            check_party_inputs(plan, inputs, rank)
        except DittoError as e:
            raise PartyError(rank, "inputs", e) from e


def _causes(failures: list, error_of) -> list:
    """The failures that can be the cause: a party's own checked error (a DittoError raised
    by our code) before a foreign one, and anything before a peer's receive timeout. A
    party whose peer stopped mid-exchange can fail with a C++ error (e.g. std::bad_cast) at
    about the same moment as the party that caused it; time order alone cannot tell them
    apart on a loaded machine."""

    def own(err) -> bool:
        return isinstance(err, DittoError) and not isinstance(getattr(err, "cause", None), str)

    for keep in (own, lambda e: not _is_peer_timeout(e)):
        picked = [f for f in failures if keep(error_of(f))]
        if picked:
            return picked
    return failures


def _is_peer_timeout(err: BaseException) -> bool:
    """Whether a party failed waiting for a peer (the link's receive timeout), not by
    itself."""
    return "Get data timeout" in str(err)


def _step_of(err: BaseException) -> str:
    text = str(err)
    if ", step " in text:
        return text.split(", step ", 1)[1].split(":", 1)[0]
    return "setup"
