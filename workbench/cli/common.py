"""Helpers every command group shares: reading a model and its inputs (``--input``, ``--shape``,
``--batch``, ``--resolution``), and reporting outputs against ONNX Runtime."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

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


def _parse_const(text):
    """``NAME=V[,V...]`` -> ``(name, array)``: integers where every value is one, else floats."""
    try:
        name, values = text.split("=", 1)
        parts = [v.strip() for v in values.split(",")]
        if not name or not parts or not all(parts):
            raise ValueError
        try:
            nums = [int(v) for v in parts]
        except ValueError:
            nums = [float(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,VALUE...], e.g. sr=16000, got {text!r}") from None
    return name, np.array(nums[0] if len(nums) == 1 else nums)


def _constants(args):
    """``--const`` values by input name (None: none given)."""
    return dict(getattr(args, "const", None) or []) or None


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


def _shape_sets(args):
    """The ``--shape`` values as sets of input shapes: an input given several times (``--shape
    x=1x3x48x320 --shape x=1x3x48x640``) has its n-th value in the n-th set, where inputs given
    fewer times keep their last."""
    given = {}
    for name, shape in args.shape or []:
        given.setdefault(name, []).append(shape)
    count = max((len(v) for v in given.values()), default=0)
    return [{k: v[min(i, len(v) - 1)] for k, v in given.items()} for i in range(count)]


def _shapes(args, model, arrays=None):
    """``--shape`` values (the first set, :func:`_shape_sets`, and the shapes of ``--input``
    arrays), checked against the model's inputs."""
    sets = _shape_sets(args)
    shapes = dict(sets[0]) if sets else {}
    for name, a in (arrays or {}).items():
        shapes.setdefault(name, a.shape)
    names = [n for n in _input_names(model) if n not in (_constants(args) or {})]
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
                        shapes=_shapes(args, model, arrays), constants=_constants(args))
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


def _report_outputs(args, outputs, reference, before_check=None, source=None, model=None, feeds=None):
    """Print ``outputs``, write them (``--output-dir``), compare with ``reference(optimize)``
    (``--check``: :func:`workbench.onnx_io.ort.compare` per output; ONNX Runtime runs twice, with and
    without its graph optimisations, so its own spread is known).  A TensorFlow ``source`` is
    checked against TensorFlow's own outputs on ``feeds`` instead (``model``: its conversion)."""
    from ..onnx_io import tensorflow
    from ..onnx_io.ort import compare_all, oracle_noise
    oracle = "onnxruntime"
    if source is not None and tensorflow.kind(source) is not None:
        oracle = "tensorflow"
        reference = (lambda optimize=True: tensorflow.reference_outputs(source, model, feeds))
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
        try:
            ref = reference()
            noise = oracle_noise(ref, reference(optimize=False)) if oracle == "onnxruntime" else {}
        except WorkbenchError:
            raise
        except Exception as e:   # noqa: BLE001 - the oracle's own failure, named as such
            raise WorkbenchError(f"--check: {oracle} (the oracle) cannot run {args.model}: "
                                 f"{type(e).__name__}: {str(e)[:500]}") from None
        if oracle == "tensorflow":
            print("check against TensorFlow's own outputs of the source file (the 'ort' figures below are TensorFlow's)")
        rtol = args.rtol if args.rtol is not None else 1e-4
        checks = compare_all(outputs, ref, rtol=rtol, atol=args.atol, noise=noise)
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


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
