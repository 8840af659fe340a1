"""``workbench bench``: latency percentiles, throughput, first run after idle, slowdown under
load, per-op-type totals, beside ONNX Runtime and OpenVINO (see :mod:`workbench.bench`).

MODEL is an ONNX file (tuned here first, through the profile database), a tuned file (its
stored plan, no profiling) or a zoo name.  Bad input exits 2 through
:class:`~workbench.errors.WorkbenchError` (:class:`~workbench.bench.BenchError` for the options).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def add_parser(sub, model_args):
    """Register the ``bench`` sub-command on ``sub``."""
    sp = sub.add_parser("bench", help="benchmark the tuned plan beside ONNX Runtime / OpenVINO: percentiles, "
                                      "throughput, first run after idle, load, per-op totals")
    model_args(sp)
    # model_args' positional says "ONNX model file"; bench takes more.
    for action in sp._actions:
        if action.dest == "model":
            action.help = "ONNX model file (tuned first), tuned file (its plan as stored) or zoo name"
    sp.add_argument("--peers", default="ort", metavar="ort,openvino",
                    help="engines timed beside ours: ort, openvino, or none (default: ort)")
    sp.add_argument("--runs", type=int, default=30, help="interleaved timed rounds (default 30)")
    sp.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    sp.add_argument("--threads", type=int, help="threads for every engine (default: all available; a tuned file: "
                                                "its own)")
    sp.add_argument("--idle", type=float, default=50.0, metavar="MS",
                    help="idle pause before each first-run-after-idle sample (default 50 ms)")
    sp.add_argument("--idle-runs", type=int, default=10, help="first-run-after-idle samples per engine (default 10; "
                                                             "0 skips)")
    sp.add_argument("--in-context", action="store_true",
                    help="tune with the plan timed inside the model (Session.time_in_context)")
    sp.add_argument("--load", action="store_true",
                    help="also time every engine with another process keeping one core busy")
    sp.add_argument("--op-runs", type=int, default=5, help="runs behind the per-op-type totals (default 5; 0 skips)")
    sp.add_argument("--db", metavar="PATH", help="profile database (default: $WORKBENCH_PROFILE_DB, else "
                                                  "~/.cache/routine-workbench/profiles.sqlite)")
    sp.add_argument("-o", "--output", metavar="PREFIX",
                    help="report prefix: writes PREFIX.json and PREFIX.md (default artifacts/bench/<model stem>)")
    sp.set_defaults(func=cmd_bench)


def _check_counts(args):
    from ..bench import BenchError
    for opt, value, low in (("--runs", args.runs, 1), ("--warmup", args.warmup, 0), ("--idle", args.idle, 0),
                            ("--idle-runs", args.idle_runs, 0), ("--op-runs", args.op_runs, 0),
                            ("--threads", args.threads if args.threads is not None else 1, 1)):
        if value < low:
            raise BenchError(f"{opt} must be >= {low}, got {value:g}")


def open_model(args):
    """``(session, model, stem, how)``: the session to benchmark, the ModelProto the peers run,
    the report's name and how the plan was obtained."""
    from .. import zoo
    from .common import _constants, _read, _shapes
    from ..bench import BenchError
    from .tune import _open_db, load_tuned
    from ..runtime.compiled import default_threads
    from ..session import Session
    from ..tuned_file import is_tuned
    path = Path(args.model)
    if not path.exists() and args.model in zoo.NAMES:
        resolution = args.resolution
        if isinstance(resolution, tuple):   # the zoo builds square inputs
            if resolution[0] != resolution[1]:
                raise BenchError(f"zoo model {args.model} takes a square --resolution R, got {resolution[0]}x{resolution[1]}")
            resolution = resolution[0]
        model = zoo.build(args.model, batch=args.batch or 1, resolution=resolution)
        stem, shapes = args.model, None
    else:
        model = _read(args.model)   # a missing or broken file raises ModelFileError here
        stem = path.name[:-len(".onnx")] if path.name.endswith(".onnx") else path.stem
        if is_tuned(model):
            given = [opt for opt, v in (("--shape", args.shape), ("--const", args.const), ("--batch", args.batch),
                                        ("--resolution", args.resolution), ("--db", args.db)) if v]
            if given:
                raise BenchError(f"{args.model} is a tuned file: {', '.join(given)} do(es) not apply to it (bench "
                                 f"times its stored plan at the shapes it was tuned for); retune it with "
                                 f"`workbench tune` first")
            session = load_tuned(model, args.model, num_threads=args.threads)
            return session, model, stem, f"stored in the tuned file ({session.plan.method}), no profiling"
        shapes = _shapes(args, model)
    threads = int(args.threads or default_threads())
    db = _open_db(args, threads)
    try:
        session = Session.from_onnx(model, num_threads=threads, db=db, batch=args.batch,
                                    resolution=None if args.model in zoo.NAMES and not path.exists() else args.resolution,
                                    shapes=shapes, constants=_constants(args))
        t0 = time.perf_counter()
        plan = session.tune(in_context=args.in_context)
        prof = session.profiled
        how = (f"tuned here in {time.perf_counter() - t0:.2f} s ({plan.method}; profile: {prof.measured} record(s) "
               f"measured, {prof.reused} reused from {db.path})")
        session.compile()
    finally:
        db.close()
    return session, model, stem, how


def cmd_bench(args):
    from .. import bench
    peers = bench.parse_peers(args.peers)   # an unknown peer fails before anything is measured
    _check_counts(args)
    session, model, stem, how = open_model(args)
    result = bench.bench(session, model, peers=peers, runs=args.runs, warmup=args.warmup, idle_ms=args.idle,
                         idle_runs=args.idle_runs, with_load=args.load, op_runs=args.op_runs, name=stem)
    result.tuning["how"] = how
    print(bench.report.text(result))
    json_path, md_path = bench.report.write(result, args.output or Path("artifacts/bench") / stem)
    print(f"\nwrote {json_path}\nwrote {md_path}")
    sys.stdout.flush()
    return 0
