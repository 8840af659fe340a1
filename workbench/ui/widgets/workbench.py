"""The composite: controls, summary, heatmap, plan table and graph, DP table, over one Session."""
from __future__ import annotations

import html
import importlib.util
from contextlib import contextmanager

import ipywidgets as w

from .. import views
from ...errors import WorkbenchError
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
    While an action runs (:meth:`busy`) every button is disabled, the workbench has the CSS
    class ``wb-busy`` and the status line says what is being measured.
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
        style = w.HTML("<style>.wb-busy {cursor: progress} .wb-busy .wb-status {color: #8a5300; font-weight: bold}</style>",
                       layout=w.Layout(height="0px"))
        super().__init__([style, self.controls.widget, self.summary.headline, self.tabs])
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
        self.controls.status.value = f"<div style='color:{colour}; line-height: 1.4'>{html.escape(text)}</div>"

    @contextmanager
    def busy(self, what):
        """While the block runs: every button disabled, the CSS class ``wb-busy``, ``what`` in
        the status line; all restored afterwards, also when the block raises.  Widget state
        goes to the browser as it is set, so the page shows this while the kernel is busy."""
        buttons = list(self.controls.buttons.values())
        before = [b.disabled for b in buttons]
        self.status(what + " ...")   # first: the page may be watching for the class
        for b in buttons:
            b.disabled = True
        self.add_class("wb-busy")
        try:
            yield
        finally:
            for b, disabled in zip(buttons, before):
                b.disabled = disabled
            self.remove_class("wb-busy")

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

    def _retuned(self):
        plan = self.session.plan
        return (f"retuned in {self.session.search_s * 1e3:.1f} ms: predicted {plan.cost * 1e3:.3f} ms "
                f"({plan.method}, {len(self.session.pins)} pins)")

    def retune(self):
        with self.busy("retuning: selecting again on the profile"):
            self.session.retune()
            self.refresh()
        self.status(self._retuned())

    def set_filters(self, filters):
        with self.busy(f"retuning under filters {', '.join(filters) or 'none'} (profiling what they name that "
                       f"the profile lacks)"):
            self.session.tune(filters=filters)
            self.refresh()
        self.status(f"filters {', '.join(filters) or 'none'}: predicted {self.session.plan.cost * 1e3:.3f} ms")

    def set_precisions(self, precisions, max_error="", min_cosine=""):
        """Tune with ``precisions`` (comma separated) allowed, under the error budget ``max_error``
        and ``min_cosine`` (texts: a number, or empty for none)."""
        wanted = [p for p in str(precisions).split(",") if p]
        budget = _number(max_error, "max error", "0.01")
        cosine = _number(min_cosine, "min cosine", "0.99")
        with self.busy(f"tuning with {', '.join(wanted)} allowed (profiling the routines and casts the profile "
                       f"lacks), then measuring the plan's error against float32"):
            if budget is None:
                self.session.max_error = None
            if cosine is None:
                self.session.min_cosine = None
            self.session.tune(precisions=wanted, max_error=budget, min_cosine=cosine)
            self.refresh()
        self.status(f"precision {', '.join(self.session.precisions)}: predicted {self.session.plan.cost * 1e3:.3f} ms; "
                    f"{views.precision(self.session)['text']}")

    def pin_precision(self, layer, dtype):
        self.session.pin_precision(layer, dtype)
        self.selected = self.session.layer(layer).name
        self.refresh()
        self.status(f"pinned {self.selected} to {dtype}: Retune to apply ({len(self.session.precision_pins)} "
                    f"precision pins)")

    def sensitivity(self):
        with self.busy("measuring each low-precision layer's error alone (the outputs against float32 with only "
                       "that layer below it)"):
            sens = self.session.sensitivity()
            self.refresh()
        worst = min(sens.items(), key=lambda kv: kv[1].cosine, default=None)
        self.status(f"sensitivity of {len(sens)} layer(s)" +
                    (f"; most sensitive: {worst[0]} (cosine {worst[1].cosine:.6f} alone)" if worst else ""))

    def reprofile(self, layers):
        names = [self.session.layer(k).name for k in layers]
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        with self.busy(f"profiling {len(names)} layer(s) again: {shown}, every routine that applies"):
            profiled = self.session.profile(reprofile=True, layers=names)
            records = sum(len(profiled.routine.get(n, {})) for n in names)
            seconds = self.session.profile_s
            self.session.retune()
            self.refresh()
        self.status(f"reprofiled {len(names)} layer(s) ({shown}): {records} routine records measured again in "
                    f"{seconds:.2f} s; " + self._retuned())

    def measure(self, runs=30):
        with self.busy(f"measuring: the tuned plan, {runs} rounds (median and IQR)"):
            self.session.measure(runs=runs)
            self.refresh()
        self.status(f"measured the tuned plan: {views.latency(self.session)['text']} against "
                    f"{self.session.predicted_s * 1e3:.3f} ms predicted")

    def compare(self, runs=10):
        families = len(self.session.family_plans())
        ort = " and ONNX Runtime" if importlib.util.find_spec("onnxruntime") else ""
        with self.busy(f"measuring: tuned, greedy, {families} families{ort}, {runs} interleaved rounds, "
                       f"then the time per op type"):
            c = self.session.compare(runs=runs)
            self.refresh()
        self.status(f"compared {len(c.measured_ms)} plans over {runs} interleaved rounds: tuned "
                    f"{views.latency(self.session)['text']}")

    def export(self, path):
        first = ", measuring the tuned plan first (30 rounds)" if self.session.measured is None else ""
        with self.busy(f"exporting the tuned model to {path}{first}"):
            self.session.export(path)
            self.refresh()
        self.status(f"exported the tuned model to {path}")


def _number(text, what, example):
    """``text`` as a float, None when empty; WorkbenchError naming ``what`` otherwise."""
    text = str(text).strip()
    try:
        return float(text) if text else None
    except ValueError:
        raise WorkbenchError(f"{what}: expected a number such as {example} (or nothing for no budget), "
                             f"got {text!r}") from None
