"""The shared thread pool (kernels_pyx/wb_pool.h): every chunk runs exactly once, on a slot below
the thread count, whoever calls and however many call at once."""
import os
import threading
import time

import numpy as np
import pytest

from workbench._kernels import _pool


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 1000, 20000])
@pytest.mark.parametrize("nt", [1, 2, 3, 8])
def test_every_chunk_runs_once_on_a_valid_slot(n, nt):
    slots, runs = _pool.probe(n, nt, spin=200)
    assert (runs == 1).all()
    assert ((slots >= 0) & (slots < max(1, min(nt, n)))).all()


def test_a_single_thread_runs_in_order_on_the_caller():
    slots, runs = _pool.probe(50, 1, spin=10)
    assert (slots == 0).all() and (runs == 1).all()


def test_workers_take_chunks_of_long_jobs():
    # Long chunks: the workers wake and take some (at least one slot besides the caller's, over
    # several tries; a busy machine may keep a worker away from any single job).
    seen = set()
    for _ in range(20):
        slots, runs = _pool.probe(64, 2, spin=200_000)
        assert (runs == 1).all()
        seen |= set(slots.tolist())
        if seen == {0, 1}:
            break
    assert seen == {0, 1}


def test_concurrent_callers_share_the_pool_safely():
    # One caller holds the workers; the others run their chunks themselves.  All must complete.
    errors = []

    def call(k):
        try:
            for i in range(30):
                slots, runs = _pool.probe(200 + k, 2, spin=2000)
                if not (runs == 1).all() or slots.min() < 0 or slots.max() > 1:
                    errors.append((k, i))
        except Exception as e:   # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_forked_child_gets_workers_of_its_own():
    _pool.probe(64, 2, spin=200_000)   # the parent's workers exist
    pid = os.fork()
    if pid == 0:   # the child: its chunks must all run, on workers it starts itself
        code = 1
        try:
            seen = set()
            for _ in range(20):
                slots, runs = _pool.probe(64, 2, spin=200_000)
                if not (runs == 1).all():
                    break
                seen |= set(slots.tolist())
                if seen == {0, 1}:
                    code = 0
                    break
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_workers_that_sleep_after_every_job_still_serve_and_are_woken():
    # No spinning: every job finds the workers asleep on the futex and must wake them (or run
    # their chunks itself); over many jobs both slots run chunks, and every chunk runs once.
    old = _pool.set_spin_ns(0)
    try:
        seen = set()
        for _ in range(200):
            slots, runs = _pool.probe(32, 2, spin=50_000)
            assert (runs == 1).all()
            seen |= set(slots.tolist())
        assert seen == {0, 1}
    finally:
        _pool.set_spin_ns(old)


def test_workers_notice_when_another_process_takes_their_cores():
    # Two busy processes, one for each CPU: the caller and the worker each lose their CPU for
    # scheduler slices in the middle of long chunks, which their clocks show (CPU time behind
    # wall time), and the pool switches its workers to the short spin.
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    from workbench.bench.load import busy_process
    with busy_process(), busy_process():
        deadline = time.monotonic() + 20
        while not _pool.contended() and time.monotonic() < deadline:
            slots, runs = _pool.probe(16, 2, spin=2_000_000)
            assert (runs == 1).all()
        assert _pool.contended()
