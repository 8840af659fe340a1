"""The ``workbench`` command: info, run, routines, zoo, demo here; profile and tune in
:mod:`workbench.cli.tune` (which also handles tuned files given to run/routines/info).

Exit codes: 0 success, 1 a ``--check`` beyond tolerance, 2 bad input (missing/corrupt file,
unsupported op, wrong input name/shape/dtype), with a one-line (or one-block) message, never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .. import zoo
from .._version import __version__
from ..errors import WorkbenchError
from .common import (_load_graph, _load_inputs, _parse_const, _parse_input, _parse_resolution, _parse_shape, _read,
                     _report_outputs)


def cmd_info(args):
    from ..ui import report
    from ..onnx_io.support import unsupported_ops
    model = _read(args.model)
    bad = unsupported_ops(model)
    if bad:
        from ..errors import UnsupportedOpsError
        raise UnsupportedOpsError(bad)
    _, graph = _load_graph(args, model=model)
    print(report.summary(graph))
    from ..tuned_file import is_tuned
    if is_tuned(model):
        from .tune import tuned_summary
        print(tuned_summary(model))
    print()
    print(report.format_table(report.layer_rows(graph), report.LAYER_COLUMNS))
    return 0


def cmd_run(args):
    from ..tuning.filters import assign
    from ..onnx_io.ort import run_onnxruntime
    from ..runtime.compiled import CompiledModel
    from ..runtime.interpreter import random_inputs
    from ..tuned_file import is_tuned
    model = _read(args.model)
    if is_tuned(model):
        from .tune import run_tuned
        return run_tuned(args, model)
    arrays = _load_inputs(args, model)
    model, graph = _load_graph(args, arrays, fuse=not args.no_fuse, model=model)
    assignment, fallbacks = assign(graph, args.routine or ())
    for fb in fallbacks:
        print(f"note: layer {fb.layer!r}: no {fb.wanted} routine applies; using {fb.chosen}")
    from .precision import low_precision_check
    low_precision_check(args, assignment)
    compiled = CompiledModel(graph, assignment, num_threads=args.threads)
    feeds = random_inputs(graph, seed=args.seed)
    feeds.update(arrays)
    outputs = compiled.run(feeds)
    peer_feeds = {**feeds, **graph.meta.get("constant_inputs", {})}   # the original model takes them as inputs
    return _report_outputs(args, outputs, lambda optimize=True: run_onnxruntime(model, peer_feeds, optimize=optimize),
                           source=args.model, model=model, feeds=peer_feeds)


def cmd_routines(args):
    from .. import routines
    if not args.model:
        for op, descriptor, _ in routines.all_routines():
            print(f"{op:22s} {descriptor}")
        return 0
    from ..tuning.filters import assign
    from ..tuned_file import is_tuned
    model = _read(args.model)
    if is_tuned(model):
        from .tune import routines_tuned
        return routines_tuned(args, model)
    _, graph = _load_graph(args, model=model)
    assignment, fallbacks = assign(graph, args.routine or ())
    for i, layer in enumerate(graph):
        options = [r.descriptor for r in routines.applicable(graph, layer, precisions=None)]
        marked = [f"[{d}]" if d == assignment[layer.name] else d for d in options]
        print(f"{i:3d} {layer.name:28s} {layer.op:18s} {' '.join(marked)}")
    for fb in fallbacks:
        print(f"note: layer {fb.layer!r}: no {fb.wanted} routine applies; using {fb.chosen}")
    return 0


def cmd_zoo(args):
    if not args.name:
        print("\n".join(zoo.NAMES))
        return 0
    if args.name not in zoo.NAMES:
        raise WorkbenchError(f"unknown zoo model {args.name!r}; known: {', '.join(zoo.NAMES)}")
    if not args.output:
        raise WorkbenchError("give the output file with -o FILE.onnx")
    kwargs = dict(batch=args.batch or 1, seed=args.seed)
    if args.resolution:
        kwargs["resolution"] = args.resolution
    path = zoo.save(args.name, args.output, **kwargs)
    print(f"wrote {path}")
    return 0


def cmd_demo(args):
    """The main job end to end: tune a zoo model, run it beside ONNX Runtime, export it, reload it."""
    from .demo import run_demo
    checks = run_demo(args.name, batch=args.batch or 1, resolution=args.resolution, output=args.output,
                      num_threads=args.threads, db=args.db, runs=args.runs)
    return 0 if all(c.passed for by_output in checks.values() for c in by_output.values()) else 1


def build_parser():
    p = argparse.ArgumentParser(prog="workbench", description="Routine Workbench: import, inspect and run CNN models.")
    p.add_argument("--version", action="version", version=f"workbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp):
        sp.add_argument("model", help="ONNX model file")
        sp.add_argument("--shape", action="append", type=_parse_shape, metavar="NAME=1x3x224x224",
                        help="shape of an input with symbolic dimensions (repeatable)")
        sp.add_argument("--batch", type=int, help="batch size, when the batch dimension is symbolic")
        sp.add_argument("--resolution", type=_parse_resolution, metavar="R|HxW",
                        help="height and width of 4-D inputs, when symbolic (R for a square)")
        sp.add_argument("--const", action="append", type=_parse_const, metavar="NAME=VALUE[,VALUE...]",
                        help="an input fixed to this value: it folds at load, and an If on it takes its branch "
                             "(a voice-activity model's sample rate: --const sr=16000); repeatable")

    def routine_args(sp):
        sp.add_argument("--routine", action="append", metavar="FILTER",
                        help="run layers with routines matching this filter: 'cpu:float32:nhwc/*' (every layer it "
                             "can; others fall back, reported) or 'cpu:float32:nchw/im2col@3,5..9' (those layers only; "
                             "indices as `workbench info` prints them, or layer names). Repeatable; the last filter "
                             "selecting a layer decides")
        sp.add_argument("--threads", type=int, help="threads for kernels and BLAS (default: all available)")

    sp = sub.add_parser("info", help="layers before and after fusion, parameters, MACs per layer")
    model_args(sp)
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("run", help="run a model (fast routines by default; see --routine); a tuned file runs its plan")
    model_args(sp)
    sp.add_argument("--input", action="append", type=_parse_input, metavar="NAME=FILE.npy|IMAGE",
                    help="an input from a .npy array, or a PNG/JPEG/BMP image (resized to the input's H, W or "
                         "--resolution, then --scale, --mean, --std; repeated over the batch)")
    sp.add_argument("--mean", metavar="M[,M,M]", help="image inputs: per-channel mean subtracted after --scale")
    sp.add_argument("--std", metavar="S[,S,S]", help="image inputs: per-channel std divided by after --mean")
    sp.add_argument("--scale", metavar="F", help="image inputs: multiply the 0..255 pixels first (e.g. 1/255)")
    sp.add_argument("--bgr", action="store_true", help="image inputs: channels in BGR order (--mean/--std too)")
    sp.add_argument("--output-dir", help="write each output as NAME.npy here")
    sp.add_argument("--check", action="store_true",
                    help="compare with ONNX Runtime elementwise, |ours-ort| <= atol + rtol*|ort|; exit 1 if any "
                         "element fails")
    sp.add_argument("--rtol", type=float, help="relative tolerance of --check (default 1e-4; for a plan with n "
                                               "bfloat16 layers, 4 x 2^-8 x sqrt(n))")
    sp.add_argument("--atol", type=float, help="absolute tolerance of --check (default: rtol x the RMS of each "
                                               "ONNX Runtime output, or ONNX Runtime's own spread if larger)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the random inputs not given with --input")
    sp.add_argument("--no-fuse", action="store_true", help="skip the fusion passes")
    routine_args(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("routines", help="list routines; with MODEL, the routines that apply to each layer "
                                         "(a tuned file: each layer's routine and why)")
    sp.add_argument("model", nargs="?", help="ONNX model file, or a tuned file")
    sp.add_argument("--shape", action="append", type=_parse_shape, metavar="NAME=1x3x224x224")
    sp.add_argument("--batch", type=int)
    sp.add_argument("--resolution", type=_parse_resolution, metavar="R|HxW")
    sp.add_argument("--routine", action="append", metavar="FILTER",
                    help="routine filter, e.g. 'cpu:float32:nhwc/*' or 'cpu:float32:nchw/im2col@3,5..9'")
    sp.set_defaults(func=cmd_routines)

    from .tune import add_parsers
    add_parsers(sub, model_args)
    from .bench import add_parser as add_bench_parser
    add_bench_parser(sub, model_args)

    sp = sub.add_parser("zoo", help="write a zoo model (no name: list them)")
    sp.add_argument("name", nargs="?")
    sp.add_argument("-o", "--output")
    sp.add_argument("--batch", type=int)
    sp.add_argument("--resolution", type=int)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_zoo)

    sp = sub.add_parser("demo", help="tune a zoo model end to end (profile, select, run beside ONNX Runtime, "
                                     "export, reload, check)")
    sp.add_argument("name", nargs="?", default="resnet50", choices=zoo.NAMES)
    sp.add_argument("--batch", type=int)
    sp.add_argument("--resolution", type=int)
    sp.add_argument("-o", "--output", help="tuned file (default artifacts/NAME.tuned.onnx)")
    sp.add_argument("--threads", type=int, help="threads for kernels and BLAS (default: all available)")
    sp.add_argument("--db", help="profile database (default: the user cache; $WORKBENCH_PROFILE_DB)")
    sp.add_argument("--runs", type=int, default=30, help="timed runs for the latencies (default 30)")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WorkbenchError as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: not an error of ours
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
