"""What the workbench shows, as plain data computed from a :class:`~workbench.session.Session`.

Every view of :mod:`workbench.ui.widgets` draws one of these and nothing else: the heatmap of the
profile (:mod:`.profile`), the DP table of a layer, its optimal path and the per-layer plan
table (:mod:`.plan`), the graph drawing (:mod:`.graph`), where the time goes per layer and per
op type (:mod:`.times`), the summary (:mod:`.summary`).  They need neither Jupyter nor plotly,
so scripts and tests use them as they are.  Times are in milliseconds.
"""
from .base import FLOOR_MS
from .graph import GraphDrawing, graph_drawing, node_label
from .plan import PLAN_SORTS, adapt_deltas, dp_path, dp_table, plan_rows, sort_plan_rows
from .profile import HEATMAP_ORDERS, Heatmap, heatmap
from .summary import latency, precision, summary
from .times import layer_times, op_breakdown, top_layers

__all__ = ["FLOOR_MS", "GraphDrawing", "graph_drawing", "node_label", "PLAN_SORTS", "adapt_deltas", "dp_path",
           "dp_table", "plan_rows", "sort_plan_rows", "HEATMAP_ORDERS", "Heatmap", "heatmap", "latency", "precision", "summary",
           "layer_times", "op_breakdown", "top_layers"]
