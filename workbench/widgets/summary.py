"""The summary: predicted against measured latency, the tuned plan's speed-up over every single
routine family, the greedy plan and ONNX Runtime (measured by :meth:`Session.compare`, else
predicted), and a bar chart of the time per layer."""
from __future__ import annotations

import ipywidgets as w
import plotly.graph_objects as go

from .. import views
from .html import table

COLUMNS = [("name", "plan"), ("predicted_ms", "predicted ms"), ("measured_ms", "measured ms"),
           ("speedup", "tuned is x faster")]


class SummaryView:
    def __init__(self, bench):
        self.bench = bench
        self.headline = w.HTML()
        self.headline.add_class("wb-summary")
        self.table = w.HTML()
        self.bars = go.FigureWidget()
        self.bars.add_trace(go.Bar(name="routine", hoverinfo="x+y+name"))
        self.bars.add_trace(go.Bar(name="adapts", hoverinfo="x+y+name"))
        self.bars.update_layout(barmode="stack", title="Profiled time per layer (ms)", height=320,
                                margin=dict(l=10, r=10, t=40, b=10), meta="wb-layer-times", xaxis=dict(type="category", showticklabels=False))
        self.widget = w.HBox([self.table, self.bars])   # the headline sits above the tabs

    def refresh(self):
        session = self.bench.session
        s = views.summary(session)
        measured = "not measured yet (Measure)" if s["measured_ms"] is None else f"{s['measured_ms']:.3f} ms"
        compared = session.comparison
        note = "measured side by side" if compared is not None else "predicted (Compare measures them)"
        self.headline.value = (f"<b>{session.graph.name}</b>, {session.num_threads} threads: predicted "
                               f"<b>{s['predicted_ms']:.3f} ms</b> ({session.plan.method}, {len(session.pins)} pinned, "
                               f"{len(session.plan.adapts)} adapts), measured <b>{measured}</b>; "
                               f"speed-ups {note}" + ("".join(f"<br>{n}" for n in compared.notes) if compared else ""))
        self.table.value = table(s["rows"], COLUMNS, "wb-summary-table", marked=lambda r: r["name"] == "tuned")
        times = views.layer_times(session)
        with self.bars.batch_update():
            self.bars.data[0].update(x=[t[0] for t in times], y=[t[1] for t in times])
            self.bars.data[1].update(x=[t[0] for t in times], y=[t[2] for t in times])
