"""The plan's DAG laid out for drawing: graph inputs, layers and outputs placed by depth, long
chains wrapped into a serpentine of rows, short labels, the adapts on their edges."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import networkx as nx

from ... import routines
from ...tuning import search
from .base import ms, need_plan

#: Op names too long for a node label, and what the label says instead.
SHORT_OPS = {"GlobalAveragePool": "GAP", "GlobalMaxPool": "GMP", "ConvTranspose": "ConvT", "BatchNormalization": "BN",
             "ChannelAffine": "Affine", "AveragePool": "AvgPool", "HardSigmoid": "HSig", "HardSwish": "HSwish"}
LABEL_CHARS = 10


@dataclass
class GraphDrawing:
    """The DAG laid out: node positions (``x`` across, ``y`` up, in grid units), depths, short
    labels, hover texts, edges and the adapts on them.  With ``wrap`` columns, depth ``d`` sits
    in row band ``d // wrap``, bands alternating direction (a serpentine), so a chain of
    hundreds of layers stays ``wrap`` columns wide and each band continues right below the end
    of the one above."""

    nodes: list                                 # names, topological order
    x: list
    y: list
    format: list                                # "dtype/layout" of the chosen routine per node
    hover: list
    edges: list = field(default_factory=list)   # (producer, consumer, tensor)
    adapts: list = field(default_factory=list)  # (producer, consumer, "tensor: src->dst", ms)
    depth: list = field(default_factory=list)   # longest path from a graph input, per node
    labels: list = field(default_factory=list)  # short text per node: op and short name
    wrap: int = 0                               # columns per band; 0: one band

    def band(self, i):
        return self.depth[i] // self.wrap if self.wrap else 0

    def edge_path(self, producer, consumer, points=17):
        """``(xs, ys)`` of the edge's drawing: a straight segment between neighbouring columns or
        from one band into the next, an arc above the band for a skip connection within it (so
        it does not run through the layers it skips); the adapt of an edge sits at its middle
        point."""
        i, j = self.nodes.index(producer), self.nodes.index(consumer)
        x0, y0, x1, y1 = self.x[i], self.y[i], self.x[j], self.y[j]
        if abs(x1 - x0) <= 1 or self.band(i) != self.band(j):
            return [x0, (x0 + x1) / 2, x1], [y0, (y0 + y1) / 2, y1]
        rise = min(0.3 + 0.05 * abs(x1 - x0), 0.8)
        s = [k / (points - 1) for k in range(points)]
        return ([x0 + (x1 - x0) * t for t in s], [y0 + (y1 - y0) * t + rise * 4 * t * (1 - t) for t in s])


def node_label(name, op, prefix=""):
    """``"Conv<br>12"`` for ``p2o.Conv.12`` (the prefix every layer name shares dropped, the op
    not repeated), the name's tail kept where it is long: the label of a node on the graph."""
    rest = name[len(prefix):] if prefix and name.startswith(prefix) else name
    for sep in ".:_/":
        if rest.startswith(op + sep):
            rest = rest[len(op) + 1:]
            break
    if len(rest) > LABEL_CHARS:
        rest = "…" + rest[-(LABEL_CHARS - 1):].lstrip("._:/")
    return f"{SHORT_OPS.get(op, op[:8])}<br>{rest}" if rest else SHORT_OPS.get(op, op[:8])


def _name_prefix(names):
    """The prefix all ``names`` share, cut after its last separator (``"p2o."``)."""
    common = os.path.commonprefix(list(names)) if len(names) > 1 else ""
    cut = max(common.rfind(sep) for sep in "./:_")
    return common[:cut + 1] if cut >= 0 else ""


def graph_drawing(session, wrap=0):
    """The :class:`GraphDrawing` of the plan: graph inputs, layers and graph outputs, depth the
    longest path from an input, nodes of one depth spread over lanes below each other; with
    ``wrap`` > 0 the depths fold into bands of ``wrap`` columns (see :class:`GraphDrawing`).
    An edge whose tensor is adapted for its reader (or for the graph output's fixed format)
    carries the adapt.  Graph inputs and outputs are the nodes ``input:<tensor>`` and
    ``output:<tensor>``."""
    graph, plan = session.graph, need_plan(session)
    io = session.io_format
    dg = nx.DiGraph()
    edges, info = [], {}
    prefix = _name_prefix([layer.name for layer in graph])
    for t, spec in graph.inputs.items():
        info[f"input:{t}"] = (f"graph input/{io}", f"graph input {t}<br>{spec} ({io})", f"input<br>{t[-LABEL_CHARS:]}")
    for layer in graph:
        _, dtype, layout, _ = routines.parse_descriptor(plan.choice[layer.name])
        info[layer.name] = (f"{dtype}/{layout}", f"{layer.name} ({layer.op})<br>{plan.choice[layer.name]}<br>out "
                            + ", ".join(str(s) for s in layer.out_specs) + "<br>fused: " + (", ".join(layer.fused) or "-"),
                            node_label(layer.name, layer.op, prefix))
        for t in layer.activation_inputs:
            p = graph.producer(t)
            edges.append((p.name if p is not None else f"input:{t}", layer.name, t))
    for t in graph.outputs:
        p = graph.producer(t)
        if p is not None:
            info[f"output:{t}"] = (f"graph output/{io}", f"graph output {t}<br>{graph.spec(t)} ({io})",
                                   f"output<br>{t[-LABEL_CHARS:]}")
            edges.append((p.name, f"output:{t}", t))
    dg.add_nodes_from(info)
    dg.add_edges_from((p, c) for p, c, _ in edges)
    depth = {}
    for name in nx.topological_sort(dg):
        depth[name] = max((depth[p] + 1 for p in dg.predecessors(name)), default=0)
    lane, lanes = {}, {}
    for name in info:
        lane[name] = lanes.get(depth[name], 0)
        lanes[depth[name]] = lane[name] + 1
    x, y = [], []
    if wrap:
        # a band is as tall as its widest depth, plus one free lane for the arcs above it
        heights = {}
        for d, n in lanes.items():
            heights[d // wrap] = max(heights.get(d // wrap, 0), n)
        top, at = {}, 0
        for b in range(max(heights) + 1):
            top[b] = at
            at += heights.get(b, 0) + 1
    for name in info:
        d = depth[name]
        if wrap:
            b, col = divmod(d, wrap)
            x.append(wrap - 1 - col if b % 2 else col)
            y.append(-(top[b] + lane[name]))
        else:
            x.append(d)
            y.append(-lane[name])
    _, adapt_costs = session.costs() if session.profiled is not None else ({}, {})
    adapts = []
    for (tensor, src, dst), readers in plan.readers.items():
        for p, c, t in edges:
            if t == tensor and (c in readers or (c == f"output:{t}" and search.OUTPUT in readers)):
                adapts.append((p, c, f"{tensor}: {src}->{dst}", ms(adapt_costs.get((tensor, src, dst), math.nan))))
    names = list(info)
    return GraphDrawing(names, x, y, [v[0] for v in info.values()], [v[1] for v in info.values()], edges, adapts,
                        [depth[n] for n in names], [v[2] for v in info.values()], wrap)
