"""The tuned plan measured beside the plans it should beat: every single routine family, the
greedy plan and ONNX Runtime, interleaved in one run (:func:`~workbench.measure.time_interleaved`),
so machine noise hits them alike.

ONNX Runtime runs the session's fused graph written back to ONNX (the file ``workbench
export`` writes, less our annotations): the same computation as the source model, which ORT
would fuse the same way.  It is a peer, never a routine; without ``onnxruntime`` installed its
row is left out and :attr:`Comparison.notes` says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .check import relative_error
from .compiled import CompiledModel
from .measure import measure_latencies


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

    def speedup(self, name):
        """How many times faster the tuned plan ran than ``name``."""
        return self.measured_ms[name] / self.measured_ms["tuned"]


def onnxruntime_runner(graph, num_threads):
    """A callable running ``graph`` (fused, exported to ONNX) in ONNX Runtime, or None when it
    is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from .onnx_export import export_graph
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(export_graph(graph).SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds)


def compare(session, runs=10, families=True, greedy=True, onnxruntime=True, warmup=2):
    """Measure the session's plan against the others (see the module docstring); returns a
    :class:`Comparison`, also kept as ``session.comparison``."""
    from .execute import random_inputs
    plans = {}
    if greedy:
        plans["greedy"] = session.greedy_plan()
    if families:
        plans.update(session.family_plans())
    result = Comparison(runs=runs)
    feeds = session.random_inputs()
    nchw_feeds = random_inputs(session.graph)   # ORT's inputs: NCHW whatever the session's io_format
    tuned = session.compile()
    runners = {"tuned": lambda: tuned.run(feeds)}
    reference = next(iter(tuned.run(feeds).values()))
    for name, plan in plans.items():
        model = CompiledModel(session.graph, plan.choice, num_threads=session.num_threads, io_format=session.io_format)
        runners[name] = (lambda m: lambda: m.run(feeds))(model)
        result.error[name] = relative_error(next(iter(model.run(feeds).values())), reference)
    if onnxruntime:
        ort_run = onnxruntime_runner(session.graph, session.num_threads)
        if ort_run is None:
            result.notes.append("onnxruntime is not installed: no ONNX Runtime row")
        else:
            runners["onnxruntime"] = lambda: ort_run(nchw_feeds)
    latencies = measure_latencies(runners, runs, warmup=warmup)
    for name, lat in latencies.items():
        result.measured_ms[name] = lat.median_ms
        result.spread_ms[name] = lat.spread_ms
    result.latency = latencies
    session.comparison = result
    session.measured = latencies["tuned"]   # the headline shows the same statistic Compare just took
    return result
