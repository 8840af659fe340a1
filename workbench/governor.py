"""Fewer threads while another process holds a core.

Every kernel splits its work over ``num_threads`` threads of the kernels' pool
(``kernels_pyx/wb_pool.h``).  The caller takes over the chunks of a thread that never turns up,
but a thread that took a chunk and is then descheduled (another process keeps its core busy)
holds the layer up for a scheduler slice of milliseconds.  With one thread fewer, no chunk
waits on a shared core.

:class:`ThreadGovernor` decides, run by run, from the run times alone (no system probes): it
keeps the fastest recent median at full threads as the quiet reference; when the last runs at
full threads are ``slow`` times slower than that, it tries one thread fewer, keeps it only if its
first runs take under ``keep`` times the slow full-thread runs, and while on fewer threads probes
full threads every ``probe_every`` runs, returning to them when they win again.  The threshold
sits above what an idle pause alone costs a run here (up to 1.3-1.5x: caches and sleeping
vCPUs) and below what a busy core costs (2.2-2.7x measured), so that pauses do not count as load.  A rejected try backs off
(doubling, up to ``max_backoff`` runs) so that a machine that is merely noisy does not pay for
tries over and over.  Pure logic: :meth:`choose` before a run, :meth:`record` after it.
"""
from __future__ import annotations

import threading
from collections import deque
from statistics import median


class ThreadGovernor:
    """Chooses each run's thread count between ``full`` and ``full - 1`` (see the module doc)."""

    def __init__(self, full, window=5, slow=1.8, probe_every=6, keep=0.85, backoff=16, max_backoff=256):
        self.full = int(full)
        self.reduced = max(1, self.full - 1)
        self.window, self.slow, self.probe_every, self.keep = int(window), float(slow), int(probe_every), float(keep)
        self.backoff, self.max_backoff = int(backoff), int(max_backoff)
        self.current = self.full
        self.quiet = float("inf")      # the fastest full-thread window median seen
        self.runs = {n: deque(maxlen=self.window) for n in {self.full, self.reduced}}
        self.loaded_full = None        # the full-thread median that started the current try
        self.wait = 0                  # runs before another try is allowed
        self.since_probe = 0
        self.switches = 0              # times the choice changed (for reports and tests)
        self._lock = threading.Lock()

    @property
    def active(self):
        return self.full > 1

    def choose(self):
        """Threads for the next run."""
        with self._lock:
            if self.current == self.reduced and self.reduced != self.full:
                self.since_probe += 1
                if self.since_probe >= self.probe_every:
                    self.since_probe = 0
                    return self.full   # a probe: are the cores free again?
            return self.current

    def record(self, threads, seconds):
        """Take the time of a run made with ``threads``."""
        if not self.active or threads not in self.runs:
            return
        with self._lock:
            runs = self.runs[threads]
            runs.append(float(seconds))
            full = self.runs[self.full]
            if threads == self.full and len(full) == self.window:
                self.quiet = min(self.quiet, median(full))
            if self.current == self.full:
                self.wait = max(0, self.wait - 1)
                if (self.wait == 0 and len(full) == self.window and median(full) > self.slow * self.quiet):
                    self.loaded_full = median(full)
                    self._switch(self.reduced)
                return
            reduced = self.runs[self.reduced]
            if threads == self.full:   # a probe
                if len(reduced) and seconds < 0.9 * median(reduced):
                    self._back_to_full(rejected=False)
                return
            if len(reduced) >= 3 and self.loaded_full is not None and median(reduced) >= self.keep * self.loaded_full:
                self._back_to_full(rejected=True)   # fewer threads did not help enough

    def _switch(self, threads):
        self.current = threads
        self.runs[threads].clear()
        self.since_probe = 0
        self.switches += 1

    def _back_to_full(self, rejected):
        self._switch(self.full)
        self.loaded_full = None
        if rejected:
            self.wait = self.backoff
            self.backoff = min(self.max_backoff, self.backoff * 2)
        else:
            self.backoff = max(16, self.backoff // 2)
