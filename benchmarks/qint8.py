"""qint8 and mixed precision against float32 and the int8 and bf16 peers, side by side.

    python benchmarks/qint8.py [--models zoo real | NAME ...] [--runs 30] [--threads 2] [--db PATH]
                               [--min-cosine 0.99] [--calibration 8] [--idle 50] [--idle-runs 10] [--out DIR]

Per model, one session (one profile database, empty unless ``--db`` names a full one) is
calibrated on ``--calibration`` seeded random inputs (seeds 1000 on; the zoo and the real models
ship no data) and tuned three times: float32 only, qint8 allowed (float32 stays where no qint8
routine applies), and mixed (float32, bfloat16 and qint8 allowed, with the budget that every
output keeps cosine >= ``--min-cosine`` against float32 on the calibration inputs).  The first
tuning with all precisions is timed from that database: ``tune_all_s``.

Peers: ONNX Runtime fp32, ONNX Runtime int8 (the model quantized by ``quantize_static``: QDQ,
uint8 activations, int8 weights per channel, MinMax over the same calibration inputs) and
OpenVINO bf16 (where installed).  All run in one process in interleaved rounds with idle pauses
(:func:`workbench.tuning.measure.measure_latencies`); the first run after ``--idle`` ms is
reported for each too.  Errors (max error over the output's peak, cosine, top-1 agreement) are
against ONNX Runtime fp32 on three other seeded inputs (seeds 0-2), for our plans and ORT int8.
Writes ``DIR/qint8.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402

from workbench import bench as wb_bench  # noqa: E402
from workbench.bench import engines  # noqa: E402
from workbench.runtime.interpreter import random_inputs  # noqa: E402
from workbench.tuning.measure import measure_latencies  # noqa: E402
from workbench.tuning.precision import compare  # noqa: E402
from workbench.tuning.profiledb import ProfileDatabase  # noqa: E402

PLANS = ("fp32", "qint8", "mixed")
COLUMNS = [("model", "model"), ("fp32_ms", "ours fp32"), ("qint8_ms", "ours qint8"), ("mixed_ms", "ours mixed"),
           ("ort_ms", "ORT fp32"), ("ort_int8_ms", "ORT int8"), ("ov_bf16_ms", "OV bf16"),
           ("mixed_vs_best_own", "mixed / min(fp32, qint8)"), ("mixed_vs_ort_int8", "mixed / ORT int8"),
           ("mixed_cos", "mixed cosine"), ("mixed_top1", "mixed top-1"), ("qint8_cos", "qint8 cosine"),
           ("ort_int8_cos", "ORT int8 cosine"), ("ort_int8_top1", "ORT int8 top-1"),
           ("mixed_layers", "mixed: q8/bf16/f32 layers"), ("tune_all_s", "tune all precisions s"),
           ("idle_mixed", "idle/warm mixed"), ("idle_ort_int8", "idle/warm ORT int8")]
SEEDS_CAL = 1000


def _session(name, threads, db):
    from workbench import zoo
    from workbench.session import Session
    if name in zoo.NAMES:
        model = zoo.build(name)
        return Session.from_onnx(model, num_threads=threads, db=db), model
    m = peers.realmodels.MODELS[name]
    path = peers.realmodels.fetch(name)
    return Session.from_onnx(str(path), num_threads=threads, db=db, batch=1, resolution=m.resolution), path


def _row(name, args, db):
    session, model = _session(name, args.threads, db)
    cal = [random_inputs(session.graph, SEEDS_CAL + i) for i in range(args.calibration)]   # NCHW, as peers take them
    session.calibrate(cal)
    plans, compiled = {}, {}
    t0 = time.perf_counter()
    session.tune(precisions=["float32", "bfloat16", "qint8"], min_cosine=args.min_cosine)
    tune_all = time.perf_counter() - t0
    plans["mixed"] = (dict(session.plan.choice), str(session.budget) if session.budget else "")
    compiled["mixed"] = session.compile()
    session.max_error = session.min_cosine = None
    for plan, precisions in (("fp32", ["float32"]), ("qint8", ["qint8"])):
        session.tune(precisions=precisions)
        plans[plan] = (dict(session.plan.choice), "")
        compiled[plan] = session.compile()
    feeds = random_inputs(session.graph, 0)
    runners = {p: (lambda m=compiled[p]: m.run(feeds)) for p in PLANS}
    engine_list = [engines.Engine(p, runners[p], None) for p in PLANS]
    ort = engines.onnxruntime(model, feeds, args.threads)
    try:
        q8 = engines.ort_quantized(model, cal)
    except Exception as e:   # noqa: BLE001 - a model ORT cannot quantize still has our plans and the others
        q8, peer_notes = None, [f"ORT int8: {type(e).__name__}: {str(e)[:200]}"]
    else:
        peer_notes = []
    ort8 = None if q8 is None else engines.onnxruntime(q8, feeds, args.threads)
    ov = engines.openvino(model, feeds, args.threads, precision="bf16")
    for key, e in (("ort", ort), ("ort_int8", ort8), ("ov_bf16", ov)):
        if e is not None:
            runners[key] = e.run
            engine_list.append(engines.Engine(key, e.run, e.outputs))
    timed = measure_latencies(runners, args.runs)
    idle = wb_bench.first_after_idle(engine_list, args.idle_runs, args.idle / 1e3)
    lat = {k: v.median * 1e3 for k, v in timed.items()}
    row = {"model": name, **{f"{k}_ms": v for k, v in lat.items()}, "tune_all_s": tune_all,
           "budget": plans["mixed"][1], "peer_notes": peer_notes,
           "same_plan_as_qint8": plans["mixed"][0] == plans["qint8"][0]}
    row["mixed_vs_best_own"] = lat["mixed"] / min(lat["fp32"], lat["qint8"])
    if "ort_int8" in lat:
        row["mixed_vs_ort_int8"] = lat["mixed"] / lat["ort_int8"]
    for k, samples in idle.items():
        row[f"idle_{k}"] = float(np.median(samples)) * 1e3 / lat[k]
    choice = plans["mixed"][0]
    row["mixed_layers"] = "/".join(str(sum(f":{d}:" in r for r in choice.values())) for d in ("qint8", "bfloat16", "float32"))
    # errors against ORT fp32 on seeds 0-2, for our three plans and ORT int8
    refs, outs = [], {p: [] for p in PLANS + ("ort_int8",)}
    for seed in range(3):
        f = random_inputs(session.graph, seed)
        refs.append(engines.onnxruntime(model, f, args.threads).outputs())
        for p in PLANS:
            outs[p].append(engines.to_nchw(compiled[p].run(f), session.graph, session.io_format))
        if q8 is not None:
            outs["ort_int8"].append(engines.onnxruntime(q8, f, args.threads).outputs())
    for p, o in outs.items():
        if o:
            e = compare(o, refs)
            row.update({f"{p}_err": e.max_rel, f"{p}_cos": e.cosine, f"{p}_top1": e.top1})
    return row


def _fmt(key, v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.5f}" if key.endswith("_cos") else f"{v:.3f}" if key.endswith("_top1") else f"{v:.2f}"
    return str(v)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["zoo", "real"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--db", default=None, help="profile database (default: a new one per run, in --out)")
    p.add_argument("--min-cosine", type=float, default=0.99)
    p.add_argument("--calibration", type=int, default=8, help="seeded random calibration inputs")
    p.add_argument("--idle", type=float, default=50.0)
    p.add_argument("--idle-runs", type=int, default=10)
    p.add_argument("--out", default="artifacts/benchmarks")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db_path = Path(args.db) if args.db else out / f"qint8-{int(time.time())}.sqlite"
    db = ProfileDatabase(path=db_path, num_threads=args.threads)
    rows, notes = peers.each_model(args.models, lambda name: _row(name, args, db))
    lines = [f"# qint8 and mixed precision: {args.threads} threads, batch 1, medians (ms) of {args.runs} "
             f"interleaved rounds", "",
             f"Mixed: float32, bfloat16 and qint8 allowed, cosine >= {args.min_cosine} against float32 on the "
             f"{args.calibration} calibration inputs.  Errors against ORT fp32 on three other seeded inputs.  "
             f"idle/warm: the first run after {args.idle:g} ms idle over the warm median.", "",
             "| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(k, r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
    lines += [f"- {r['model']}: {r['budget']}" + ("; the mixed plan is the qint8 plan" if r.get("same_plan_as_qint8")
                                                  else "") for r in rows if r.get("budget")]
    lines += [f"- {r['model']}: {n}" for r in rows for n in r.get("peer_notes", [])]
    lines += [f"- {n}" for n in notes]
    (out / "qint8.md").write_text("\n".join(lines) + "\n")
    (out / "qint8.json").write_text(json.dumps({"rows": rows, "notes": notes, "args": vars(args),
                                                "machine": wb_bench.machine_facts(args.threads)}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
