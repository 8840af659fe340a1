"""The controls: the selected layer, pin/unpin it (a dropdown of the routines that apply to it) or
pin its data type, routine filters, the data types tuning may use and the error budget,
per-layer sensitivity, retune, reprofile layers (the selected one, or those named), measure, compare, export.  Each button
calls one :class:`Workbench` action (a Session method, then every view refreshes)."""
from __future__ import annotations

import ipywidgets as w

from ... import routines


def _button(label, css, tooltip, on_click):
    b = w.Button(description=label, tooltip=tooltip, layout=w.Layout(width="auto"))
    b.add_class(css)
    b.on_click(lambda _: on_click())
    return b


class Controls:
    def __init__(self, bench):
        self.bench = bench
        names = [layer.name for layer in bench.session.graph]
        self.layer = w.Dropdown(options=[(f"{i}: {n}", n) for i, n in enumerate(names)], description="layer")
        self.layer.observe(lambda ch: ch["new"] != bench.selected and bench.act(bench.select, ch["new"]), names="value")
        self.routine = w.Dropdown(description="routine", layout=w.Layout(width="360px"))
        self.filters = w.Text(description="filters", placeholder="e.g. cpu:float32:nhwc/*, Conv=*/winograd*",
                              layout=w.Layout(width="420px"))
        self.reprofile_layers = w.Text(placeholder="the selected layer, or names/indices, comma-separated",
                                       layout=w.Layout(width="340px"))
        choices = [("float32 only", "float32"), ("float32 + bfloat16", "float32,bfloat16"),
                   ("float32 + qint8", "float32,qint8"), ("float32 + bfloat16 + qint8", "float32,bfloat16,qint8")]
        current = ",".join(bench.session.precisions)
        if current not in [v for _, v in choices]:
            choices.append((current.replace(",", " + "), current))
        self.precision = w.Dropdown(options=choices, value=current, description="precision",
                                    layout=w.Layout(width="300px"))
        self.precision.add_class("wb-precision-choice")
        self.max_error = w.Text(value="" if bench.session.max_error is None else repr(bench.session.max_error),
                                description="max error", placeholder="none, e.g. 0.01",
                                layout=w.Layout(width="220px"))
        self.max_error.add_class("wb-max-error")
        self.min_cosine = w.Text(value="" if bench.session.min_cosine is None else repr(bench.session.min_cosine),
                                 description="min cosine", placeholder="none, e.g. 0.99",
                                 layout=w.Layout(width="220px"))
        self.min_cosine.add_class("wb-min-cosine")
        self.layer_precision = w.Dropdown(options=["float32", "bfloat16", "qint8"], description="layer in",
                                          layout=w.Layout(width="200px"))
        self.export_path = w.Text(value=bench.export_path, description="export to")
        self.runs = w.BoundedIntText(value=10, min=1, max=1000, description="runs", layout=w.Layout(width="140px"))
        self.runs.add_class("wb-runs")
        self.status = w.HTML()
        self.status.add_class("wb-status")
        b = bench
        self.buttons = {
            "pin": _button("Pin", "wb-pin", "pin the selected layer to the routine", lambda: b.act(b.pin, self.layer.value, self.routine.value)),
            "unpin": _button("Unpin", "wb-unpin", "drop the selected layer's pin", lambda: b.act(b.unpin, self.layer.value)),
            "filters": _button("Apply filters", "wb-filters", "retune under these routine filters",
                               lambda: b.act(b.set_filters, [f.strip() for f in self.filters.value.split(",") if f.strip()])),
            "retune": _button("Retune", "wb-retune", "select again on the cached profiles", lambda: b.act(b.retune)),
            "precision": _button("Apply precision", "wb-apply-precision",
                                 "tune again with these data types allowed (profiling their routines and casts)",
                                 lambda: b.act(b.set_precisions, self.precision.value, self.max_error.value,
                                               self.min_cosine.value)),
            "pin_precision": _button("Pin precision", "wb-pin-precision",
                                     "keep the selected layer in this data type (Retune to apply)",
                                     lambda: b.act(b.pin_precision, self.layer.value, self.layer_precision.value)),
            "sensitivity": _button("Sensitivity", "wb-sensitivity",
                                   "measure each low-precision layer's error alone (shown in the plan table)",
                                   lambda: b.act(b.sensitivity)),
            "reprofile": _button("Reprofile", "wb-reprofile", "measure these layers again, then retune",
                                 lambda: b.act(b.reprofile, self.layers_to_reprofile())),
            "measure": _button("Measure", "wb-measure", "time the tuned model", lambda: b.act(b.measure, self.runs.value)),
            "compare": _button("Compare", "wb-compare", "time every family, greedy and ONNX Runtime beside the plan",
                               lambda: b.act(b.compare, self.runs.value)),
            "export": _button("Export", "wb-export", "write the tuned model", lambda: b.act(b.export, self.export_path.value)),
        }
        bt = self.buttons
        self.widget = w.VBox([
            w.HBox([self.layer, self.routine, bt["pin"], bt["unpin"]]),
            w.HBox([self.reprofile_layers, bt["reprofile"]]),
            w.HBox([self.filters, bt["filters"], bt["retune"]]),
            w.HBox([self.precision, self.max_error, self.min_cosine, bt["precision"]]),
            w.HBox([self.layer_precision, bt["pin_precision"], bt["sensitivity"]]),
            w.HBox([self.runs, bt["measure"], bt["compare"], self.export_path, bt["export"]]),
            self.status])

    def layers_to_reprofile(self):
        """The layers the Reprofile field names (comma-separated names or indices), else the selected one."""
        named = [k.strip() for k in self.reprofile_layers.value.split(",") if k.strip()]
        return named or [self.layer.value]

    def refresh(self):
        session, selected = self.bench.session, self.bench.selected
        if self.layer.value != selected:
            self.layer.value = selected
        layer = session.graph.layer(selected)
        options = [r.descriptor for r in routines.applicable(session.graph, layer, precisions=None)]   # a pin may take any
        current = session.pins.get(selected) or session.plan.choice[selected]
        self.routine.options = options
        if current in options:
            self.routine.value = current
        self.filters.value = ", ".join(session.filters)
