"""Our tuned plan against ONNX Runtime and OpenVINO on the zoo and on real third-party models.

    python benchmarks/peers.py [--models zoo real sequence | NAME ...] [--runs 30] [--threads 2] [--load]
                               [--idle 50] [--idle-runs 10] [--op-runs 5] [--db PATH] [--out DIR]
                               [--precision float32,bfloat16]

Each model is tuned through the profile database and in context (``tune(in_context=True)``: the
prediction is the plan timed inside the model, see :mod:`workbench.tuning.in_context`), then timed by
``workbench bench`` (the same code as the command: :func:`workbench.bench.bench`) beside ONNX Runtime (fp32, ORT_ENABLE_ALL)
and OpenVINO (CPU, f32, static shapes; optional), all in one process, in interleaved rounds with
idle pauses.  Real models come from :mod:`realmodels` (pinned wheels, SHA-256 checked) at their
benchmark resolution, the sequence models (``--models sequence``: recurrent, control flow) at
their shapes and constant inputs.  Per model: the medians and our ratio to each peer, the first run after
``--idle`` ms of each engine over its warm median, with ``--load`` each engine's slowdown with a
busy process beside it, predicted vs measured, and our per-op time table beside ORT's profiler's.
Writes ``artifacts/benchmarks/peers.{md,json}`` and one ``workbench bench`` report per model.

``--precision float32,bfloat16`` lets the plan mix bfloat16 routines in, adds OpenVINO with
INFERENCE_PRECISION_HINT=bf16 as a peer, and reports the plan's error against float32 (max
relative error, cosine, top-1 agreement) beside its latency.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import realmodels  # noqa: E402

from workbench import Session, zoo  # noqa: E402
from workbench import bench as wb_bench  # noqa: E402
from workbench.ir.formats import parse_precisions  # noqa: E402
from workbench.tuning.profiledb import ProfileDatabase, default_path  # noqa: E402

ZOO = ["resnet50", "mobilenet_v2", "mobilenet_v3_large", "vgg16"]
PEERS = ["onnxruntime", "openvino", "openvino-bf16"]


def _models(names):
    out = []
    for n in names:
        if n == "zoo":
            out += ZOO
        elif n == "real":
            out += list(realmodels.MODELS)
        elif n == "sequence":
            out += list(realmodels.SEQUENCE_MODELS)
        elif n in zoo.NAMES or n in realmodels.ALL:
            out.append(n)
        else:
            raise SystemExit(f"peers.py: unknown model {n!r}; zoo: {', '.join(zoo.NAMES)}; "
                             f"real: {', '.join(realmodels.MODELS)}; sequence: {', '.join(realmodels.SEQUENCE_MODELS)}")
    return list(dict.fromkeys(out))


def each_model(names, row):
    """``(rows, notes)``: ``row(name)`` for each model of ``names`` (``_models``), printed as it
    comes; a model that cannot run is a note, and the others still run."""
    rows, notes = [], []
    for name in _models(names):
        print(f"== {name}", flush=True)
        try:
            rows.append(row(name))
        except Exception as e:   # noqa: BLE001 - one model that cannot run must not stop the others
            notes.append(f"{name}: not benchmarked: {type(e).__name__}: {e}")
        print(rows[-1] if rows and rows[-1]["model"] == name else notes[-1], flush=True)
        gc.collect()   # this model's engines (thread pools, arenas) gone before the next is timed
    return rows, notes


def _open(name, threads, db, precisions=("float32",), **tune):
    """``(session, model proto or path, tuning seconds)`` of ``name``, tuned (``tune``: more
    arguments of :meth:`Session.tune <workbench.session.Session.tune>`)."""
    if name in zoo.NAMES:
        model = zoo.build(name)
        session = Session.from_onnx(model, num_threads=threads, db=db)
    else:
        m = realmodels.ALL[name]
        model = realmodels.fetch(name)
        session = Session.from_onnx(str(model), num_threads=threads, db=db, batch=1, resolution=m.resolution,
                                    shapes=m.shapes, constants=m.constants)
    held = _held_inputs(name, session)
    t0 = time.perf_counter()
    # timed in context on the values the model runs with (a run-time If's condition)
    session.tune(in_context=True, precisions=precisions, context_inputs={**session.random_inputs(), **held}, **tune)
    return session, model, time.perf_counter() - t0


def _held_inputs(name, session):
    """The inputs ``name`` is fed fixed values of on every run (``RealModel.inputs``), as arrays."""
    import numpy as np
    m = realmodels.ALL.get(name)
    if m is None or not m.inputs:
        return {}
    return {k: np.asarray(v, session.graph.inputs[k].dtype).reshape(session.graph.inputs[k].shape)
            for k, v in m.inputs.items()}


def _row(name, layers, tune_s, result):
    s = wb_bench.report.summary(result)
    eng = s["engines"]
    ours = eng["tuned"]["quiet"]["median_ms"]
    row = {"model": name, "layers": layers, "tune_s": tune_s, "tuned_ms": ours,
           "predicted_ms": (result.predicted_s or float("nan")) * 1e3}
    for peer in PEERS:
        if peer in eng:
            row[f"{peer}_ms"] = eng[peer]["quiet"]["median_ms"]
            row[f"vs_{peer}"] = ours / eng[peer]["quiet"]["median_ms"]
    for e, d in eng.items():
        if "first_after_idle" in d:
            row[f"idle_{e}"] = d["first_after_idle"]["vs_warm"]
        if "slowdown_under_load" in d:
            row[f"load_{e}"] = d["slowdown_under_load"]
    row["pred_over_meas"] = row["predicted_ms"] / ours
    return row


def _precision(row, session):
    """The plan's data types and, for a lower precision, its error against float32."""
    low = session.low_precision
    row["precision"] = "+".join(["float32"] + low)
    if low:
        e = session.precision_error()
        row.update(err_rel=e.max_rel, err_cos=e.cosine, err_top1=e.top1)
    return row


def _fmt(v, digits=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _markdown(rows, args, notes):
    cols = [("model", "model"), ("layers", "layers"), ("tuned_ms", "tuned ms"), ("onnxruntime_ms", "ORT ms"),
            ("openvino_ms", "OV f32 ms"), ("vs_onnxruntime", "tuned/ORT"), ("vs_openvino", "tuned/OV"),
            ("openvino-bf16_ms", "OV bf16 ms"), ("vs_openvino-bf16", "tuned/OV bf16"), ("precision", "plan dtypes"),
            ("err_rel", "max err / peak fp32"), ("err_cos", "cosine"), ("err_top1", "top-1 agree"),
            ("idle_tuned", "idle/warm tuned"), ("idle_onnxruntime", "idle/warm ORT"),
            ("idle_openvino", "idle/warm OV"), ("pred_over_meas", "pred/meas")]
    if args.load:
        cols += [("load_tuned", "load tuned"), ("load_onnxruntime", "load ORT"), ("load_openvino", "load OV")]
    lines = [f"# Peers: {args.threads} threads, batch 1, medians of {args.runs} interleaved rounds", "",
             f"First run after {args.idle:g} ms idle over the warm median ({args.idle_runs} samples); "
             + ("'load': median with a busy process beside over the quiet median. " if args.load else "")
             + "Each model's own report is in bench/.", "",
             "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), 6 if k == "err_cos" else 4 if k == "err_rel" else 2)
                                       for k, _ in cols) + " |")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["zoo", "real"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--idle", type=float, default=50.0)
    p.add_argument("--idle-runs", type=int, default=10)
    p.add_argument("--op-runs", type=int, default=5)
    p.add_argument("--load", action="store_true")
    p.add_argument("--db", default=None)
    p.add_argument("--out", default="artifacts/benchmarks")
    p.add_argument("--precision", default="float32",
                   help="data types the plan may compute in (float32,bfloat16); bfloat16 adds OpenVINO bf16 as a peer")
    args = p.parse_args(argv)
    precisions = parse_precisions(args.precision)
    peers = PEERS if "bfloat16" in precisions else [p for p in PEERS if p != "openvino-bf16"]
    out = Path(args.out)
    (out / "bench").mkdir(parents=True, exist_ok=True)
    db = ProfileDatabase(path=Path(args.db) if args.db else default_path(), num_threads=args.threads)
    rows, notes = [], []
    for name in _models(args.models):
        print(f"== {name}", flush=True)
        try:
            session, model, tune_s = _open(name, args.threads, db, precisions)
        except Exception as e:   # noqa: BLE001 - one model that cannot run must not stop the others
            notes.append(f"{name}: not benchmarked: {type(e).__name__}: {e}")
            print(notes[-1], flush=True)
            continue
        result = wb_bench.bench(session, model, peers=peers, runs=args.runs, idle_ms=args.idle,
                                idle_runs=args.idle_runs, with_load=args.load, op_runs=args.op_runs, name=name,
                                inputs=_held_inputs(name, session))
        notes += [f"{name}: {n}" for n in result.notes if "not installed" not in n or name == "resnet50"]
        wb_bench.report.write(result, out / "bench" / name)
        print(wb_bench.report.text(result), flush=True)
        rows.append(_precision(_row(name, len(session.graph), tune_s, result), session))
        # Drop this model's engines (ORT's and OpenVINO's thread pools, our arenas) before the
        # next model is timed beside them.
        del session, model, result
        gc.collect()
    (out / "peers.md").write_text(_markdown(rows, args, notes))
    (out / "peers.json").write_text(json.dumps({"rows": rows, "notes": notes, "args": vars(args)}, indent=1))
    print(_markdown(rows, args, notes))
    print(f"wrote {out / 'peers.md'} and {out / 'peers.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
