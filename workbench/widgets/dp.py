"""The DP table of one layer: the cost-to-here of each output format the dynamic programme
reached there, with the routine and the predecessors it chose; the format the plan uses is
highlighted, and the optimal path into the layer is drawn on the graph view."""
from __future__ import annotations

import ipywidgets as w

from .. import views
from .html import table

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
        self.title.value = (f"<b>DP table at {layer}</b> ({session.graph.layer(layer).op}); "
                            f"the optimal path into it runs through {len(path)} layers (outlined on the graph)")
        self.table.value = table(rows, COLUMNS, "wb-dp-table", marked=lambda r: r["in_plan"])
