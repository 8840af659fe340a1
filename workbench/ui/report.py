"""Per-layer summaries of a graph (used by ``workbench info``/``demo`` and the notebooks)."""
from __future__ import annotations

from ..ir import ops


def layer_rows(graph, times=None):
    """One dict per layer, in topological order: index, name, op, fused epilogue, shapes, params, MACs."""
    rows = []
    for i, layer in enumerate(graph):
        specs = graph.input_specs(layer)
        extra = []
        after = layer.attrs.get("residual_after_activation")
        if layer.attrs.get("residual") and not after:
            extra.append("+residual")
        if layer.attrs.get("activation"):
            extra.append("+" + layer.attrs["activation"])
        if after:
            extra.append("+residual")
        if layer.attrs.get("fusion"):
            extra.append(f" [{layer.attrs['fusion']}]")
        row = dict(index=i, name=layer.name, op=layer.op + "".join(extra),
                   input=str(specs[0]) if specs and specs[0] is not None else "",
                   output=", ".join(str(s) for s in layer.out_specs),
                   params=layer.num_params, macs=ops.get(layer.op).macs(layer, specs),
                   fused=len(layer.fused))
        if times is not None:
            row["ms"] = times.get(layer.name, 0.0) * 1e3
        rows.append(row)
    return rows


def _human(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def format_table(rows, columns):
    """Plain-text table of ``rows`` (dicts) with the given ``(key, header)`` columns."""
    cells = [[h for _, h in columns]]
    for r in rows:
        cells.append([_human(r[k]) if k in ("params", "macs") else (f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]))
                      for k, _ in columns])
    widths = [max(len(row[c]) for row in cells) for c in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


LAYER_COLUMNS = [("index", "#"), ("name", "layer"), ("op", "op"), ("output", "output"), ("params", "params"),
                 ("macs", "MACs"), ("fused", "nodes")]


def summary(graph, source_counts=None):
    """Text summary: op counts before/after fusion, totals."""
    after = graph.op_counts()
    before = source_counts or graph.meta.get("source_op_counts", {})
    lines = [f"model {graph.name!r}: {sum(before.values())} ONNX nodes -> {len(graph)} layers after folding and fusion",
             f"inputs:  " + ", ".join(f"{n} {s}" for n, s in graph.inputs.items()),
             f"outputs: " + ", ".join(f"{n} {graph.spec(n)}" for n in graph.outputs),
             f"parameters: {_human(graph.num_params)} ({graph.num_params}), MACs: "
             f"{_human(sum(r['macs'] for r in layer_rows(graph)))}",
             "ops before: " + ", ".join(f"{k} {v}" for k, v in before.items()),
             "ops after:  " + ", ".join(f"{k} {v}" for k, v in after.items())]
    return "\n".join(lines)
