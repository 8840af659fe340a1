"""The summary: the headline (predicted latency, and the measured one as every report gives it:
median, IQR, runs, how and when), the tuned plan against every single routine family, the
greedy plan and ONNX Runtime (measured side by side by :meth:`Session.compare`, else
predicted), where the time goes per op type (ours beside ONNX Runtime's once compared) and in
the ten slowest layers, and a bar chart of the time per layer."""
from __future__ import annotations

import html

import ipywidgets as w
import plotly.graph_objects as go

from .. import views
from .figures import finite, pane
from .html import table

COLUMNS = [("name", "plan"), ("predicted_ms", "predicted ms"), ("measured_ms", "measured ms (median)"),
           ("spread_ms", "IQR ms"), ("runs", "runs"), ("speedup", "tuned is x faster")]
OP_COLUMNS = [("op", "op"), ("layers", "layers"), ("routine_ms", "routine ms"), ("adapt_ms", "adapt ms"),
              ("total_ms", "predicted ms"), ("percent", "%"), ("measured_ms", "measured ours ms"),
              ("ort_ms", "measured ORT ms")]
TOP_COLUMNS = [("index", "#"), ("name", "layer"), ("op", "op"), ("routine", "routine"), ("ms", "routine ms"),
               ("adapt_ms", "adapt ms"), ("total_ms", "total ms"), ("percent", "% of plan")]
TOP = 10


def _section(title, body):
    return w.VBox([w.HTML(f"<b>{html.escape(title)}</b>"), body], layout=w.Layout(margin="0 24px 12px 0"))


class SummaryView:
    def __init__(self, bench):
        self.bench = bench
        self.headline = w.HTML()
        self.headline.add_class("wb-summary")
        self.table = w.HTML()
        self.table.add_class("wb-summary-plans")
        self.ops = w.HTML()
        self.ops.add_class("wb-op-breakdown")
        self.top = w.HTML()
        self.top.add_class("wb-top-layers")
        self.bars = go.FigureWidget()
        for name in ("routine", "adapts"):
            self.bars.add_trace(go.Bar(name=name, hovertemplate="%{customdata}<br>%{y:.4f} ms<extra>" + name + "</extra>"))
        self.bars.update_layout(barmode="stack", title="Profiled time per layer, graph order (hover: layer, op, routine)",
                                height=400, margin=dict(l=10, r=10, t=40, b=10), meta="wb-layer-times",
                                legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"),
                                xaxis=dict(type="category", tickangle=-60, tickfont=dict(size=8), title="layer"),
                                yaxis=dict(title="ms"))
        wrap = w.Layout(flex_flow="row wrap", align_items="flex-start")
        self.widget = w.VBox([   # the headline sits above the tabs
            w.Box([_section("The plans, measured side by side (Compare) or predicted", self.table),
                   _section("Per op type (predicted from the profile; measured once compared)", self.ops)], layout=wrap),
            _section(f"The {TOP} slowest layers, with the adapts they need", pane(self.top, "none", "wb-top-pane")),
            self.bars])

    def refresh(self):
        session = self.bench.session
        s = views.summary(session)
        m = s["measured"]
        measured = "not yet (Measure or Compare)" if m is None else m["text"]
        compared = session.comparison
        note = "measured side by side" if compared is not None else "predicted (Compare measures them)"
        self.headline.value = (f"<div style='line-height: 1.4'><b>{html.escape(session.graph.name)}</b>, {len(session.graph)} layers, "
                               f"{session.num_threads} threads: predicted <b>{s['predicted_ms']:.3f} ms</b> "
                               f"({session.plan.method}, {len(session.pins)} pinned, {len(session.plan.adapts)} adapts); "
                               f"measured <b>{html.escape(measured)}</b>; speed-ups {note}"
                               f"<br><span class='wb-precision'>precision: {html.escape(s['precision']['text'])} "
                               f"({html.escape(', '.join(s['precision']['allowed']))} allowed)</span>"
                               + ("".join(f"<br>{html.escape(n)}" for n in compared.notes) if compared else "") + "</div>")
        self.table.value = table(s["rows"], COLUMNS, "wb-summary-table", marked=lambda r: r["name"] == "tuned")
        self.ops.value = table(views.op_breakdown(session), OP_COLUMNS, "wb-op-table")
        rows = views.plan_rows(session)
        self.top.value = table(views.top_layers(session, TOP), TOP_COLUMNS, "wb-top-table")
        names = [r["name"] for r in rows]
        hover = [f"{r['index']}: {r['name']} ({r['op']})<br>{r['routine']}" for r in rows]
        with self.bars.batch_update():
            self.bars.data[0].update(x=names, y=finite([r["ms"] for r in rows]), customdata=hover)
            self.bars.data[1].update(x=names, y=finite([r["adapt_ms"] for r in rows]), customdata=hover)
