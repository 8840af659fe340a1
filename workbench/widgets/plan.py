"""The per-layer plan: a table (layer, op, output shape, routine, profiled time, adapts inserted
before the layer, pinned or chosen) and the DAG drawn left to right, nodes coloured by the
chosen routine's dtype/layout, adapts marked on their edges, fused ONNX nodes on hover."""
from __future__ import annotations

import ipywidgets as w
import plotly.graph_objects as go

from .. import views
from .html import table

COLUMNS = [("index", "#"), ("name", "layer"), ("op", "op"), ("output", "output"), ("routine", "routine"),
           ("ms", "ms"), ("adapts", "adapts before it"), ("decision", "pinned/chosen")]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]


class PlanTable:
    def __init__(self, bench):
        self.bench = bench
        self.widget = w.HTML(layout=w.Layout(max_height="640px", overflow="auto"))
        self.widget.add_class("wb-plan")

    def refresh(self):
        rows = views.plan_rows(self.bench.session)
        self.widget.value = table(rows, COLUMNS, "wb-plan-table", marked=lambda r: r["name"] == self.bench.selected,
                                  row_class=lambda r: "wb-pinned" if r["decision"] == "pinned" else None)


class PlanGraph:
    def __init__(self, bench):
        self.bench = bench
        self.figure = go.FigureWidget()
        self.figure.update_layout(title="Plan graph (colour: dtype/layout; red diamonds: adapts; outline: DP path)",
                                  margin=dict(l=10, r=10, t=40, b=10), meta="wb-plan-graph",
                                  xaxis=dict(showgrid=False, zeroline=False, showticklabels=False),
                                  yaxis=dict(showgrid=False, zeroline=False, showticklabels=False))
        self.widget = self.figure

    def refresh(self):
        session = self.bench.session
        d = views.graph_drawing(session)
        pos = {n: (x, y) for n, x, y in zip(d.nodes, d.x, d.y)}
        traces = []
        ex, ey = [], []
        for p, c, _ in d.edges:
            xs, ys = d.edge_path(p, c)
            ex += xs + [None]
            ey += ys + [None]
        traces.append(go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="#bbb", width=1), hoverinfo="skip",
                                 name="edges", showlegend=False))
        for k, fmt in enumerate(sorted(set(d.format))):
            idx = [i for i, f in enumerate(d.format) if f == fmt]
            traces.append(go.Scatter(x=[d.x[i] for i in idx], y=[d.y[i] for i in idx], mode="markers", name=fmt,
                                     text=[d.hover[i] for i in idx], hoverinfo="text",
                                     marker=dict(size=9, color=PALETTE[k % len(PALETTE)])))
        middles = [d.edge_path(p, c) for p, c, _, _ in d.adapts]
        traces.append(go.Scatter(x=[xs[len(xs) // 2] for xs, _ in middles], y=[ys[len(ys) // 2] for _, ys in middles],
                                 text=[f"adapt {label}<br>{ms:.4f} ms" for _, _, label, ms in d.adapts],
                                 mode="markers", name="adapt", hoverinfo="text",
                                 marker=dict(symbol="diamond", size=9, color="#d62728")))
        path = [n for n, _ in views.dp_path(session, self.bench.selected)] if self.bench.selected else []
        traces.append(go.Scatter(x=[pos[n][0] for n in path], y=[pos[n][1] for n in path], mode="markers",
                                 name="DP path", hoverinfo="skip",
                                 marker=dict(symbol="circle-open", size=15, color="#000", line=dict(width=2))))
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(traces)
            self.figure.layout.width = max(700, 200 + 14 * (max(d.x) + 1))
            self.figure.layout.height = 220 + 70 * (max(d.y) - min(d.y))
