"""Fewer threads while another process holds a core (off by default: ``CompiledModel(...,
adaptive_threads=True)`` turns it on).

The pool's workers now answer a busy core themselves: a worker that finds its CPU taken spins
only briefly between jobs and sleeps, so the kernel's scheduler runs it as soon as it is woken
(``kernels_pyx/wb_pool.h``).  With that, full threads beat this governor under load: MobileNetV2
with a busy process beside it ran 4.4-6.8 ms with the governor and 4.2-5.2 without, ResNet-50
29.8 against 29.5-35, PP-OCRv6 rec 11.6-15.2 against 11.8-14.8 (same-process rounds).

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

A run that starts after an idle pause (``after_idle``: the executor passes whether the model sat
idle for :data:`IDLE_GAP_S` before it) pays for caches and threads the pause left cold, 1.2-1.9x
a warm run here, by itself.  Such runs are judged only against each other: each kind of run,
warm and after idle, has its own windows and its own quiet reference.  Judged together, a
benchmark's first-after-idle runs made the governor try fewer threads on a quiet machine, find
them no faster, and back off for hundreds of runs, so that the load that came next went
unanswered.
"""
from __future__ import annotations

import threading
from collections import deque
from statistics import median


#: The pause before a run (seconds) from which it counts as a run after idle.
IDLE_GAP_S = 0.01


class ThreadGovernor:
    """Chooses each run's thread count between ``full`` and ``full - 1`` (see the module doc)."""

    def __init__(self, full, window=5, slow=1.8, probe_every=6, keep=0.85, backoff=16, max_backoff=256):
        self.full = int(full)
        self.reduced = max(1, self.full - 1)
        self.window, self.slow, self.probe_every, self.keep = int(window), float(slow), int(probe_every), float(keep)
        self.backoff, self.max_backoff = int(backoff), int(max_backoff)
        self.current = self.full
        kinds = (False, True)          # warm runs, runs after an idle pause
        self.quiet_of = {k: float("inf") for k in kinds}   # the fastest full-thread window median seen
        self.runs = {(n, k): deque(maxlen=self.window) for n in {self.full, self.reduced} for k in kinds}
        self.loaded_full = None        # the full-thread median that started the current try
        self.loaded_kind = None        # and the kind of runs it was of
        self.wait = 0                  # runs before another try is allowed
        self.since_probe = 0
        self.switches = 0              # times the choice changed (for reports and tests)
        self._lock = threading.Lock()

    @property
    def quiet(self):
        """The quiet reference of warm runs."""
        return self.quiet_of[False]

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

    def record(self, threads, seconds, after_idle=False):
        """Take the time of a run made with ``threads`` (``after_idle``: it began after an idle
        pause; see the module doc)."""
        kind = bool(after_idle)
        if not self.active or (threads, kind) not in self.runs:
            return
        with self._lock:
            self.runs[threads, kind].append(float(seconds))
            full = self.runs[self.full, kind]
            if threads == self.full and len(full) == self.window:
                self.quiet_of[kind] = min(self.quiet_of[kind], median(full))
            if self.current == self.full:
                self.wait = max(0, self.wait - 1)
                if (self.wait == 0 and len(full) == self.window and median(full) > self.slow * self.quiet_of[kind]):
                    self.loaded_full, self.loaded_kind = median(full), kind
                    self._switch(self.reduced)
                return
            reduced = self.runs[self.reduced, kind]
            if threads == self.full:   # a probe
                if len(reduced) and seconds < 0.9 * median(reduced):
                    self._back_to_full(rejected=False)
                return
            if (kind == self.loaded_kind and len(reduced) >= 3 and self.loaded_full is not None
                    and median(reduced) >= self.keep * self.loaded_full):
                self._back_to_full(rejected=True)   # fewer threads did not help enough

    def _switch(self, threads):
        self.current = threads
        for kind in (False, True):
            self.runs[threads, kind].clear()
        self.since_probe = 0
        self.switches += 1

    def _back_to_full(self, rejected):
        self._switch(self.full)
        self.loaded_full = self.loaded_kind = None
        if rejected:
            self.wait = self.backoff
            self.backoff = min(self.max_backoff, self.backoff * 2)
        else:
            self.backoff = max(16, self.backoff // 2)
