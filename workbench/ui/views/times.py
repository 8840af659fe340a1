"""Where the time goes: per layer (routine and the adapts it needs), per op type, the slowest
layers.  All predicted from the profile; the op breakdown sets the measured per-op totals of
:meth:`Session.compare` beside them when it took them."""
from __future__ import annotations

from collections import defaultdict

from ...tuning import search
from .base import missing, ms, need_plan


def layer_times(session):
    """``[(layer, routine ms, adapts ms)]`` of the plan, from the profile; an adapt counts for the
    first layer that reads the adapted tensor, or for its producer when only the graph output does."""
    _, adapt_costs = session.costs()
    rows = session.layer_rows()
    graph, plan = session.graph, need_plan(session)
    into = {r["name"]: 0.0 for r in rows}
    for (tensor, src, dst), readers in plan.readers.items():
        layers = [r for r in readers if r != search.OUTPUT]
        owner = layers[0] if layers else getattr(graph.producer(tensor), "name", None)
        if owner is not None:
            into[owner] += ms(adapt_costs.get((tensor, src, dst), 0.0))
    return [(r["name"], r["cost_ms"], into[r["name"]]) for r in rows]


def op_breakdown(session):
    """One dict per op type, slowest first: ``op``, ``layers`` (how many), ``routine_ms`` and
    ``adapt_ms`` (summed over its layers as :func:`layer_times` counts them), ``total_ms``,
    ``percent`` of the plan's predicted cost; ``measured_ms`` and ``ort_ms``: the per-op totals
    :meth:`Session.compare` measured for the tuned plan and for ONNX Runtime
    (``Comparison.op_ms``), None where it has none.  An op type only one side reports (ORT's
    fused kernels, our ``"adapt"`` steps) gets a row of its own with nothing predicted."""
    plan = need_plan(session)
    ops = {layer.name: layer.op for layer in session.graph}
    acc = defaultdict(lambda: [0, 0.0, 0.0])
    for name, routine_ms, adapt_ms in layer_times(session):
        a = acc[ops[name]]
        a[0] += 1
        a[1] += 0.0 if missing(routine_ms) else routine_ms
        a[2] += adapt_ms
    measured = getattr(session.comparison, "op_ms", None) or {}
    ours, ort = measured.get("tuned", {}), measured.get("onnxruntime", {})
    total = ms(plan.cost)
    rows = [dict(op=op, layers=n, routine_ms=r, adapt_ms=a, total_ms=r + a, percent=100 * (r + a) / total if total else None,
                 measured_ms=ours.get(op), ort_ms=ort.get(op)) for op, (n, r, a) in acc.items()]
    for op in sorted((set(ours) | set(ort)) - set(acc)):
        rows.append(dict(op=op, layers=None, routine_ms=None, adapt_ms=None, total_ms=None, percent=None,
                         measured_ms=ours.get(op), ort_ms=ort.get(op)))
    return sorted(rows, key=lambda r: (r["total_ms"] is None, -(r["total_ms"] or 0.0),
                                       -max(r["measured_ms"] or 0.0, r["ort_ms"] or 0.0), r["op"]))


def top_layers(session, n=10):
    """The ``n`` layers that cost most with the adapts they need (:func:`layer_times`), slowest
    first: index, name, op, routine, ``ms``, ``adapt_ms``, ``total_ms`` and ``percent`` of the
    plan's predicted cost."""
    plan = need_plan(session)
    total = ms(plan.cost)
    rows = []
    for row, (_, routine_ms, adapt_ms) in zip(session.layer_rows(), layer_times(session)):
        t = (0.0 if missing(routine_ms) else routine_ms) + adapt_ms
        rows.append(dict(index=row["index"], name=row["name"], op=row["op"], routine=row["routine"], ms=routine_ms,
                         adapt_ms=adapt_ms, total_ms=t, percent=100 * t / total if total else None))
    return sorted(rows, key=lambda r: (-r["total_ms"], r["index"]))[:n]
