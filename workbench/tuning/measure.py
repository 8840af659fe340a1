"""Timing one routine on one layer, in isolation, on the layer's real shapes.

The inputs are made in the routine's own layouts, the output buffers preallocated, ``prepare``
done (and timed) once; then warm-up runs and timed repeats.  This is the unit the profiler
builds on; benchmarks use it directly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import routines
from ..routines.adapts import physical_shape
from ..runtime.blas import blas_limit
from ..runtime.compiled import default_threads
from ..runtime.denormals import flushed
from ..runtime.pinning import caller_pinned


@dataclass
class Timing:
    """Samples in seconds; ``median`` is the cost, ``spread`` the interquartile range."""

    samples: list = field(default_factory=list)
    prepare_s: float = 0.0

    @property
    def median(self):
        return float(np.median(self.samples))

    @property
    def spread(self):
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)


@dataclass
class Latency(Timing):
    """Whole-model latency of one runner, the one statistic every report shows (the workbench's
    headline, Measure, Compare, ``workbench bench``): ``samples`` (seconds) of turns taken by
    :func:`time_interleaved`, the median and the interquartile range of them, with how and when
    they were taken.  ``side_by_side`` names the other runners timed in the same rounds."""

    method: str = ""
    measured_at: float = 0.0            # time.time() when the rounds ended
    side_by_side: tuple = ()

    @property
    def runs(self):
        return len(self.samples)

    def percentile(self, q):
        return float(np.percentile(self.samples, q))

    @property
    def median_ms(self):
        return self.median * 1e3

    @property
    def spread_ms(self):
        return self.spread * 1e3

    def describe(self, max_named=None):
        """``"20.41 ms (IQR 0.32, 30 runs; interleaved with greedy, onnxruntime; ...; at 12:03:05)"``.
        Past ``max_named`` other runners, the routine families among them (``cpu:...``) are
        counted instead of named."""
        peers = list(self.side_by_side)
        if max_named is not None and len(peers) > max_named:
            families = sum(p.startswith("cpu:") for p in peers)
            peers = [p for p in peers if not p.startswith("cpu:")] + ([f"{families} families"] if families else [])
            if len(peers) > 1:
                peers = [", ".join(peers[:-1]) + " and " + peers[-1]]
        beside = f"interleaved with {', '.join(peers)}" if peers else "alone"
        at = time.strftime("%H:%M:%S", time.localtime(self.measured_at)) if self.measured_at else "?"
        return f"{self.median_ms:.3f} ms (IQR {self.spread_ms:.3f}, {self.runs} runs; {beside}; {self.method}; at {at})"


#: How :func:`measure_latencies` takes its samples, shown with every latency.
LATENCY_METHOD = "median of turns: spinning threads settled, 30 ms idle, 1 untimed lead-in run, 1 timed run"


def measure_latencies(runners, runs, warmup=3, pause=0.03, lead_in=1):
    """``{name: Latency}`` of ``runners`` (zero-argument callables) timed side by side by
    :func:`time_interleaved`: the statistic every latency report uses."""
    samples = time_interleaved(runners, runs, warmup=warmup, pause=pause, lead_in=lead_in)
    at = time.time()
    method = (f"median of turns: spinning threads settled, {pause * 1e3:g} ms idle, {lead_in} untimed lead-in run(s), 1 timed run"
              if (pause, lead_in) != (0.03, 1) else LATENCY_METHOD)
    return {k: Latency(samples=list(s), method=method, measured_at=at, side_by_side=tuple(n for n in runners if n != k))
            for k, s in samples.items()}


def settle(max_s=0.3, step=0.01, busy=0.1):
    """Sleep until this process's threads stop using the CPU (at most ``max_s`` seconds): a
    ``step`` of sleep in which they used under ``busy`` of it ends the wait."""
    end = time.perf_counter() + max_s
    while time.perf_counter() < end:
        c0 = time.process_time()
        time.sleep(step)
        if time.process_time() - c0 < busy * step:
            return


def time_interleaved(runners, runs, warmup=3, pause=0.03, lead_in=1):
    """``{name: [seconds, ...]}``: ``warmup`` rounds, then ``runs`` rounds of every runner in
    turn, the order rotating from round to round.  A turn is: :func:`settle`, then ``pause``
    seconds idle, so that the previous runtime's worker threads have stopped spinning (ONNX
    Runtime's spin for 40-80 ms after a run, and took a core from the next runner's first
    milliseconds); ``lead_in`` untimed runs,
    which bring the runner's data back into the caches and wake the vCPUs the pause let sleep
    (on this VM their wake-up alone costs MobileNetV2 1 to 10 ms); one timed run.  The timed run
    so sees back-to-back inference, and machine noise hits every runner alike."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    samples = {k: [] for k in runners}
    order = list(runners)
    for r in range(runs):
        # The order rotates every round, so no runner always follows the same other one.
        for k in order[r % len(order):] + order[:r % len(order)]:
            run = runners[k]
            settle()
            time.sleep(pause)
            for _ in range(lead_in):
                run()
            t0 = time.perf_counter()
            run()
            samples[k].append(time.perf_counter() - t0)
    return samples


def layer_arrays(graph, layer, routine, seed=0):
    """Random inputs (in the routine's input formats) and output buffers for ``layer``."""
    rng = np.random.default_rng(seed)
    specs = graph.input_specs(layer)
    formats = routine.input_formats(layer, specs)
    args = []
    for i, (spec, fmt) in enumerate(zip(specs, formats)):
        if i in layer.consts:
            args.append(layer.consts[i])
        elif spec is None:
            args.append(None)
        elif np.dtype(spec.dtype).kind == "f":
            held = spec.with_format(fmt)
            args.append(rng.standard_normal(physical_shape(held)).astype(held.dtype))
        else:
            args.append(np.zeros(physical_shape(spec.with_format(fmt)), spec.dtype))
    outs = [np.empty(physical_shape(s.with_format(fmt)), fmt.dtype)
            for s, fmt in zip(layer.out_specs, routine.output_formats(layer))]
    return routine.profile_args(layer, args), outs


#: How :func:`time_routine` measures; part of the profile database's machine fingerprint, so
#: that records taken another way are not mixed in.
METHOD = "cold-weights-interleaved-2ms-ftz/9"


def _arrays_in(obj, found):
    """Every NumPy array reachable through dicts, lists and tuples of ``obj``, but a state's
    workspace."""
    if isinstance(obj, np.ndarray):
        found.append(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k != "workspace":
                _arrays_in(v, found)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _arrays_in(v, found)
    return found


def time_routine(graph, layer, routine, repeats=20, warmup=3, num_threads=None, min_time=0.0, cold_weights=True):
    """Time ``routine`` on ``layer``: :class:`Timing` with ``repeats`` samples (more until
    ``min_time`` seconds of samples are collected).

    With ``cold_weights`` (the default) the layer's constants and the routine's prepared state
    (packed or transformed weights) are evicted from the caches before every run,
    as they are inside a model, where the other layers' data has pushed them out since the last
    inference; the inputs stay warm, as the producer just wrote them, and so do the outputs and
    the workspace: the executor's few buffers are reused from layer to layer, so these land in
    memory that a recent layer touched.  (Timed hot, a routine with big transformed weights, such as Winograd
    F(4x4), looks up to 1.5x faster than it runs in the model; with its outputs evicted too,
    MobileNetV2's 1x1 expansions measured up to 1.7x slower than in the model.)
    """
    return time_routines(graph, layer, [routine], repeats, warmup, num_threads, min_time, cold_weights)[0]


def time_routines(graph, layer, candidates, repeats=20, warmup=3, num_threads=None, min_time=0.0,
                  cold_weights=True):
    """:func:`time_routine` for several routines of one layer, their samples taken in turn (one
    of each per round) so that the machine's drifts and bursts hit them all alike: timed one
    after the other, two routines measured 0.103 ms each where the model ran them in 0.18 and
    0.115 ms.  Each turn is an untimed run, the eviction of the routine's weights, and the timed
    run: its inputs and outputs are then as warm as the executor's buffers are in the model,
    whatever the other routines' turns touched (routines of the same layouts share them).
    Returns a :class:`Timing` per routine, in order."""
    threads = int(num_threads or default_threads())
    timings = [Timing(samples=[0.0] * repeats) if r.view_of_input is not None else None for r in candidates]
    runs = []   # (index, zero-argument run, evict)
    arrays = {}   # routines with the same layouts share inputs and outputs, which stay warm
    specs = graph.input_specs(layer)
    for i, routine in enumerate(candidates):
        if timings[i] is not None:   # the executor runs nothing for a view
            continue
        key = (tuple(routine.input_formats(layer, specs)), tuple(routine.output_formats(layer)))
        args, outs = arrays[key] if key in arrays else arrays.setdefault(key, layer_arrays(graph, layer, routine))
        start = time.perf_counter()
        state = routines.prepared(routine, layer, specs, threads, quant=graph.quant)
        timings[i] = Timing(prepare_s=time.perf_counter() - start)
        call = routine.bind(layer, state, args, outs)   # as the executor calls it
        run = ((lambda c=call: c(threads)) if call is not None
               else (lambda r=routine, st=state, a=args, o=outs: r.run(layer, st, a, o, threads)))
        runs.append((i, run, state, outs))
    # As the executor runs: one BLAS thread, the caller pinned, denormals flushed (workbench.runtime.blas,
    # .pinning, .denormals).
    with blas_limit(1), caller_pinned(threads), flushed():
        for _ in range(warmup):
            for _, run, _, _ in runs:
                run()
        # Collected after the warm-up: a first run may add work buffers to the state.
        evicts = [_evictor(_arrays_in([state, list(layer.consts.values())], []) if cold_weights else [])
                  for _, _, state, _ in runs]
        total = 0.0
        while runs and (len(timings[runs[0][0]].samples) < repeats or total < min_time):
            for (i, run, _, _), evict in zip(runs, evicts):
                if len(runs) > 1:
                    run()   # untimed: its inputs and outputs back in the caches after the others' turns
                evict()
                t0 = time.perf_counter()
                run()
                dt = time.perf_counter() - t0
                timings[i].samples.append(dt)
                total += dt / len(runs)
    return timings


def _evictor(arrays):
    from ..runtime import cpu
    k = cpu.kernel_module("cachectl") if arrays else None
    if k is None:
        return lambda: None
    return lambda: k.evict(arrays)


def matmul_gflops(n=1024, repeats=10, num_threads=None):
    """NumPy float32 matmul rate (GFLOP/s, median) under the same thread limit: the yardstick."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = a.T.copy()
    c = np.empty_like(a)
    with blas_limit(int(num_threads or default_threads())):
        np.matmul(a, b, out=c)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.matmul(a, b, out=c)
            samples.append(time.perf_counter() - t0)
    return 2 * n ** 3 / float(np.median(samples)) / 1e9
