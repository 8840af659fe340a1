"""Per-op-type totals: where an inference's time goes, by op type, for ours and for ONNX Runtime.

Ours come from :meth:`CompiledModel.run_timed` (every step timed; adapts count as op
``"adapt"``): the median of each step over the runs, then summed per op type, so that one slow
run of one step does not inflate its op's total.  ONNX Runtime's come from its own profiler: the
trace's ``cat == "Node"`` events, their ``dur`` (microseconds) summed per node and run, the
median per node over the runs, then summed per ``args["op_name"]``.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict

import numpy as np


def step_op(step):
    """The op type a step counts under: its layer's op, or ``"adapt"``."""
    return "adapt" if step.kind == "adapt" else step.layer.op


def op_table(per_item, item_op):
    """``{op: {"ms", "count", "pct"}}`` from ``{item: ms}`` (a step or node and its median time)
    and ``{item: op}``, sorted by time, largest first."""
    totals, counts = defaultdict(float), defaultdict(int)
    for item, ms in per_item.items():
        totals[item_op[item]] += ms
        counts[item_op[item]] += 1
    whole = sum(totals.values())
    order = sorted(totals, key=lambda op: (-totals[op], op))
    return {op: {"ms": totals[op], "count": counts[op], "pct": 100 * totals[op] / whole if whole else 0.0}
            for op in order}


def our_step_times(model, feeds, runs=5):
    """``(steps, times)``: the compiled model's steps and an array (runs x steps) of their
    durations in ms, from ``runs`` timed runs after one warm run."""
    model.run(feeds)
    rows = []
    for _ in range(max(1, runs)):
        _, timed = model.run_timed(feeds)
        rows.append([d * 1e3 for _, _, d in timed])
    return list(model.steps), np.array(rows)


def our_op_times(model, feeds, runs=5):
    """Per-op-type totals (ms per run) of ``model`` (a :class:`CompiledModel`); see the module."""
    steps, times = our_step_times(model, feeds, runs)
    medians = np.median(times, axis=0)
    return op_table({i: float(m) for i, m in enumerate(medians)}, {i: step_op(s) for i, s in enumerate(steps)})


def node_times(events, skip_runs=0):
    """``({node: [ms per run]}, {node: op type})`` from an ONNX Runtime profile trace (a list of
    events).  Node events are assigned to the ``model_run`` event they fall in (the first
    ``skip_runs`` runs are dropped: warm-up); a trace without ``model_run`` events counts as one
    run."""
    runs = sorted((e["ts"], e["ts"] + e.get("dur", 0)) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    per = defaultdict(lambda: defaultdict(float))   # node -> run index -> ms
    op_of = {}
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") != "Node" or "op_name" not in args:
            continue
        ts = e.get("ts", 0)
        run = next((i for i, (a, b) in enumerate(runs) if a <= ts <= b), None) if runs else 0
        if run is None or run < skip_runs:
            continue
        node = e["name"]
        for suffix in ("_kernel_time", "_fence_before", "_fence_after"):
            if node.endswith(suffix):
                node = node[:-len(suffix)]
        per[node][run] += e.get("dur", 0) / 1e3
        op_of[node] = args["op_name"]
    kept = range(skip_runs, len(runs)) if runs else range(1)
    # A node absent from a run (never, in practice) counts 0 there, so every list has one entry per run.
    return {n: [r.get(i, 0.0) for i in kept] for n, r in per.items()}, op_of


def ort_op_table(events, skip_runs=0):
    """Per-op-type totals (ms per run) from an ONNX Runtime profile trace; see the module."""
    times, op_of = node_times(events, skip_runs)
    return op_table({n: float(np.median(t)) for n, t in times.items()}, op_of)


def ort_profile(model, feeds, threads, runs=5):
    """Run ``model`` ``runs`` times (after one warm-up run, dropped) under ONNX Runtime's
    profiler; returns the trace's events, or None when onnxruntime is not installed."""
    from .engines import ort_session
    with tempfile.TemporaryDirectory() as tmp:
        sess = ort_session(model, threads, profile_prefix=os.path.join(tmp, "ort_profile"))
        if sess is None:
            return None
        names = [o.name for o in sess.get_outputs()]
        for _ in range(1 + max(1, runs)):
            sess.run(names, feeds)
        path = sess.end_profiling()
        with open(path) as f:
            return json.load(f)


def ort_op_times(model, feeds, threads, runs=5):
    """Per-op-type totals (ms per run) of ONNX Runtime on ``model``, or None without onnxruntime."""
    events = ort_profile(model, feeds, threads, runs)
    return None if events is None else ort_op_table(events, skip_runs=1)


def side_by_side(ours, ort=None):
    """Rows ``(op, ours ms, ours count, ORT ms, ORT count)`` over the ops of either, by the larger
    time; a missing side is None."""
    ort = ort or {}
    ops = sorted(set(ours) | set(ort), key=lambda op: (-max(ours.get(op, {}).get("ms", 0), ort.get(op, {}).get("ms", 0)), op))
    return [(op, ours[op]["ms"] if op in ours else None, ours[op]["count"] if op in ours else None,
             ort[op]["ms"] if op in ort else None, ort[op]["count"] if op in ort else None) for op in ops]
