"""BLAS thread limits that work from any thread, for the executor and the routines that call BLAS.

Every routine parallelises on the kernels' own thread pool (``num_threads``), so BLAS runs
single-threaded inside them: OpenBLAS's worker threads keep spinning after a threaded call and
take cores from the pool's (measured: ResNet-50 ~2x slower with 2 BLAS threads).  :class:`blas_limit`
saves, sets and restores the limit; :class:`SerialBlas` holds it at one thread while any of
several concurrent users (executor runs, routines calling BLAS) is inside, by a count, so that
nested save-and-restore from several threads never restores a limit another still relies on.
An executor run takes it only where one of its routines may call the BLAS (``Routine.uses_blas``).
"""
from __future__ import annotations

import threading

_libs = None


def libraries():
    """threadpoolctl's controllers of the loaded BLAS libraries (looked up once, after the kernels
    have loaded SciPy's)."""
    global _libs
    if _libs is None:
        from threadpoolctl import ThreadpoolController
        _libs = ThreadpoolController().select(user_api="blas").lib_controllers
    return _libs


def set_threads(lib, n):
    # threadpoolctl (3.8) lets only the first thread that limited OpenBLAS change it again and
    # silently ignores every other thread, so a run from a worker thread kept BLAS at full
    # threads inside our parallel kernels (slower, and a classifier GEMV rounded differently);
    # its unguarded setter changes the process-wide count from any thread.
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(n)


class blas_limit:
    """Context manager limiting BLAS threads to ``num_threads`` (restored on exit, or by
    :meth:`restore_original_limits`), from whichever thread calls it."""

    def __init__(self, num_threads=1):
        self._saved = [(lib, lib.get_num_threads()) for lib in libraries()]
        for lib, _ in self._saved:
            set_threads(lib, num_threads)

    def restore_original_limits(self):
        for lib, n in self._saved:
            set_threads(lib, n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore_original_limits()


class SerialBlas:
    """:class:`blas_limit` (1) held while any user is inside, by a count of users (see the
    module doc)."""

    _lock = threading.Lock()
    _users = 0
    _limit = None

    def __enter__(self):
        with SerialBlas._lock:
            if SerialBlas._users == 0:
                SerialBlas._limit = blas_limit(1)
            SerialBlas._users += 1
        return self

    def __exit__(self, *exc):
        with SerialBlas._lock:
            SerialBlas._users -= 1
            if SerialBlas._users == 0:
                SerialBlas._limit.restore_original_limits()
                SerialBlas._limit = None
