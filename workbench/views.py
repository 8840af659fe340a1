"""What the workbench shows, as plain data computed from a :class:`~workbench.session.Session`.

Every view of :mod:`workbench.widgets` draws one of these and nothing else: the heatmap of the
profile, the DP table of a layer and its optimal path, the per-layer plan table, the graph
drawing, the summary.  They need neither Jupyter nor plotly, so scripts and tests use them as
they are.  Times are in milliseconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from . import routines
from .session import NotTunedError


def _ms(seconds):
    return seconds * 1e3


def _plan(session):
    if session.plan is None:
        raise NotTunedError("no plan yet: call tune() first")
    return session.plan


# -- the profiling heatmap ----------------------------------------------------------------------
@dataclass
class Heatmap:
    """Layers (rows, topological order) x routines (columns): profiled median and spread, NaN
    where the routine does not apply; the column each row's plan uses and whether it is pinned."""

    layers: list
    ops: list
    routines: list
    ms: np.ndarray
    spread_ms: np.ndarray
    chosen: list          # column index per row (None: the plan uses a routine left unprofiled)
    pinned: list          # column of the routine each row is pinned to, None where not pinned
    hover: list           # per row, per column: text

    def cell(self, layer, routine):
        """``(row, column)`` of ``layer`` and ``routine``."""
        return self.layers.index(layer), self.routines.index(routine)


def _routine_order(descriptor):
    device, dtype, layout, algo = routines.parse_descriptor(descriptor)
    return (device, dtype, layout, algo == "reference", algo)


def heatmap(session):
    """The :class:`Heatmap` of the session's profile (and plan, when tuned)."""
    if session.profiled is None:
        raise NotTunedError("not profiled yet: call profile() or tune() first")
    graph, recs = session.graph, session.profiled.routine
    columns = sorted({d for layer in graph for d in recs.get(layer.name, {})}, key=_routine_order)
    col = {d: j for j, d in enumerate(columns)}
    n, m = len(graph), len(columns)
    ms, spread = np.full((n, m), np.nan), np.full((n, m), np.nan)
    hover = [[""] * m for _ in range(n)]
    chosen, pinned, names, ops = [], [], [], []
    choice = session.plan.choice if session.plan is not None else {}
    for i, layer in enumerate(graph):
        names.append(layer.name)
        ops.append(layer.op)
        shapes = " ".join(str(s) for s in graph.input_specs(layer) if s is not None)
        out = ", ".join(str(s) for s in layer.out_specs)
        for d, rec in recs.get(layer.name, {}).items():
            j = col[d]
            ms[i, j], spread[i, j] = _ms(rec.median), _ms(rec.spread)
            hover[i][j] = (f"{layer.name} ({layer.op})<br>in {shapes}<br>out {out}<br>{d}<br>"
                           f"median {ms[i, j]:.4f} ms, spread {spread[i, j]:.4f} ms ({len(rec.samples)} samples)")
        chosen.append(col.get(choice.get(layer.name)))
        pinned.append(col.get(session.pins.get(layer.name)))
    return Heatmap(names, ops, columns, ms, spread, chosen, pinned, hover)


# -- the DP table --------------------------------------------------------------------------------
def _out_format(session, layer, descriptor):
    r = routines.get(session.graph.layer(layer).op, descriptor)
    return r.output_layouts(session.graph.layer(layer))[0]


def dp_table(session, layer):
    """One dict per output format the DP reached at ``layer`` (name or index): the cost of every
    layer up to it in topological order with their adapts, the routine, each input's producer
    and the format it was written in, and whether the plan uses this format."""
    plan = _plan(session)
    name = session.layer(layer).name
    if not plan.table:
        raise NotTunedError(f"the plan was found by {plan.method}: there is no DP table")
    used = _out_format(session, name, plan.choice[name])
    rows = []
    for fmt, entry in sorted(plan.table[name].items(), key=lambda kv: kv[1].cost):
        preds = [f"{t} <- {p or 'graph input'} ({f})" for t, p, f in entry.predecessors]
        rows.append(dict(format=fmt, cost_ms=_ms(entry.cost), routine=entry.routine,
                         predecessors=preds, in_plan=fmt == used))
    return rows


def dp_path(session, layer):
    """``[(layer, format)]``: the optimal path into ``layer`` through the DP table, from the entry
    of the format the plan uses back along each chosen predecessor (every branch of a merge)."""
    plan = _plan(session)
    if not plan.table:
        return []
    name = session.layer(layer).name
    todo, seen, path = [(name, _out_format(session, name, plan.choice[name]))], set(), []
    while todo:
        node, fmt = todo.pop()
        if (node, fmt) in seen or fmt not in plan.table.get(node, {}):
            continue
        seen.add((node, fmt))
        path.append((node, fmt))
        todo.extend((p, f) for _, p, f in plan.table[node][fmt].predecessors if p is not None)
    order = {l.name: i for i, l in enumerate(session.graph)}
    return sorted(path, key=lambda nf: order[nf[0]])


# -- the per-layer plan ---------------------------------------------------------------------------
def plan_rows(session):
    """One dict per layer: index, name, op, output shape, chosen routine, its profiled time,
    the adapts inserted before it, ``"pinned"`` or ``"chosen"``, and the fused ONNX nodes."""
    rows = []
    for row, layer in zip(session.layer_rows(), session.graph):
        rows.append(dict(index=row["index"], name=row["name"], op=row["op"],
                         output=", ".join(str(s) for s in layer.out_specs), routine=row["routine"],
                         ms=row["cost_ms"], adapts=row["adapts"],
                         decision="pinned" if row["pinned"] else "chosen", fused=list(layer.fused)))
    return rows


@dataclass
class GraphDrawing:
    """The DAG laid out left to right: node positions and labels, edges, adapts on edges."""

    nodes: list                                 # names, topological order
    x: list
    y: list
    format: list                                # "dtype/layout" of the chosen routine per node
    hover: list
    edges: list = field(default_factory=list)   # (producer, consumer, tensor)
    adapts: list = field(default_factory=list)  # (producer, consumer, "tensor: src->dst", ms)

    def edge_path(self, producer, consumer, points=17):
        """``(xs, ys)`` of the edge's drawing: a straight segment between neighbouring depths,
        an arc above the row for a skip connection (so it does not run through the layers it
        skips); the adapt of an edge sits at its middle point."""
        i, j = self.nodes.index(producer), self.nodes.index(consumer)
        x0, y0, x1, y1 = self.x[i], self.y[i], self.x[j], self.y[j]
        if x1 - x0 <= 1:
            return [x0, (x0 + x1) / 2, x1], [y0, (y0 + y1) / 2, y1]
        rise = 0.3 + 0.05 * (x1 - x0)
        s = [k / (points - 1) for k in range(points)]
        return ([x0 + (x1 - x0) * t for t in s], [y0 + (y1 - y0) * t + rise * 4 * t * (1 - t) for t in s])


def graph_drawing(session):
    """The :class:`GraphDrawing` of the plan: graph inputs, layers and graph outputs, x the
    depth (longest path from an input), y spreading the nodes of one depth; an edge whose tensor
    is adapted for its reader (or for the graph output's fixed format) carries the adapt.
    Graph inputs and outputs are the nodes ``input:<tensor>`` and ``output:<tensor>``."""
    graph, plan = session.graph, _plan(session)
    io = session.io_format
    dg = nx.DiGraph()
    edges, info = [], {}
    for t, spec in graph.inputs.items():
        info[f"input:{t}"] = (f"graph input/{io}", f"graph input {t}<br>{spec} ({io})")
    for layer in graph:
        _, dtype, layout, _ = routines.parse_descriptor(plan.choice[layer.name])
        info[layer.name] = (f"{dtype}/{layout}", f"{layer.name} ({layer.op})<br>{plan.choice[layer.name]}<br>out "
                            + ", ".join(str(s) for s in layer.out_specs) + "<br>fused: " + (", ".join(layer.fused) or "-"))
        for t in layer.activation_inputs:
            p = graph.producer(t)
            edges.append((p.name if p is not None else f"input:{t}", layer.name, t))
    for t in graph.outputs:
        p = graph.producer(t)
        if p is not None:
            info[f"output:{t}"] = (f"graph output/{io}", f"graph output {t}<br>{graph.spec(t)} ({io})")
            edges.append((p.name, f"output:{t}", t))
    dg.add_nodes_from(info)
    dg.add_edges_from((p, c) for p, c, _ in edges)
    depth = {}
    for name in nx.topological_sort(dg):
        depth[name] = max((depth[p] + 1 for p in dg.predecessors(name)), default=0)
    lanes, x, y = {}, [], []
    for name in info:
        lane = lanes.get(depth[name], 0)
        lanes[depth[name]] = lane + 1
        x.append(depth[name])
        y.append(-lane)
    _, adapt_costs = session.costs() if session.profiled is not None else ({}, {})
    adapts = []
    for tensor, src, dst in plan.adapts:
        for p, c, t in edges:
            if t != tensor:
                continue
            if c.startswith("output:") and c not in graph:
                wants = [io]
            else:
                reader = graph.layer(c)
                wants = routines.get(reader.op, plan.choice[c]).input_layouts(reader, graph.input_specs(reader))
            if dst in wants:
                adapts.append((p, c, f"{tensor}: {src}->{dst}", _ms(adapt_costs.get((tensor, src, dst), math.nan))))
    return GraphDrawing(list(info), x, y, [f for f, _ in info.values()], [h for _, h in info.values()], edges, adapts)


# -- the summary ------------------------------------------------------------------------------------
def summary(session):
    """Predicted and measured latency of the plan, and each plan it is compared with: a dict with
    ``predicted_ms``, ``measured_ms`` (None until measured) and ``rows``, one per plan
    (tuned first): name, predicted ms, measured ms (None unless :meth:`Session.compare` ran),
    and the tuned plan's speed-up over it, measured where both are, else predicted."""
    plan = _plan(session)
    measured = session.measured.median * 1e3 if session.measured is not None else None
    comparison = session.comparison
    measured_of = dict(comparison.measured_ms) if comparison is not None else {}
    rows = [dict(name="tuned", predicted_ms=_ms(plan.cost), measured_ms=measured_of.get("tuned"), speedup=1.0)]
    others = {"greedy": session.greedy_plan(), **session.family_plans()}
    for name, other in others.items():
        rows.append(dict(name=name, predicted_ms=_ms(other.cost), measured_ms=measured_of.get(name)))
    if "onnxruntime" in measured_of:
        rows.append(dict(name="onnxruntime", predicted_ms=None, measured_ms=measured_of["onnxruntime"]))
    tuned_measured = rows[0]["measured_ms"]
    for row in rows[1:]:
        if row["measured_ms"] is not None and tuned_measured is not None:
            row["speedup"] = row["measured_ms"] / tuned_measured
        else:
            row["speedup"] = row["predicted_ms"] / rows[0]["predicted_ms"] if row["predicted_ms"] else None
    return dict(predicted_ms=_ms(plan.cost), measured_ms=measured, rows=rows)


def layer_times(session):
    """``[(layer, routine ms, adapts ms)]`` of the plan, from the profile; an adapt counts for the
    first layer that reads the adapted tensor, or for its producer when only the graph output does."""
    _, adapt_costs = session.costs()
    rows = session.layer_rows()
    graph, plan = session.graph, _plan(session)
    into = {r["name"]: 0.0 for r in rows}
    for tensor, src, dst in plan.adapts:
        readers = [l for l in graph.consumers(tensor)
                   if dst in routines.get(l.op, plan.choice[l.name]).input_layouts(l, graph.input_specs(l))]
        owner = readers[0] if readers else graph.producer(tensor)
        if owner is not None:
            into[owner.name] += _ms(adapt_costs.get((tensor, src, dst), 0.0))
    return [(r["name"], r["cost_ms"], into[r["name"]]) for r in rows]
