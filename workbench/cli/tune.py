"""The tuning commands of ``workbench``: ``profile`` and ``tune``, and what ``run``, ``routines``
and ``info`` do with a tuned file (see :mod:`workbench.tuned_file`).

Registered by :func:`workbench.cli.main.build_parser`; errors are :class:`~workbench.errors.WorkbenchError`
subclasses (``ProfileDatabaseError``, ``PinError``, ``FilterError``, ``TunedModelError``) that
:func:`workbench.cli.main.main` turns into one line and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

from ..errors import InputError, WorkbenchError
from .tuned_shapes import _other_shapes, _reject_options, _reject_shape_options
from .. import routines
from ..ir.formats import parse_precisions
from ..tuning.precision import PrecisionError
from .precision import calibration_feeds, low_precision_check, precision_line, quantize_ranges


# -- argument parsing --------------------------------------------------------------------------
def parse_pin(text):
    """``LAYER=DESCRIPTOR`` (LAYER a name or an index) -> ``(layer, descriptor)``."""
    layer, eq, descriptor = text.rpartition("=")   # descriptors hold no '='; a layer name might
    layer, descriptor = layer.strip(), descriptor.strip()
    if not eq or not layer or descriptor.count(":") != 2 or "/" not in descriptor:
        raise argparse.ArgumentTypeError(
            f"expected LAYER=DEVICE:DTYPE:LAYOUT/ALGO (LAYER a name or an index as `workbench info` prints it), "
            f"e.g. 3=cpu:float32:nchw/winograd4, got {text!r}")
    return layer, descriptor


def add_parsers(sub, model_args):
    """Add ``profile`` and ``tune`` to the ``workbench`` sub-parsers."""
    def common(sp):
        model_args(sp)
        sp.add_argument("--threads", type=int, help="threads for kernels and BLAS (default: all available)")
        sp.add_argument("--db", metavar="PATH", help="profile database (default: $WORKBENCH_PROFILE_DB, else "
                                                      "~/.cache/routine-workbench/profiles.sqlite)")
        sp.add_argument("--reprofile", action="store_true", help="measure again instead of reusing the database")
        sp.add_argument("--repeats", type=int, default=10, help="timed runs per routine and adapt (default 10)")
        sp.add_argument("--jsonl", metavar="OUT.jsonl", help="write the profile records as JSON lines")
        sp.add_argument("--precision", default="float32", metavar="DTYPES",
                        help="data types the plan may compute in, comma separated: float32 (the default), "
                             "bfloat16 (bf16) and qint8 (int8; needs --calibration); a lower precision changes "
                             "the outputs, and tune measures and prints the error against float32")

    sp = sub.add_parser("profile", help="measure every layer x routine and every adapt (through the database)")
    common(sp)
    sp.add_argument("--rebuild-db", action="store_true",
                    help="move the database (corrupt or not) aside and start a new one")
    sp.set_defaults(func=cmd_profile)

    sp = sub.add_parser("tune", help="profile, select the fastest plan, measure it and write a tuned ONNX file")
    common(sp)
    sp.add_argument("-o", "--output", required=True, metavar="TUNED.onnx", help="the tuned model file to write")
    sp.add_argument("--routine", action="append", metavar="FILTER",
                    help="restrict the routines the tuner may choose (same syntax as `workbench run --routine`)")
    sp.add_argument("--pin", action="append", type=parse_pin, metavar="LAYER=DESCRIPTOR",
                    help="force a layer (name or index) onto a routine; repeatable")
    sp.add_argument("--runs", type=int, default=30, help="runs to measure the tuned model (default 30; 0 skips)")
    sp.add_argument("--max-error", type=float, metavar="E",
                    help="error budget for a lower precision: the plan's largest difference from float32 over "
                         "the output's peak (e.g. 0.01); the layers where bfloat16 buys the least time for "
                         "its error stay float32 until the plan is within it")
    sp.add_argument("--min-cosine", type=float, metavar="C",
                    help="accuracy budget for lower precisions: every output's cosine similarity with float32 "
                         "on the calibration inputs at least C (e.g. 0.99); the layers where a lower precision "
                         "buys the least time for its error stay float32 until the plan is within it")
    sp.add_argument("--calibration-method", default="minmax", choices=("minmax", "percentile", "mse", "entropy"),
                    help="how qint8 ranges are chosen from the calibration inputs (default minmax)")
    sp.add_argument("--synthetic-calibration", action="store_true",
                    help="calibrate qint8 on seeded random inputs when no --calibration is given: for timing "
                         "only, the ranges say nothing of real data (a warning says so)")
    sp.add_argument("--in-context", action="store_true",
                    help="time the plan inside the model and select again on those times (Session.time_in_context)")
    sp.add_argument("--calibration", metavar="PATH",
                    help="inputs to calibrate qint8 ranges and bfloat16 routines' bias correction on (and to "
                         "check the error budget on): a directory of .npy (one "
                         "input) or .npz (an array per input name) files, or one such file holding a stack of "
                         "samples along a first axis, or for a one-image-input model image files "
                         "(default: seeded random inputs)")
    sp.add_argument("--mean", metavar="M[,M,M]", help="--calibration images: per-channel mean subtracted after --scale")
    sp.add_argument("--std", metavar="S[,S,S]", help="--calibration images: per-channel std divided by after --mean")
    sp.add_argument("--scale", metavar="F", help="--calibration images: multiply the 0..255 pixels first (e.g. 1/255)")
    sp.add_argument("--bgr", action="store_true", help="--calibration images: channels in BGR order")
    sp.add_argument("--trace", metavar="OUT.json", help="write a Chrome trace of one tuned inference")
    sp.add_argument("--csv", metavar="OUT.csv", help="write the per-layer plan as CSV")
    sp.set_defaults(func=cmd_tune)


# -- helpers ------------------------------------------------------------------------------------
def _ms(seconds):
    return "-" if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) else f"{seconds * 1e3:.4f}"


def _table(rows, headers):
    from ..ui.report import format_table
    keys = [f"c{i}" for i in range(len(headers))]
    return format_table([dict(zip(keys, r)) for r in rows], list(zip(keys, headers)))


def _open_db(args, threads):
    from ..tuning.profiledb import ProfileDatabase, default_path
    path = Path(args.db) if args.db else default_path()
    if getattr(args, "rebuild_db", False):
        if any(Path(str(path) + s).exists() for s in ("", "-wal", "-shm")):
            moved = ProfileDatabase.rebuild(path)
            print(f"moved the old profile database {path} aside to {moved}; starting a new one")
        else:
            print(f"no profile database at {path}; starting a new one")
    return ProfileDatabase(path=path, num_threads=threads)


def _session(args):
    """The :class:`~workbench.session.Session` of ``args.model`` with its database opened."""
    from .common import _constants, _read, _shapes
    from ..runtime.compiled import default_threads
    from ..session import Session
    from ..tuned_file import is_tuned
    model = _read(args.model)
    if is_tuned(model):
        _reject_shape_options(args, model, "tuning it again keeps them")
    shapes = _shapes(args, model)
    try:
        precisions = parse_precisions(args.precision)
    except ValueError as e:
        raise WorkbenchError(f"--precision: {e}") from None
    threads = int(args.threads or default_threads())
    db = _open_db(args, threads)
    session = Session.from_onnx(model, num_threads=threads, db=db, batch=args.batch, resolution=args.resolution,
                                shapes=shapes, constants=_constants(args))
    session.precisions = precisions
    for note in routines.precision_notes(precisions):
        print(f"note: {note}")
    return session, db


def _profile(session, args):
    prof = session.profile(reprofile=args.reprofile, progress=True, repeats=args.repeats)
    print(f"profiled {session.graph.name!r} on {session.num_threads} thread(s): {prof.measured} record(s) measured, "
          f"{prof.reused} from the database {session.db.path}, {prof.shared} shared by identical layers or "
          f"tensors, in {session.profile_s:.2f} s")
    return prof


def load_tuned(model, name, num_threads=None):
    """:meth:`Session.load <workbench.session.Session.load>`, with a :class:`FingerprintWarning`
    printed as one ``warning:`` line."""
    from .. import tuned_file as tuned
    from ..session import Session
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = Session.load(model, num_threads=num_threads, name=name)
    for w in caught:
        if issubclass(w.category, tuned.FingerprintWarning):
            print("warning: " + " ".join(str(w.message).split()), file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return session


# -- profile --------------------------------------------------------------------------------------
def cmd_profile(args):
    session, db = _session(args)
    try:
        prof = _profile(session, args)
        rows = []
        for i, layer in enumerate(session.graph):
            recs = prof.routine.get(layer.name, {})
            best = min(recs.items(), key=lambda kv: (kv[1].median, kv[0])) if recs else None
            rows.append([str(i), layer.name, layer.op, best[0] if best else "-",
                         _ms(best[1].median) if best else "-", str(len(recs))])
        print()
        print(_table(rows, ["#", "layer", "op", "fastest routine", "ms", "routines"]))
        print(f"\n{sum(len(r) for r in prof.routine.values())} routine record(s) over {len(session.graph)} layers, "
              f"{len(prof.adapt)} adapt record(s)")
        if args.jsonl:
            session.export_profile(args.jsonl)
            print(f"wrote {args.jsonl}")
    finally:
        db.close()
    return 0


# -- tune -----------------------------------------------------------------------------------------
def cmd_tune(args):
    from ..tuning import filters as assign_mod
    session, db = _session(args)
    try:
        # Validate filters and pins before profiling anything.
        filters = list(args.routine or ())
        for f in filters:
            assign_mod.parse_filter(f, session.graph)
        session.filters = filters
        for layer, descriptor in args.pin or ():
            session.pin(layer, descriptor)
        session.allowed()          # a filter leaving a layer without a routine fails here
        if args.max_error is not None and not args.max_error >= 0:
            raise WorkbenchError(f"--max-error: an error budget is a number >= 0, got {args.max_error}")
        if args.min_cosine is not None and not -1 <= args.min_cosine <= 1:
            raise WorkbenchError(f"--min-cosine: a cosine budget is a number in [-1, 1], got {args.min_cosine}")
        feeds = calibration_feeds(args, session) if args.calibration else None
        if "qint8" in session.precisions:
            quantize_ranges(session, args, feeds)
        _profile(session, args)
        plan = session.tune(in_context=args.in_context, max_error=args.max_error, min_cosine=args.min_cosine,
                            calibration_inputs=None if "qint8" in session.precisions else feeds)
        if session.context is not None:
            c = session.context
            print(f"in context: {c.rounds} plan(s) timed, {c.challenged} layer(s) timed with their runner-up, "
                  f"{c.plans_changed} change(s) of plan, {c.overhead_s * 1e3:.3f} ms per run outside the steps")
        for fb in session.fallbacks:
            print(f"note: layer {fb.layer!r}: no {fb.wanted} routine applies; the tuner may use {fb.chosen}")
        rows = session.layer_rows()
        print()
        print(_table([[str(r["index"]), r["name"], r["op"], r["routine"] + (" (pinned)" if r["pinned"] else ""),
                       f"{r['cost_ms']:.4f}", r["runner_up"] or "-",
                       "-" if math.isnan(r["runner_up_ms"]) else f"{r['runner_up_ms']:.4f}",
                       ", ".join(a.split(":", 1)[1] for a in r["adapts"]) or "-"] for r in rows],
                     ["#", "layer", "op", "routine", "ms", "runner-up", "ms", "adapts in"]))
        print()
        print(f"plan: {plan.method}, {len(plan.adapts)} adapt(s), selected in {session.search_s * 1e3:.1f} ms")
        print(f"predicted: {session.predicted_s * 1e3:.4f} ms")
        if args.runs > 0:
            t = session.measure(runs=args.runs)
            print(f"measured:  {t.median * 1e3:.4f} ms (median of {args.runs} runs, {session.num_threads} thread(s))")
        else:
            print("measured:  skipped (--runs 0)")
        print(precision_line(session))
        if session.budget is not None:
            print(session.budget)
        elif session.max_error is not None or session.min_cosine is not None:
            from ..tuning.budget import Budget
            print(f"{Budget(session.max_error, session.min_cosine)}: met by the fastest plan (float32 throughout)")
        greedy = session.greedy_plan()
        print(f"vs greedy (fastest routine per layer, adapts then added): {greedy.cost * 1e3:.4f} ms predicted"
              f"{_saving(plan.cost, greedy.cost)}")
        families = session.family_plans()
        if families:
            fam, best = min(families.items(), key=lambda kv: (kv[1].cost, kv[0]))
            print(f"vs best single family ({fam}): {best.cost * 1e3:.4f} ms predicted{_saving(plan.cost, best.cost)}")
        _other_shapes(session, args)
        session.export(args.output, measure_runs=0)
        print(f"wrote {args.output}")
        for path, write in ((args.jsonl, session.export_profile), (args.trace, session.export_trace),
                            (args.csv, session.export_csv)):
            if path:
                write(path)
                print(f"wrote {path}")
    finally:
        db.close()
    return 0


def _saving(tuned_s, other_s):
    if not other_s or math.isinf(other_s):
        return ""
    pct = 100 * (other_s - tuned_s) / other_s
    if pct >= 0:
        return f" (the tuned plan is {pct:.1f}% cheaper)"
    return f" (the tuned plan is {-pct:.1f}% dearer: its filters and pins bind it)"


# -- tuned files in run / routines / info ---------------------------------------------------
def _meta_ms(meta, key, missing):
    try:
        return f"{float(meta[key]):.4f} ms"
    except (KeyError, ValueError):
        return missing


def tuned_summary(model, hint=True):
    """One line about a tuned file's plan, from its model metadata."""
    from ..tuned_file import PREFIX
    meta = {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    measured = _meta_ms(meta, "measured_ms", "not measured")
    predicted = _meta_ms(meta, "predicted_ms", "?")
    error = meta.get("precision_error")
    error = f"; {PrecisionError.from_dict(json.loads(error))}" if error else ""
    return (f"tuned file: plan {meta.get('plan_method', '?')}, predicted {predicted}, "
            f"measured at tune time {measured}, {meta.get('num_threads', '?')} thread(s){error}"
            + ("; `workbench routines FILE` shows each layer's routine and why" if hint else ""))


def run_tuned(args, model):
    """``workbench run TUNED.onnx``: the stored plan, no profiling."""
    from ..onnx_io.ort import run_onnxruntime
    from .common import _load_inputs, _report_outputs
    from ..runtime.interpreter import random_inputs
    from .common import _shape_sets
    shape_args = (args.shape, args.batch, getattr(args, "resolution", None))
    args.shape, args.batch, args.resolution = None, None, None   # a tuned file runs other shapes (below)
    try:
        _reject_options(args, model, "it runs")
    finally:
        args.shape, args.batch, args.resolution = shape_args
    if args.batch or getattr(args, "resolution", None):
        raise WorkbenchError(f"{args.model} is a tuned file: give other input shapes with --shape NAME=DIMS (or "
                             f"--input arrays of them); --batch and --resolution do not apply to it")
    arrays = _load_inputs(args, model)
    session = load_tuned(model, args.model, num_threads=args.threads)
    unknown = [n for n in list(arrays) + [k for s in _shape_sets(args) for k in s] if n not in session.graph.inputs]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; {args.model} has inputs {list(session.graph.inputs)}")
    sets = _shape_sets(args)
    shapes = {**(sets[0] if sets else {}), **{k: a.shape for k, a in arrays.items()}}
    target = session.for_shapes(shapes) if shapes else session   # plans (and warns) where the file holds none
    feeds = random_inputs(target.graph, seed=args.seed)
    feeds.update(arrays)
    outputs = session.run(feeds)
    low_precision_check(args, session.plan.choice)
    meta = session.tuned_metadata
    measured = _meta_ms(meta, "measured_ms", "not measured")
    code = _report_outputs(args, outputs, lambda optimize=True: run_onnxruntime(model, feeds, optimize=optimize),
                           before_check=(
        f"tuned plan: predicted {session.predicted_s * 1e3:.4f} ms, measured at tune time {measured} "
        f"({meta.get('plan_method', '?')}, {session.num_threads} thread(s))"
        + (f"; {session.precision}" if session.precision is not None else "")))
    return code


def routines_tuned(args, model):
    """``workbench routines TUNED.onnx``: each layer's routine and why (from the node metadata)."""
    from ..tuned_file import PREFIX
    _reject_options(args, model, "it lists")
    session = load_tuned(model, args.model)
    props = {n.name: {p.key[len(PREFIX):]: p.value for p in n.metadata_props if p.key.startswith(PREFIX)}
             for n in model.graph.node}
    print(tuned_summary(model, hint=False))
    for i, layer in enumerate(session.graph):
        p = props.get(layer.name, {})
        chosen = p.get("routine", session.plan.choice[layer.name])
        try:
            candidates = json.loads(p.get("candidates") or "{}")
            adapts = json.loads(p.get("adapts") or "[]")
        except ValueError as e:
            raise WorkbenchError(f"{args.model}: node {layer.name!r}: malformed {PREFIX}candidates or "
                                 f"{PREFIX}adapts ({e})") from None
        cost = candidates.get(chosen)
        pinned = p.get("pinned") == "1"
        print(f"{i:3d} {layer.name:28s} {layer.op:18s} {chosen}  {'-' if cost is None else f'{cost:.4f} ms'}"
              + ("  [pinned]" if pinned else ""))
        if pinned:
            why = "pinned"
        elif not candidates:
            why = "no profiled costs stored"
        else:
            fastest = min(candidates.items(), key=lambda kv: (kv[1], kv[0]))
            if fastest[0] == chosen or (cost is not None and cost <= fastest[1]):
                why = f"fastest of {len(candidates)}"
            else:
                why = (f"not the fastest alone ({fastest[0]} {fastest[1]:.4f} ms): chosen for the layouts of its "
                       f"neighbours (fewer or cheaper adapts)")
        print(f"      why: {why}")
        others = [f"{d} {v:.4f}" for d, v in sorted(candidates.items(), key=lambda kv: (kv[1], kv[0])) if d != chosen]
        if others:
            print(f"      others (ms): {', '.join(others)}")
        if adapts:
            print(f"      adapts into it: {', '.join(f'{t} {s}->{d}' for t, s, d in adapts)}")
    return 0
