"""The calling thread's CPU for the span of a run.

The kernels' pool pins worker k to the k-th CPU the process may use and leaves the first to the
caller (``kernels_pyx/wb_pool.h``).  :func:`caller_pinned` puts the thread that runs a model there
while it runs, and back where it was after: woken after an idle pause, threads that may go
anywhere were stacked on one CPU by the scheduler (the waker's) for the first part of a run.
Each pinned run reports the caller's wall-clock and CPU time to the pool, which moves the caller
(and its workers after it) to another CPU where another process keeps taking the caller's.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

from .._kernels import _pool


@contextmanager
def caller_pinned(threads):
    """Pin the calling thread to the pool's caller CPU while ``threads`` > 1 work on a run (a
    single-threaded run stays free to go to whichever CPU another process leaves idle)."""
    cpu = _pool.caller_cpu() if threads > 1 else -1
    if cpu < 0:
        yield
        return
    before = os.sched_getaffinity(0)
    # Timed from before the move: a caller pinned onto a CPU another process keeps busy waits
    # out that process's slice inside sched_setaffinity.
    wall, own = time.perf_counter_ns(), time.thread_time_ns()
    os.sched_setaffinity(0, {cpu})
    _pool.wake()
    try:
        yield
    finally:
        _pool.caller_report(time.perf_counter_ns() - wall, time.thread_time_ns() - own)
        os.sched_setaffinity(0, before)
