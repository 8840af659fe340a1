"""The composite: controls, summary, heatmap, plan table and graph, DP table, over one Session."""
from __future__ import annotations

import html

import ipywidgets as w

from ..errors import WorkbenchError
from .controls import Controls
from .dp import DPView
from .heatmap import HeatmapView
from .plan import PlanGraph, PlanTable
from .summary import SummaryView


class Workbench(w.VBox):
    """``Workbench(session)``: every view of the session, and the actions on it.

    The controls and the headline (predicted and measured latency) on top, then one tab per
    view: the profile heatmap (click a cell to pin), the plan (graph and table), the DP table of
    the selected layer, the summary against the other plans.

    Each action (:meth:`pin`, :meth:`unpin`, :meth:`retune`, :meth:`set_filters`,
    :meth:`reprofile`, :meth:`measure`, :meth:`compare`, :meth:`export`) is one Session method
    followed by :meth:`refresh` of every view; called from Python they raise as the Session
    does, and from a button or a click (:meth:`act`) the error shows in the status line instead.
    The session is tuned first if it has no plan yet; one with a plan but no profile (a loaded
    tuned file) keeps its plan and is profiled (through the database) for the views.
    """

    def __init__(self, session, export_path="tuned.onnx"):
        self.session = session
        self.export_path = export_path
        if session.plan is None:
            session.tune()
        elif session.profiled is None:   # a loaded tuned file: keep its plan, profile for the views
            session.profile()
        self.selected = next(iter(session.graph)).name
        self.controls = Controls(self)
        self.summary = SummaryView(self)
        self.heatmap = HeatmapView(self)
        self.plan_table = PlanTable(self)
        self.plan_graph = PlanGraph(self)
        self.dp = DPView(self)
        self.views = [self.controls, self.summary, self.heatmap, self.plan_table, self.plan_graph, self.dp]
        self.tabs = w.Tab(children=[self.heatmap.widget, w.VBox([self.plan_graph.widget, self.plan_table.widget]),
                                    self.dp.widget, self.summary.widget],
                          titles=["Profile", "Plan", "DP table", "Summary"])
        super().__init__([self.controls.widget, self.summary.headline, self.tabs])
        self.add_class("wb-workbench")
        self.refresh()
        self.status("ready: " + repr(session))

    # -- views ------------------------------------------------------------------------------
    def refresh(self):
        """Redraw every view from the session."""
        for view in self.views:
            view.refresh()

    def status(self, text, error=False):
        colour = "#b00020" if error else "#333"
        self.controls.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def act(self, action, *args):
        """Run ``action(*args)`` for a button or a click: errors go to the status line."""
        try:
            action(*args)
        except (WorkbenchError, ValueError, KeyError) as e:
            self.status(f"{type(e).__name__}: {e}", error=True)

    # -- actions --------------------------------------------------------------------------------
    def select(self, layer):
        self.selected = self.session.layer(layer).name
        self.refresh()

    def pin(self, layer, descriptor):
        self.session.pin(layer, descriptor)
        self.selected = self.session.layer(layer).name
        self.refresh()
        self.status(f"pinned {self.selected} to {descriptor}: Retune to apply ({len(self.session.pins)} pins)")

    def unpin(self, layer):
        self.session.unpin(layer)
        self.refresh()
        self.status(f"unpinned {self.session.layer(layer).name}: Retune to apply")

    def retune(self):
        plan = self.session.retune()
        self.refresh()
        self.status(f"retuned in {self.session.search_s * 1e3:.1f} ms: predicted {plan.cost * 1e3:.3f} ms "
                    f"({plan.method}, {len(self.session.pins)} pins)")

    def set_filters(self, filters):
        self.session.tune(filters=filters)
        self.refresh()
        self.status(f"filters {filters or 'none'}: predicted {self.session.plan.cost * 1e3:.3f} ms")

    def reprofile(self, layers):
        self.session.profile(reprofile=True, layers=layers)
        self.retune()

    def measure(self, runs=30):
        t = self.session.measure(runs=runs)
        self.refresh()
        self.status(f"measured {t.median * 1e3:.3f} ms (median of {runs}) against {self.session.predicted_s * 1e3:.3f} predicted")

    def compare(self, runs=10):
        c = self.session.compare(runs=runs)
        self.refresh()
        self.status(f"compared {len(c.measured_ms)} plans over {runs} interleaved runs")

    def export(self, path):
        self.session.export(path)
        self.refresh()
        self.status(f"exported the tuned model to {path}")
