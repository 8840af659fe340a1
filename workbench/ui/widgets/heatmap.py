"""The profiling heatmap: layers x routines, colour log10 of the median time (or of each time
over its row's fastest), blank where a routine does not apply; the plan's routine marked in
each row (a star where pinned); rows in graph order or slowest first, one op type or all; a
fixed-height scrolling pane.  Clicking a cell pins that routine to that layer (through
:meth:`Workbench.pin`).

Plotly's ``FigureWidget`` is enough here: its trace ``on_click`` brings the clicked cell's
(routine, layer) back to Python, in JupyterLab as in the browser test, so the workbench needs no
widget of its own."""
from __future__ import annotations

import os

import ipywidgets as w
import numpy as np
import plotly.graph_objects as go

from .. import views
from .figures import finite, pane

ROW_PX = 14
RATIO_TICKS = [1, 1.5, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000]


def _short(routines):
    """Column labels without the prefix every routine shares (``cpu:float32:``), and that prefix."""
    common = os.path.commonprefix(routines) if len(routines) > 1 else ""
    common = common[:common.rfind(":") + 1]
    return [r[len(common):] for r in routines], common


class HeatmapView:
    def __init__(self, bench):
        self.bench = bench
        self.colour = w.ToggleButtons(options=[("ms (log)", "absolute"), ("x row's fastest (log)", "relative")],
                                      value="absolute", description="colour", style={"button_width": "150px"})
        self.order = w.Dropdown(options=list(views.HEATMAP_ORDERS), value="topological", description="rows",
                                layout=w.Layout(width="220px"))
        ops = sorted({layer.op for layer in bench.session.graph})
        self.op = w.Dropdown(options=[("all ops", "")] + [(op, op) for op in ops], value="", description="op",
                             layout=w.Layout(width="220px"))
        for control in (self.colour, self.order, self.op):
            control.observe(lambda _: self.refresh(), names="value")
        self.figure = go.FigureWidget()
        self.figure.add_trace(go.Heatmap(name="profile", colorscale="Viridis", hoverinfo="text", xgap=1, ygap=1))
        self.figure.add_trace(go.Scatter(name="chosen", mode="markers", hoverinfo="skip",
                                         marker=dict(symbol="circle-open", size=10, color="#ff2d55", line=dict(width=2))))
        self.figure.add_trace(go.Scatter(name="pinned", mode="markers", hoverinfo="skip",
                                         marker=dict(symbol="star", size=10, color="#ff2d55")))
        self.figure.update_layout(showlegend=False, meta="wb-heatmap", margin=dict(l=10, r=10, t=150, b=10),
                                  xaxis=dict(type="category", side="top", tickangle=-50, tickfont=dict(size=10)),
                                  yaxis=dict(type="category", tickfont=dict(size=9)))
        self.figure.data[0].on_click(self._on_click)
        self.pane = pane(self.figure, "600px", "wb-heatmap-pane")
        # the caption is HTML, not the figure's title: above the top axis's labels and title a
        # figure title collides with them, and the pane scrolls the figure away
        self.caption = w.HTML()
        self.caption.add_class("wb-heatmap-caption")
        self.widget = w.VBox([w.HBox([self.colour, self.order, self.op], layout=w.Layout(flex_flow="row wrap")),
                              self.caption, self.pane])

    def shown(self):
        """The :class:`~workbench.ui.views.Heatmap` these controls select."""
        return views.heatmap(self.bench.session, order=self.order.value, op=self.op.value or None)

    def refresh(self):
        hm = self.shown()
        relative = self.colour.value == "relative"
        if relative:
            ratio = hm.relative()
            z = np.log10(ratio)
            hover = [[t + (f"<br>{r:.2f}x the row's fastest" if t else "") for t, r in zip(texts, row)]
                     for texts, row in zip(hm.hover, ratio)]
            top = np.nanmax(ratio) if np.isfinite(ratio).any() else 1.0
            ticks = [t for t in RATIO_TICKS if t <= max(top, 1.5)]
            colorbar = dict(title="x fastest", tickvals=np.log10(ticks).tolist(), ticktext=[f"{t:g}" for t in ticks])
        else:
            shown = np.maximum(hm.ms, views.FLOOR_MS)   # views and no-ops cost 0: coloured as the floor
            z, hover = np.log10(shown), hm.hover
            values = shown[np.isfinite(shown)]
            ticks = 10.0 ** np.arange(np.floor(np.log10(values.min())), np.ceil(np.log10(values.max())) + 1) \
                if values.size else np.array([1.0])
            colorbar = dict(title="ms", tickvals=np.log10(ticks).tolist(), ticktext=[f"{t:g}" for t in ticks])
        colorbar.update(lenmode="pixels", len=min(320, 40 + ROW_PX * max(len(hm.layers), 1)), y=1, yanchor="top")
        chosen = [(hm.routines[j], layer) for layer, j in zip(hm.layers, hm.chosen) if j is not None]
        pinned = [(hm.routines[j], layer) for layer, j in zip(hm.layers, hm.pinned) if j is not None]
        labels, common = _short(hm.routines)
        order = "slowest first" if self.order.value == "slowest first" else "graph order"
        with self.figure.batch_update():
            self.figure.data[0].update(z=finite(z), x=hm.routines, y=hm.layers, text=hover, colorbar=colorbar)
            self.figure.data[1].update(x=[c[0] for c in chosen], y=[c[1] for c in chosen])
            self.figure.data[2].update(x=[c[0] for c in pinned], y=[c[1] for c in pinned])
            # explicit ranges: the marker traces would pad an autorange by a dozen empty rows
            self.figure.layout.xaxis.update(tickvals=hm.routines, ticktext=labels, range=[-0.5, len(hm.routines) - 0.5],
                                            title=dict(text=f"routine ({common}...)" if common else "routine"))
            self.figure.layout.yaxis.update(categoryorder="array", categoryarray=hm.layers, range=[len(hm.layers) - 0.5, -0.5],
                                            title=dict(text=f"layer ({order}; {len(hm.layers)} shown)"))
            what = "each routine's median over its layer's fastest" if relative else "median time per layer x routine"
            self.caption.value = (f"<div style='line-height: 1.4'><b>Profile</b>: {what}, log colour; o the plan's "
                                  f"choice, * pinned; {len(hm.layers)} layers, {order}; click a cell to pin it</div>")
            self.figure.layout.height = 170 + ROW_PX * len(hm.layers)

    def _on_click(self, trace, points, state):
        if points.xs and points.ys:
            self.bench.act(self.click, points.ys[0], points.xs[0])

    def click(self, layer, routine):
        """What a click on the cell (``layer``, ``routine``) does: pin it, if it applies."""
        hm = views.heatmap(self.bench.session)
        i, j = hm.cell(layer, routine)
        if not np.isfinite(hm.ms[i, j]):
            raise ValueError(f"{routine} does not apply to layer {layer}: nothing to pin")
        self.bench.pin(layer, routine)
