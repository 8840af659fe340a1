"""The tuned plan measured beside the plans it should beat: every single routine family, the
greedy plan and ONNX Runtime, interleaved in one run, by the same code as ``workbench bench``
(:func:`workbench.bench.measure`, so machine noise hits them alike and every figure is the one
statistic of :func:`~workbench.tuning.measure.measure_latencies`).

ONNX Runtime (:func:`workbench.bench.engines.onnxruntime`, the benchmark's peer) runs the
session's fused graph written back to ONNX (the file ``workbench export`` writes, less our
annotations): the same computation as the source model, which ORT would fuse the same way.  It is
a peer, never a routine; without ``onnxruntime`` installed its row is left out and
:attr:`Comparison.notes` says so.  A short per-op-type pass (:mod:`workbench.bench.ops`) fills
:attr:`Comparison.op_ms`: ours from timed steps, ORT's from its profiler.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..bench import engines, measure, ops
from ..onnx_io.ort import relative_error
from ..runtime.compiled import CompiledModel


@dataclass
class Comparison:
    """Medians (ms) and interquartile ranges of each plan's interleaved runs, and the relative
    error of each plan's output against the tuned plan's."""

    measured_ms: dict = field(default_factory=dict)
    spread_ms: dict = field(default_factory=dict)
    error: dict = field(default_factory=dict)
    runs: int = 0
    notes: list = field(default_factory=list)
    latency: dict = field(default_factory=dict)   # name -> measure.Latency
    #: ``{"tuned": {op type: ms}, "onnxruntime": {op type: ms}}``: per-op-type totals per run
    #: (ORT's only when it is installed); adapts count as op ``"adapt"``.
    op_ms: dict = field(default_factory=dict)

    def speedup(self, name):
        """How many times faster the tuned plan ran than ``name``."""
        return self.measured_ms[name] / self.measured_ms["tuned"]


def compare(session, runs=10, families=True, greedy=True, onnxruntime=True, warmup=2, op_runs=3):
    """Measure the session's plan against the others (see the module docstring); returns a
    :class:`Comparison`, also kept as ``session.comparison``.  ``op_runs`` timed runs (0 skips)
    give the per-op-type totals."""
    from ..runtime.interpreter import random_inputs
    from ..onnx_io.write import export_graph
    plans = {}
    if greedy:
        plans["greedy"] = session.greedy_plan()
    if families:
        plans.update(session.family_plans())
    result = Comparison(runs=runs)
    feeds = session.random_inputs()
    nchw_feeds = random_inputs(session.graph)   # ORT's inputs: NCHW whatever the session's io_format
    tuned = session.compile()
    found = [engines.ours(session, feeds)]
    reference = next(iter(tuned.run(feeds).values()))
    for name, plan in plans.items():
        model = CompiledModel(session.graph, plan.choice, num_threads=session.num_threads, io_format=session.io_format,
                              flush_denormals=session.flush_denormals)
        found.append(engines.Engine(name, (lambda m: lambda: m.run(feeds))(model), None))
        result.error[name] = relative_error(next(iter(model.run(feeds).values())), reference)
    ort_model = None
    if onnxruntime:
        ort_model = export_graph(session.graph)
        ort = engines.onnxruntime(ort_model, nchw_feeds, session.num_threads)
        if ort is None:
            result.notes.append("onnxruntime is not installed: no ONNX Runtime row")
            ort_model = None
        else:
            found.append(ort)
            result.error["onnxruntime"] = engines.output_errors(found[0].outputs(), ort.outputs())
    latencies = measure(found, runs, warmup=warmup)
    for name, lat in latencies.items():
        result.measured_ms[name] = lat.median_ms
        result.spread_ms[name] = lat.spread_ms
    result.latency = latencies
    if op_runs > 0:
        result.op_ms["tuned"] = _ms(ops.our_op_times(tuned, feeds, op_runs))
        if ort_model is not None:
            result.op_ms["onnxruntime"] = _ms(ops.ort_op_times(ort_model, nchw_feeds, session.num_threads, op_runs))
    session.comparison = result
    session.measured = latencies["tuned"]   # the headline shows the same statistic Compare just took
    return result


def _ms(table):
    """``{op: ms}`` of an :func:`~workbench.bench.ops.op_table` (largest first)."""
    return {op: row["ms"] for op, row in table.items()}
