"""``workbench bench``: our tuned plan timed beside ONNX Runtime and OpenVINO, as
``onnxruntime_perf_test`` and ``benchmark_app`` time theirs.

Every latency is :func:`workbench.tuning.measure.measure_latencies`' statistic (interleaved rounds,
idle pause and lead-in run per turn), the one the workbench's Measure and Compare report too;
:func:`measure` is the single entry point both use.  On top of it: percentiles and throughput
(:mod:`.report`), the first run after an idle pause (:func:`first_after_idle`), the slowdown
under load from another process (:mod:`.load`), per-op-type totals (:mod:`.ops`), and each
peer's outputs against ours::

    from workbench import Session, zoo
    s = Session.from_onnx(zoo.build("tiny")); s.tune()
    result = bench(s, zoo.build("tiny"), peers=["onnxruntime"], runs=20)
    print(report.text(result))
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import WorkbenchError
from ..tuning.measure import measure_latencies, settle
from . import engines, load, ops, report  # noqa: F401  (the package's parts, for callers)
from .engines import BenchError, Engine, parse_peers  # noqa: F401


@dataclass
class BenchResult:
    """What one ``bench`` run measured; :mod:`.report` turns it into text, JSON and Markdown."""

    model: str
    batch: int
    threads: int
    inputs: dict                                   # input name -> shape (NCHW)
    io_format: str = "nchw"
    latency: dict = field(default_factory=dict)    # engine -> measure.Latency (quiet)
    idle_ms: float = 50.0
    idle: dict = field(default_factory=dict)       # engine -> [seconds of the first run after idle]
    loaded: dict = field(default_factory=dict)     # engine -> measure.Latency with a busy process beside
    predicted_s: float | None = None
    op_ms: dict = field(default_factory=dict)      # engine -> {op: {"ms", "count", "pct"}}
    op_runs: int = 0
    errors: dict = field(default_factory=dict)     # peer -> max relative error of its outputs vs ours
    settings: dict = field(default_factory=dict)   # engine -> its options
    versions: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    tuning: dict = field(default_factory=dict)     # how our plan was obtained


def measure(engine_list, runs, warmup=3):
    """``{name: Latency}`` of the engines, interleaved: the statistic every report shows."""
    return measure_latencies({e.name: e.run for e in engine_list}, runs, warmup=warmup)


def first_after_idle(engine_list, repeats, idle_s):
    """``{name: [seconds]}``: per repeat and engine (the order rotating), ``idle_s`` seconds of
    sleep, then one timed run, with no lead-in: what a camera pipeline's next frame pays.  The
    sleep starts once the previous engine's threads have stopped spinning (:func:`settle`)."""
    samples = {e.name: [] for e in engine_list}
    for r in range(repeats):
        for e in engine_list[r % len(engine_list):] + engine_list[:r % len(engine_list)]:
            settle()
            time.sleep(idle_s)
            t0 = time.perf_counter()
            e.run()
            samples[e.name].append(time.perf_counter() - t0)
    return samples


def machine_facts(threads):
    """The CPU, the profile database's fingerprint of this machine and thread count, the host."""
    import platform

    from ..runtime import cpu
    from ..tuning.profiledb import fingerprint
    return {"cpu": cpu.cpu_name(), "fingerprint": fingerprint(threads), "machine": platform.machine(),
            "system": platform.system(), "python": platform.python_version()}


def peer_engines(names, model, feeds, threads, notes):
    """The installed peers among ``names``; a note for each one that is not, or that cannot read
    the model (OpenVINO refuses a model whose If leaves a rank unknown)."""
    found = []
    for name in names:
        try:
            e = engines.peer(name, model, feeds, threads)
        except Exception as err:   # noqa: BLE001 - a peer's own failure is a fact of the report
            lines = [x.strip() for x in str(err).splitlines() if x.strip()]
            why = lines[-1][:200] if lines else ""   # OpenVINO's last line is its summary
            notes.append(f"{name} cannot run this model ({type(err).__name__}: {why}): no {name} row")
            continue
        if e is None:
            notes.append(f"{name} is not installed (pip install {name}): no {name} row")
        else:
            found.append(e)
    return found


def bench(session, model, peers=("onnxruntime",), runs=30, warmup=3, idle_ms=50.0, idle_runs=10,
          with_load=False, op_runs=5, name=None, on_busy=None, inputs=None):
    """Benchmark the session's plan beside ``peers`` run on ``model`` (the ONNX file the session
    came from, a path, bytes or ModelProto).

    Parameters
    ----------
    session : Session
        Tuned (or loaded from a tuned file).
    runs, warmup : int
        Interleaved rounds (and untimed warm-up rounds) of :func:`measure`.
    idle_ms, idle_runs : float, int
        The first-run-after-idle pass: ``idle_runs`` repeats of ``idle_ms`` sleep and one run.
    with_load : bool
        Measure every engine again with a busy-spinning process beside (:mod:`.load`).
    op_runs : int
        Timed runs behind the per-op-type totals (0 skips them).
    on_busy : callable, optional
        Called with the busy child's Popen while it runs (tests check it is gone afterwards).
    inputs : dict, optional
        Values some inputs take on every run, in every engine (a sample rate an If runs on); the
        others are random.  Not 4-D images (their layout would differ between engines).

    Returns
    -------
    BenchResult
    """
    from .._version import __version__
    from ..runtime.interpreter import random_inputs
    feeds = session.random_inputs()
    nchw = random_inputs(session.graph)   # the same values; the peers take NCHW whatever our io_format
    nchw.update(session.graph.meta.get("constant_inputs", {}))   # and the inputs fixed at load, as inputs
    for k, v in (inputs or {}).items():
        if k not in session.graph.inputs or len(session.graph.inputs[k].shape) == 4:
            raise WorkbenchError(f"bench: inputs= names {k!r}, not a non-image input of the model")
        feeds[k] = nchw[k] = np.asarray(v, session.graph.inputs[k].dtype).reshape(session.graph.inputs[k].shape)
    batch = int(next(iter(nchw.values())).shape[0]) if nchw and next(iter(nchw.values())).ndim else 1
    result = BenchResult(model=name or session.graph.name, batch=batch, threads=session.num_threads,
                         inputs={k: list(v.shape) for k, v in nchw.items()}, io_format=session.io_format,
                         idle_ms=float(idle_ms), op_runs=op_runs, machine=machine_facts(session.num_threads))
    import numpy
    result.versions = {"workbench": __version__, "numpy": numpy.__version__}
    ours = engines.ours(session, feeds)
    found = [ours] + peer_engines(list(peers), model, nchw, session.num_threads, result.notes)
    for e in found:
        result.settings[e.name] = e.settings
        result.versions[e.name if e is not ours else "workbench"] = e.version
    reference = ours.outputs()
    for e in found[1:]:
        result.errors[e.name] = engines.output_errors(reference, e.outputs())
    try:
        result.predicted_s = float(session.predicted_s)
    except Exception:   # noqa: BLE001 - a session without a plan has no prediction; the rest still holds
        result.notes.append("no prediction: the session has no plan")

    if session.plan is not None and session.low_precision:
        error = session.precision if session.precision is not None else session.precision_error()
        result.notes.append(f"the tuned plan computes in {', '.join(session.low_precision)}: {error}")
    result.latency = measure(found, runs, warmup)
    if idle_runs > 0:
        result.idle = first_after_idle(found, idle_runs, idle_ms / 1e3)
    if with_load:
        with load.busy_process() as proc:
            if on_busy:
                on_busy(proc)
            result.loaded = measure(found, runs, warmup)
    if op_runs > 0:
        result.op_ms["tuned"] = ops.our_op_times(session.compile(), feeds, op_runs)
        if any(e.name == "onnxruntime" for e in found):
            result.op_ms["onnxruntime"] = ops.ort_op_times(model, nchw, session.num_threads, op_runs)
    return result
