"""New input sizes on a session tuned at one size: the first run at each other width (which
plans for it), then that width's runs against a session tuned there from the start and ONNX
Runtime, timed interleaved.

    python benchmarks/new_shapes.py [--model ppocr_v4_rec] [--widths 160 480 640] [--runs 30]
                                    [--threads 2] [--db PATH] [--out DIR]

The model is a real one of :mod:`realmodels` whose width is symbolic (an OCR recogniser),
tuned in context at its benchmark resolution.  Per other width: the first run's wall time and
the NewShapeWarning's account of it (records measured, seconds), the max relative error of
that run against ONNX Runtime, then medians of interleaved rounds (an idle pause, a lead-in
run, a timed run) of the session at that width, of a session tuned at that width
(``tune(in_context=True)``, the same database) and of ONNX Runtime.  Writes DIR/new_shapes.md
and .json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).parent))
import realmodels  # noqa: E402
from _common import ort_session  # noqa: E402

from workbench import Session  # noqa: E402
from workbench.onnx_io.ort import relative_error  # noqa: E402
from workbench.session_shapes import NewShapeWarning  # noqa: E402
from workbench.tuning.measure import time_interleaved  # noqa: E402
from workbench.tuning.profiledb import ProfileDatabase, default_path  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ppocr_v4_rec")
    p.add_argument("--widths", nargs="+", type=int, default=[160, 480, 640])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--db", default=None)
    p.add_argument("--out", default="artifacts/benchmarks")
    args = p.parse_args(argv)
    m = realmodels.ALL[args.model]
    path = str(realmodels.fetch(args.model))
    db = ProfileDatabase(path=Path(args.db) if args.db else default_path(), num_threads=args.threads)
    base = Session.from_onnx(path, num_threads=args.threads, db=db, batch=1, resolution=m.resolution)
    base.tune(in_context=True)
    (name, spec), = base.graph.inputs.items()
    ort = ort_session(onnx.load(path), args.threads)
    rows = []
    for width in args.widths:
        shape = tuple(spec.shape[:-1]) + (width,)
        x = np.random.default_rng(width).standard_normal(shape).astype(np.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            first = base.run({name: x})
            first_s = time.perf_counter() - t0
        said = [str(c.message) for c in caught if issubclass(c.category, NewShapeWarning)]
        want = ort.run(None, {name: x})
        err = max(relative_error(first[o.name], w) for o, w in zip(ort.get_outputs(), want))
        tuned = Session.from_onnx(path, num_threads=args.threads, db=db, shapes={name: shape})
        tuned.tune(in_context=True)
        samples = time_interleaved({"planned on first use": lambda: base.run({name: x}),
                                    "tuned at this width": lambda: tuned.run({name: x}),
                                    "onnxruntime": lambda: ort.run(None, {name: x})}, args.runs)
        med = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
        row = {"width": width, "shape": list(shape), "first_run_ms": first_s * 1e3, "warning": said[0] if said else "",
               "max_rel_err_vs_ort": float(err), **{f"{k}_ms": v for k, v in med.items()},
               "planned_over_tuned": med["planned on first use"] / med["tuned at this width"],
               "planned_over_ort": med["planned on first use"] / med["onnxruntime"]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# New input sizes: {args.model} tuned at {tuple(spec.shape)}, {args.threads} threads, medians of "
             f"{args.runs} interleaved rounds", "",
             "| width | first run ms | planned ms | tuned-there ms | ORT ms | planned / tuned | planned / ORT | "
             "max err vs ORT |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['width']} | {r['first_run_ms']:.1f} | {r['planned on first use_ms']:.3f} | "
                     f"{r['tuned at this width_ms']:.3f} | {r['onnxruntime_ms']:.3f} | {r['planned_over_tuned']:.2f} | "
                     f"{r['planned_over_ort']:.2f} | {r['max_rel_err_vs_ort']:.1e} |")
    lines += ["", *[f"- width {r['width']}: {r['warning']}" for r in rows]]
    (out / "new_shapes.md").write_text("\n".join(lines) + "\n")
    (out / "new_shapes.json").write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
