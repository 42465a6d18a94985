"""A node runs every query's SPU work on one long-lived thread (node.SpuWorker).

Regression test for the node SIGSEGV of the service (docs/deployment.md, "Known
problem"): each query used to run on a fresh thread that exited afterwards, and about one
query in 25 killed a node in libc's strlen on an address in a dead thread's stack top.
A real crash is too rare to provoke in a test; this pins the property that removed it:
every job of a node process runs on the same thread, which survives a failing job.
"""

import threading

from ditto_spu.distributed import node


def _record(out: list, fail: bool = False) -> None:
    out.append(threading.get_ident())
    if fail:
        raise RuntimeError("a job that fails")


def test_every_job_runs_on_the_same_long_lived_thread(capsys):
    worker = node.spu_worker()
    assert node.spu_worker() is worker
    seen: list = []
    for fail in (False, True, False):
        assert worker.submit(_record, seen, fail).wait(10)
    assert len(seen) == 3 and len(set(seen)) == 1
    assert seen[0] != threading.get_ident()
    assert "a job that fails" in capsys.readouterr().err


def test_queries_and_jobs_use_the_worker_not_new_threads():
    import inspect

    for fn in (node.NodeServer._execute, node._serve_job):
        src = inspect.getsource(fn)
        assert "spu_worker().submit(" in src and "threading.Thread(" not in src
