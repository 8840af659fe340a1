"""The DP table of one layer: the cost-to-here of each output format the dynamic programme
reached there, with the routine and the predecessors it chose; the format the plan uses is
highlighted, and the optimal path into the layer is drawn on the graph view."""
from __future__ import annotations

import html

import ipywidgets as w

from .. import views
from .html import table

PATH_SHOWN = 8   # layers of the path listed above the table (the graph outlines all of them)
COLUMNS = [("format", "output format"), ("cost_ms", "cost to here (ms)"), ("routine", "routine"),
           ("predecessors", "inputs: tensor <- producer (its format)")]


class DPView:
    def __init__(self, bench):
        self.bench = bench
        self.title = w.HTML()
        self.table = w.HTML()
        self.table.add_class("wb-dp")
        self.widget = w.VBox([self.title, self.table])

    def refresh(self):
        session, layer = self.bench.session, self.bench.selected
        plan = session.plan
        if not plan.table:
            self.title.value = f"<b>DP table</b>: the plan was found by {plan.method}; it has no DP table"
            self.table.value = ""
            return
        rows = views.dp_table(session, layer)
        path = views.dp_path(session, layer)
        shown = [f"{html.escape(n)} ({f})" for n, f in path[-PATH_SHOWN:]]
        more = f"{len(path) - PATH_SHOWN} more, then " if len(path) > PATH_SHOWN else ""
        self.title.value = (f"<b>DP table at {html.escape(layer)}</b> ({session.graph.layer(layer).op}); the optimal "
                            f"path into it runs through {len(path)} layers (outlined on the Plan graph): "
                            f"{more}{' &rarr; '.join(shown)}")
        self.table.value = table(rows, COLUMNS, "wb-dp-table", marked=lambda r: r["in_plan"])
