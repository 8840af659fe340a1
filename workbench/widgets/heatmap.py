"""The profiling heatmap: layers x routines, colour log10 of the median time, blank where a
routine does not apply; the plan's routine marked in each row (a star where pinned); clicking a
cell pins that routine to that layer (through :meth:`Workbench.pin`).

Plotly's ``FigureWidget`` is enough here: its trace ``on_click`` brings the clicked cell's
(routine, layer) back to Python, in JupyterLab as in the browser test, so the workbench needs no
widget of its own."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .. import views


#: The smallest time the colour scale shows (a reshape that is a view costs 0).
FLOOR_MS = 1e-4


class HeatmapView:
    def __init__(self, bench):
        self.bench = bench
        self.figure = go.FigureWidget()
        self.figure.add_trace(go.Heatmap(name="profile", colorscale="Viridis", hoverinfo="text", xgap=1, ygap=1,
                                         colorbar=dict(title="ms")))
        self.figure.add_trace(go.Scatter(name="chosen", mode="markers", hoverinfo="skip",
                                         marker=dict(symbol="circle-open", size=11, color="#ff2d55", line=dict(width=2))))
        self.figure.add_trace(go.Scatter(name="pinned", mode="markers", hoverinfo="skip",
                                         marker=dict(symbol="star", size=11, color="#ff2d55")))
        self.figure.update_layout(title=dict(text="Profile: median time per layer x routine (log colour; o chosen, * pinned)",
                                             yref="container", y=0.995, yanchor="top"),
                                  margin=dict(l=10, r=10, t=230, b=10), meta="wb-heatmap", showlegend=False,
                                  xaxis=dict(type="category", side="top", tickangle=-40),
                                  yaxis=dict(type="category", autorange="reversed"))
        self.figure.data[0].on_click(self._on_click)
        self.widget = self.figure

    def refresh(self):
        hm = views.heatmap(self.bench.session)
        shown = np.maximum(hm.ms, FLOOR_MS)   # views and no-ops cost 0: coloured as the floor
        z = np.log10(shown)
        finite = shown[np.isfinite(shown)]
        ticks = 10.0 ** np.arange(np.floor(np.log10(finite.min())), np.ceil(np.log10(finite.max())) + 1) \
            if finite.size else np.array([1.0])
        chosen = [(hm.routines[j], layer) for layer, j in zip(hm.layers, hm.chosen) if j is not None]
        pinned = [(hm.routines[j], layer) for layer, j in zip(hm.layers, hm.pinned) if j is not None]
        with self.figure.batch_update():
            self.figure.data[0].update(z=z, x=hm.routines, y=hm.layers, text=hm.hover,
                                       colorbar=dict(tickvals=np.log10(ticks), ticktext=[f"{t:g}" for t in ticks]))
            self.figure.data[1].update(x=[c[0] for c in chosen], y=[c[1] for c in chosen])
            self.figure.data[2].update(x=[c[0] for c in pinned], y=[c[1] for c in pinned])
            self.figure.layout.height = 260 + 16 * len(hm.layers)
            self.figure.layout.width = max(700, 220 + 34 * len(hm.routines))

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
