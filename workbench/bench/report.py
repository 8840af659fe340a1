"""A :class:`~workbench.bench.BenchResult` as plain data (:func:`summary`, the JSON report), a
readable text report (:func:`text`) and Markdown (:func:`markdown`)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

PERCENTILES = (50, 90, 99)


def stats(latency, batch):
    """Percentiles, min, mean, IQR (ms), runs and throughput (inferences/s = batch / mean) of a
    :class:`~workbench.tuning.measure.Latency`; the samples themselves (ms) in ``samples_ms``."""
    ms = np.asarray(latency.samples) * 1e3
    out = {f"p{q}_ms": float(np.percentile(ms, q)) for q in PERCENTILES}
    out.update(min_ms=float(ms.min()), mean_ms=float(ms.mean()), max_ms=float(ms.max()),
               median_ms=latency.median_ms, iqr_ms=latency.spread_ms, runs=latency.runs,
               throughput_per_s=batch / (float(ms.mean()) / 1e3), samples_ms=ms.tolist(),
               method=latency.method, side_by_side=list(latency.side_by_side), measured_at=latency.measured_at)
    return out


def idle_stats(samples, warm_median_s):
    """Median and max (ms) of first runs after idle, and their median over the warm median."""
    ms = np.asarray(samples) * 1e3
    med = float(np.median(ms))
    return {"median_ms": med, "max_ms": float(ms.max()), "runs": len(ms), "samples_ms": ms.tolist(),
            "vs_warm": med / (warm_median_s * 1e3)}


def summary(result):
    """Everything in ``result`` as JSON-ready data (the JSON report)."""
    engines = {}
    for name, lat in result.latency.items():
        e = {"quiet": stats(lat, result.batch), "settings": result.settings.get(name, {})}
        if name in result.idle:
            e["first_after_idle"] = idle_stats(result.idle[name], lat.median)
        if name in result.loaded:
            e["loaded"] = stats(result.loaded[name], result.batch)
            e["slowdown_under_load"] = result.loaded[name].median / lat.median
        if name in result.errors:
            e["max_relative_error_vs_tuned"] = result.errors[name]
        engines[name] = e
    ours = result.latency.get("tuned")
    pred = None
    if ours is not None and result.predicted_s is not None:
        pred = {"predicted_ms": result.predicted_s * 1e3, "measured_ms": ours.median_ms,
                "predicted_over_measured": result.predicted_s / ours.median}
    method = next(iter(result.latency.values())).method if result.latency else ""
    return {"model": result.model, "batch": result.batch, "threads": result.threads, "inputs": result.inputs,
            "io_format": result.io_format, "method": method, "idle_ms": result.idle_ms, "engines": engines,
            "predicted": pred, "op_ms": result.op_ms, "op_runs": result.op_runs, "machine": result.machine,
            "versions": result.versions, "notes": result.notes, "tuning": result.tuning}


def _f(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _err(value):
    return "-" if value is None else f"{value:.2g}"


def tables(result):
    """The report's tables as ``(title, headers, rows)`` of strings, shared by text and Markdown."""
    s = summary(result)
    ours = s["engines"].get("tuned")
    out = []
    rows = []
    for name, e in s["engines"].items():
        q = e["quiet"]
        vs = q["median_ms"] / ours["quiet"]["median_ms"] if ours else None
        rows.append([name, _f(q["p50_ms"]), _f(q["p90_ms"]), _f(q["p99_ms"]), _f(q["min_ms"]), _f(q["mean_ms"]),
                     _f(q["iqr_ms"]), str(q["runs"]), _f(q["throughput_per_s"], 1), _f(vs, 2),
                     _err(e.get("max_relative_error_vs_tuned"))])
    out.append((f"latency ({s['method']})",
                ["engine", "p50 ms", "p90 ms", "p99 ms", "min ms", "mean ms", "IQR ms", "runs", "inf/s",
                 "p50 / tuned", "max rel err vs tuned"], rows))
    idle = [[n, _f(e["first_after_idle"]["median_ms"]), _f(e["first_after_idle"]["max_ms"]),
             _f(e["quiet"]["p50_ms"]), _f(e["first_after_idle"]["vs_warm"], 2)]
            for n, e in s["engines"].items() if "first_after_idle" in e]
    if idle:
        reps = next(e["first_after_idle"]["runs"] for e in s["engines"].values() if "first_after_idle" in e)
        out.append((f"first run after {s['idle_ms']:g} ms idle ({reps} repeats, no lead-in run)",
                    ["engine", "median ms", "max ms", "warm p50 ms", "median / warm"], idle))
    loaded = [[n, _f(e["quiet"]["p50_ms"]), _f(e["loaded"]["p50_ms"]), _f(e["slowdown_under_load"], 2)]
              for n, e in s["engines"].items() if "loaded" in e]
    if loaded:
        out.append(("under load (one other process spinning on one core)",
                    ["engine", "quiet p50 ms", "loaded p50 ms", "loaded / quiet"], loaded))
    if s["op_ms"].get("tuned"):
        from .ops import side_by_side
        tuned, ort = s["op_ms"]["tuned"], s["op_ms"].get("onnxruntime")
        rows = [[op, _f(a), "-" if a is None else f"{tuned[op]['pct']:.1f}", "-" if na is None else str(na),
                 _f(b), "-" if b is None else f"{ort[op]['pct']:.1f}", "-" if nb is None else str(nb)]
                for op, a, na, b, nb in side_by_side(tuned, ort)]
        rows.append(["total", _f(sum(v["ms"] for v in tuned.values())), "100.0",
                     str(sum(v["count"] for v in tuned.values())),
                     _f(sum(v["ms"] for v in ort.values())) if ort else "-", "100.0" if ort else "-",
                     str(sum(v["count"] for v in ort.values())) if ort else "-"])
        out.append((f"per-op-type totals, ms per run (ours: median per step over {s['op_runs']} runs; "
                    f"ORT: its profiler, median per node over {s['op_runs']} runs)",
                    ["op", "ours ms", "ours %", "layers", "ORT ms", "ORT %", "ORT nodes"], rows))
    return s, out


def _plain(headers, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headers] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _header_lines(s):
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in s["inputs"].items())
    lines = [f"model {s['model']}: batch {s['batch']}, inputs {shapes}, {s['threads']} thread(s), "
             f"io_format {s['io_format']}",
             f"machine: {s['machine'].get('cpu', '?')} (fingerprint {s['machine'].get('fingerprint', '?')})",
             "versions: " + ", ".join(f"{k} {v}" for k, v in s["versions"].items())]
    if s["tuning"].get("how"):
        lines.append(f"plan: {s['tuning']['how']}")
    p = s["predicted"]
    if p:
        lines.append(f"predicted vs measured (tuned): {p['predicted_ms']:.3f} ms predicted, {p['measured_ms']:.3f} ms "
                     f"measured (p50), predicted/measured {p['predicted_over_measured']:.2f}")
    return lines


def text(result):
    """The readable report ``workbench bench`` prints."""
    s, parts = tables(result)
    lines = _header_lines(s)
    for title, headers, rows in parts:
        lines += ["", title + ":", _plain(headers, rows)]
    lines += [f"note: {n}" for n in s["notes"]]
    return "\n".join(lines)


def markdown(result):
    """The report as Markdown (tables as GitHub pipe tables)."""
    s, parts = tables(result)
    lines = [f"# workbench bench: {s['model']}", ""] + [f"- {line}" for line in _header_lines(s)]
    for title, headers, rows in parts:
        lines += ["", f"## {title[0].upper()}{title[1:]}", "", "| " + " | ".join(headers) + " |",
                  "|" + "|".join("---" for _ in headers) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]
    if s["notes"]:
        lines += [""] + [f"Note: {n}" for n in s["notes"]]
    return "\n".join(lines) + "\n"


def write(result, prefix):
    """Write ``<prefix>.json`` and ``<prefix>.md``; returns both paths."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".md")
    json_path.write_text(json.dumps(_finite(summary(result)), indent=1, default=_jsonable, allow_nan=False))
    md_path.write_text(markdown(result))
    return json_path, md_path


def _finite(value):
    """``value`` with every NaN or infinity (an error over outputs that share no name) as None:
    strict JSON readers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
