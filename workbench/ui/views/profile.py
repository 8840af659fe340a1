"""The profiling heatmap as plain data: layers x routines, medians and spreads, which cell the
plan uses, each row relative to its fastest routine, rows ordered and filtered."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import routines
from ...session import NotTunedError
from .base import FLOOR_MS, ms

#: Row orders of :func:`heatmap`.
HEATMAP_ORDERS = ("topological", "slowest first")


@dataclass
class Heatmap:
    """Layers (rows) x routines (columns): profiled median and spread, NaN where the routine
    does not apply; the column each row's plan uses and whether it is pinned."""

    layers: list
    ops: list
    routines: list
    ms: np.ndarray
    spread_ms: np.ndarray
    chosen: list          # column index per row (None: the plan uses a routine left unprofiled)
    pinned: list          # column of the routine each row is pinned to, None where not pinned
    hover: list           # per row, per column: text

    def cell(self, layer, routine):
        """``(row, column)`` of ``layer`` and ``routine``."""
        return self.layers.index(layer), self.routines.index(routine)

    def relative(self):
        """Each cell's median over its row's fastest (both floored at :data:`FLOOR_MS`): 1.0 at
        the row's fastest routine, NaN where the routine does not apply.  A global scale makes
        every routine of a small layer look alike; this shows how far each one is from the best
        choice for that layer alone."""
        floored = np.maximum(self.ms, FLOOR_MS)            # NaN stays NaN
        fastest = np.fmin.reduce(floored, axis=1, keepdims=True) if len(self.routines) else floored
        return floored / fastest


def _routine_order(descriptor):
    device, dtype, layout, algo = routines.parse_descriptor(descriptor)
    return (device, dtype, layout, algo == "reference", algo)


def heatmap(session, order="topological", op=None):
    """The :class:`Heatmap` of the session's profile (and plan, when tuned).

    ``order``: ``"topological"`` (the graph's order) or ``"slowest first"`` (by the median of
    the routine the plan uses, the circled cell; ties in graph order).  ``op``: only the layers
    of that op type.  The columns are every routine profiled on any layer of the model, in both
    cases, so a filtered view keeps its columns where they were."""
    if session.profiled is None:
        raise NotTunedError("not profiled yet: call profile() or tune() first")
    if order not in HEATMAP_ORDERS:
        raise ValueError(f"heatmap order {order!r}: expected one of {', '.join(HEATMAP_ORDERS)}")
    graph, recs = session.graph, session.profiled.routine
    columns = sorted({d for layer in graph for d in recs.get(layer.name, {})}, key=_routine_order)
    col = {d: j for j, d in enumerate(columns)}
    layers = [layer for layer in graph if op is None or layer.op == op]
    n, m = len(layers), len(columns)
    values, spread = np.full((n, m), np.nan), np.full((n, m), np.nan)
    hover = [[""] * m for _ in range(n)]
    chosen, pinned = [], []
    choice = session.plan.choice if session.plan is not None else {}
    for i, layer in enumerate(layers):
        shapes = " ".join(str(s) for s in graph.input_specs(layer) if s is not None)
        out = ", ".join(str(s) for s in layer.out_specs)
        for d, rec in recs.get(layer.name, {}).items():
            j = col[d]
            values[i, j], spread[i, j] = ms(rec.median), ms(rec.spread)
            hover[i][j] = (f"{layer.name} ({layer.op})<br>in {shapes}<br>out {out}<br>{d}<br>"
                           f"median {values[i, j]:.4f} ms, spread {spread[i, j]:.4f} ms ({len(rec.samples)} samples)")
        chosen.append(col.get(choice.get(layer.name)))
        pinned.append(col.get(session.pins.get(layer.name)))
    rows = list(range(n))
    if order == "slowest first":
        def chosen_ms(i):
            v = values[i, chosen[i]] if chosen[i] is not None else np.nan
            return -v if np.isfinite(v) else np.inf
        rows.sort(key=lambda i: (chosen_ms(i), i))
    return Heatmap([layers[i].name for i in rows], [layers[i].op for i in rows], columns, values[rows], spread[rows],
                   [chosen[i] for i in rows], [pinned[i] for i in rows], [hover[i] for i in rows])
