"""The per-layer plan: a sortable table (layer, op, routine and its profiled time, the adapts
counted for it, the runner-up routine and what switching to it would cost in routine time and
in adapts, pinned or chosen) and the DAG, its depths wrapped into a serpentine of bands, nodes
labelled and coloured by the chosen routine's dtype/layout, adapts marked on their edges, fused
ONNX nodes on hover, in a scrolling pane."""
from __future__ import annotations

import ipywidgets as w
import plotly.graph_objects as go

from .. import views
from .figures import finite, pane
from .html import table

COLUMNS = [("index", "#"), ("name", "layer"), ("op", "op"), ("routine", "routine"), ("precision", "precision"),
           ("sensitivity", "cosine alone"), ("ms", "ms"),
           ("adapt_ms", "adapt ms"), ("runner_up", "runner-up"), ("runner_up_ms", "runner-up ms"),
           ("routine_delta_ms", "Δ routine ms"), ("adapt_delta_ms", "Δ adapts ms"), ("switch_ms", "switching costs ms"),
           ("decision", "pinned/chosen"), ("output", "output"), ("adapts", "adapts before it")]
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]
#: Depth columns per band of the graph: about 70 px each in JupyterLab's default notebook width.
WRAP = 12
LANE_PX = 54


class PlanTable:
    def __init__(self, bench):
        self.bench = bench
        self.sort = w.Dropdown(options=list(views.PLAN_SORTS), value="layer order", description="sort by",
                               layout=w.Layout(width="320px"))
        self.sort.observe(lambda _: self.refresh(), names="value")
        self.note = w.HTML("<i>runner-up</i>: the fastest other routine; <i>Δ</i>: what it would add to the plan if "
                           "this layer alone switched to it, in routine time and in adapts (a faster runner-up lost on "
                           "its adapts)")
        self.html = w.HTML()
        self.html.add_class("wb-plan")
        self.widget = w.VBox([w.HBox([self.sort]), self.note, pane(self.html, "640px", "wb-plan-pane")])

    def rows(self):
        return views.plan_rows(self.bench.session, sort=self.sort.value)

    def refresh(self):
        self.html.value = table(self.rows(), COLUMNS, "wb-plan-table", marked=lambda r: r["name"] == self.bench.selected,
                                row_class=lambda r: "wb-pinned" if r["decision"] == "pinned" else None)


class PlanGraph:
    def __init__(self, bench):
        self.bench = bench
        self.figure = go.FigureWidget()
        self.figure.update_layout(title=dict(text="Plan graph, depth wrapped into bands (colour: dtype/layout; "
                                                  "red diamonds: adapts; outline: DP path)", font=dict(size=13)),
                                  margin=dict(l=10, r=10, t=60, b=10), meta="wb-plan-graph", hovermode="closest",
                                  legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0, font=dict(size=10)),
                                  xaxis=dict(showgrid=False, zeroline=False, showticklabels=False, fixedrange=True),
                                  yaxis=dict(showgrid=False, zeroline=False, showticklabels=False))
        self.pane = pane(self.figure, "700px", "wb-graph-pane")
        self.widget = self.pane

    def refresh(self):
        session = self.bench.session
        d = views.graph_drawing(session, wrap=WRAP)
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
            traces.append(go.Scatter(x=[d.x[i] for i in idx], y=[d.y[i] for i in idx], mode="markers+text", name=fmt,
                                     text=[d.labels[i] for i in idx], textposition="bottom center",
                                     textfont=dict(size=9, color="#333"), hovertext=[d.hover[i] for i in idx],
                                     hoverinfo="text", marker=dict(size=10, color=PALETTE[k % len(PALETTE)])))
        middles = [d.edge_path(p, c) for p, c, _, _ in d.adapts]
        traces.append(go.Scatter(x=[xs[len(xs) // 2] for xs, _ in middles], y=[ys[len(ys) // 2] for _, ys in middles],
                                 text=[f"adapt {label}<br>{ms:.4f} ms" for _, _, label, ms in d.adapts],
                                 mode="markers", name="adapt", hoverinfo="text",
                                 marker=dict(symbol="diamond", size=9, color="#d62728")))
        path = [n for n, _ in views.dp_path(session, self.bench.selected)] if self.bench.selected else []
        traces.append(go.Scatter(x=[pos[n][0] for n in path], y=[pos[n][1] for n in path], mode="markers",
                                 name="DP path", hoverinfo="skip",
                                 marker=dict(symbol="circle-open", size=17, color="#000", line=dict(width=2))))
        lanes = max(d.y) - min(d.y) + 1
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_traces(traces)
            self.figure.layout.xaxis.range = [-0.6, min(WRAP, max(d.x) + 1) - 0.4]
            self.figure.layout.yaxis.range = finite([min(d.y) - 0.7, max(d.y) + 0.9])
            self.figure.layout.height = 110 + LANE_PX * lanes
