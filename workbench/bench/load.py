"""Load from another process: one child spinning on one core while the engines are timed again.

A static split of work over threads stalls at its barrier whenever one thread is descheduled,
so a model can slow down far more than the share of the core it lost; this is how
``workbench bench --load`` shows it, per engine, as loaded / quiet median.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

#: What the busy child runs: pure Python spinning, one core, no memory traffic to speak of.  It
#: stops by itself once its parent (argv[1]) is gone: a benchmark killed by a signal runs no
#: ``finally``, and an orphan spinning on for hours would load every later measurement.
BUSY_CODE = ("import os, sys\nparent = int(sys.argv[1])\n"
             "while os.getppid() == parent:\n    for _ in range(200000): pass")


@contextlib.contextmanager
def busy_process():
    """Run one busy-spinning child process for the duration of the ``with`` block; yields the
    :class:`subprocess.Popen`.  The child is killed and reaped however the block ends, and ends
    by itself if this process dies without ending it."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_CODE, str(os.getpid())], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def slowdowns(quiet, loaded):
    """``{engine: loaded median / quiet median}`` of two ``{engine: Latency}``."""
    return {name: loaded[name].median / quiet[name].median for name in loaded if name in quiet}
