"""Plain-text exports of a tuning session: profile records (JSON lines), a Chrome trace of one
inference (JSON, opens in Perfetto), a per-layer CSV.  Each function takes plain data and
returns a string; :func:`write_text` writes it."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path


def write_text(path, text):
    Path(path).write_text(text)


def profile_jsonl(graph, profile):
    """One JSON object per line: every (layer, routine) record, then every adapt record."""
    lines = []
    for i, layer in enumerate(graph):
        for descriptor, r in sorted(profile.routine.get(layer.name, {}).items()):
            lines.append({"kind": "routine", "index": i, "layer": layer.name, "op": layer.op, "routine": descriptor,
                          "signature": r.signature, "median_s": r.median, "spread_s": r.spread,
                          "prepare_s": r.prepare_s, "samples_s": list(r.samples), "threads": profile.num_threads})
    for (tensor, src, dst), r in sorted(profile.adapt.items()):
        lines.append({"kind": "adapt", "tensor": tensor, "from": str(src), "to": str(dst), "adapt": r.name,
                      "signature": r.signature, "median_s": r.median, "spread_s": r.spread,
                      "samples_s": list(r.samples), "threads": profile.num_threads})
    return "".join(json.dumps(x) + "\n" for x in lines)


def chrome_trace(times, name="model", num_threads=1):
    """Trace Event Format of one run: ``times`` is ``[(step, start s, duration s)]`` as
    :meth:`~workbench.runtime.compiled.CompiledModel.run_timed` gives; one complete event per step."""
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": f"workbench: {name}"}},
              {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1,
               "args": {"name": f"inference ({num_threads} threads)"}}]
    for step, start, dur in times:
        events.append({"name": step.name, "cat": step.kind, "ph": "X", "pid": 1, "tid": 1,
                       "ts": round(start * 1e6, 3), "dur": round(dur * 1e6, 3),
                       "args": {"routine" if step.kind == "layer" else "adapt": step.what,
                                **({"op": step.layer.op} if step.layer is not None else {})}})
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}, indent=0)


CSV_FIELDS = ["index", "name", "op", "routine", "pinned", "profiled_ms", "spread_ms", "measured_ms",
              "runner_up", "runner_up_ms", "candidates", "adapts_in"]


def layer_csv(rows, measured_s=None):
    """Per-layer CSV from :meth:`Session.layer_rows` and measured seconds per step name."""
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    measured_s = measured_s or {}

    def ms(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    for r in rows:
        w.writerow({"index": r["index"], "name": r["name"], "op": r["op"], "routine": r["routine"],
                    "pinned": int(r["pinned"]), "profiled_ms": ms(r["cost_ms"]), "spread_ms": ms(r["spread_ms"]),
                    "measured_ms": ms(measured_s[r["name"]] * 1e3) if r["name"] in measured_s else "",
                    "runner_up": r["runner_up"], "runner_up_ms": ms(r["runner_up_ms"]),
                    "candidates": r["candidates"], "adapts_in": ";".join(r["adapts"])})
    return out.getvalue()
