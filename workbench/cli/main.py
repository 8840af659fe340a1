"""The ``workbench`` command: info, run, routines, zoo, demo here; profile and tune in
:mod:`workbench.cli.tune` (which also handles tuned files given to run/routines/info).

Exit codes: 0 success, 1 a ``--check`` beyond tolerance, 2 bad input (missing/corrupt file,
unsupported op, wrong input name/shape/dtype), with a one-line (or one-block) message, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .. import __version__, zoo
from ..errors import InputError, WorkbenchError


def _parse_shape(text):
    try:
        name, dims = text.split("=", 1)
        shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
        if not name or any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=D1xD2x..., e.g. input=1x3x224x224, got {text!r}") from None
    return name, shape


def _parse_resolution(text):
    """``R`` or ``HxW`` -> int or (H, W)."""
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
        if len(dims) not in (1, 2) or any(d <= 0 for d in dims):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected R or HxW (positive sizes), e.g. 640 or 480x640, got {text!r}") from None
    return dims[0] if len(dims) == 1 else dims


def _parse_input(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy or NAME=IMAGE.png, got {text!r}")
    name, path = text.split("=", 1)
    return name, path


def _load_npy(name, path):
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--input {name}={path}: no such file")
    try:
        array = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises several types for bad files
        raise InputError(f"--input {name}={path}: not a readable .npy file ({e})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"--input {name}={path}: expected one array (.npy), got an archive")
    return array


def _load_inputs(args, model):
    """``--input`` values: ``.npy`` arrays as they are, images preprocessed for the model's input
    (:mod:`workbench.images`, with ``--resolution/--batch/--mean/--std/--scale/--bgr``)."""
    from .. import images
    from ..onnx_io.read import _dims, _np_dtype
    declared = {vi.name: vi for vi in _model_inputs(model)}
    arrays = {}
    for name, path in getattr(args, "input", None) or []:
        if not images.is_image(path):
            arrays[name] = _load_npy(name, path)
            continue
        if name not in declared:
            raise InputError(f"--input {name}={path}: unknown input name; {args.model} has inputs {list(declared)}")
        vi = declared[name]
        dims = _dims(vi)
        if dims is None:
            raise InputError(f"--input {name}={path}: input {name!r} declares no shape; give a .npy instead")
        mean = images.parse_floats(args.mean, "--mean") if args.mean else None
        std = images.parse_floats(args.std, "--std") if args.std else None
        scale = images.parse_floats(args.scale, "--scale")[0] if args.scale else None
        arrays[name] = images.load_image(
            path, [d if isinstance(d, int) else None for d in dims],
            dtype=_np_dtype(vi.type.tensor_type.elem_type, f"input {name!r}"), name=name,
            batch=getattr(args, "batch", None), resolution=getattr(args, "resolution", None),
            mean=mean, std=std, scale=scale, bgr=args.bgr)
    return arrays


def _shapes(args, model, arrays=None):
    """``--shape`` values (and the shapes of ``--input`` arrays), checked against the model's inputs."""
    shapes = dict(args.shape or [])
    for name, a in (arrays or {}).items():
        shapes.setdefault(name, a.shape)
    names = _input_names(model)
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; {args.model} has inputs {names}")
    return shapes or None


def _load_graph(args, arrays=None, fuse=True, model=None):
    """``(model, Graph)``: always the imported graph, a tuned file's included (its plan is ignored)."""
    from ..onnx_io.read import import_onnx
    from ..ir.passes import optimize
    model = model if model is not None else _read(args.model)
    graph = import_onnx(model, batch=args.batch, resolution=getattr(args, "resolution", None),
                        shapes=_shapes(args, model, arrays))
    if fuse:
        optimize(graph)
    return model, graph


def _read(path):
    from ..onnx_io.read import read_model
    return read_model(path)


def _model_inputs(model):
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _input_names(model):
    return [i.name for i in _model_inputs(model)]


def cmd_info(args):
    from ..ui import report
    from ..onnx_io.read import unsupported_ops
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
    compiled = CompiledModel(graph, assignment, num_threads=args.threads)
    feeds = random_inputs(graph, seed=args.seed)
    feeds.update(arrays)
    outputs = compiled.run(feeds)
    return _report_outputs(args, outputs, lambda optimize=True: run_onnxruntime(model, feeds, optimize=optimize))


def _report_outputs(args, outputs, reference, before_check=None):
    """Print ``outputs``, write them (``--output-dir``), compare with ``reference(optimize)``
    (``--check``: :func:`workbench.onnx_io.ort.compare` per output; ONNX Runtime runs twice, with and
    without its graph optimisations, so its own spread is known)."""
    from ..onnx_io.ort import compare_all, oracle_noise
    for name, value in outputs.items():
        print(f"{name}: {value.shape} {value.dtype}  mean {value.mean():.6g}  std {value.std():.6g}")
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, value in outputs.items():
            np.save(out / f"{_safe(name)}.npy", value)
        print(f"wrote {len(outputs)} output(s) to {out}/")
    if before_check:
        print(before_check)
    if args.check:
        ref = reference()
        noise = oracle_noise(ref, reference(optimize=False))
        checks = compare_all(outputs, ref, rtol=args.rtol, atol=args.atol, noise=noise)
        for name, c in checks.items():
            print(c.summary())
            if name in noise:
                print(f"  onnxruntime with vs without its graph optimisations: max abs difference {noise[name]:.3g}")
            for line in c.details():
                print(line)
        failed = [name for name, c in checks.items() if not c.passed]
        if failed:
            print(f"check FAILED: {', '.join(failed)}", file=sys.stderr)
            return 1
        print("check passed")
    return 0


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
        options = [r.descriptor for r in routines.applicable(graph, layer)]
        marked = [f"[{d}]" if d == assignment[layer.name] else d for d in options]
        print(f"{i:3d} {layer.name:28s} {layer.op:18s} {' '.join(marked)}")
    for fb in fallbacks:
        print(f"note: layer {fb.layer!r}: no {fb.wanted} routine applies; using {fb.chosen}")
    return 0


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


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
    sp.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of --check (default 1e-4)")
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
