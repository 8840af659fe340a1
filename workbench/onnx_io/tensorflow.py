"""TensorFlow, Keras and TFLite files, converted to ONNX through tf2onnx and cached.

Every command and API that reads a model (:func:`~workbench.onnx_io.read.read_model`) also takes
a TensorFlow SavedModel directory, a Keras ``.keras`` or ``.h5`` file, or a ``.tflite`` file.  The
first read converts it with tf2onnx (the optional ``tf`` extra: ``pip install
'routine-workbench[tf]'``) and keeps the ONNX file in the cache, keyed by the source's bytes, the
tf2onnx version and the opset; later reads take the cached file.  Both the conversion and the
cached path are printed (standard error), so the user knows which file is being run.

A converter that writes a recurrent layer as a ``Loop`` over the sequence is handled by the
importer, which unrolls it (:mod:`workbench.onnx_io.control_flow`).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from ..errors import ModelFileError, WorkbenchError

#: The ONNX opset the conversions target.
OPSET = 17
KERAS_SUFFIXES = (".keras", ".h5")
INSTALL = "pip install 'routine-workbench[tf]'"


class MissingExtraError(WorkbenchError):
    """An optional dependency a request needs is not installed."""


def kind(source):
    """``"saved_model"``, ``"keras"`` or ``"tflite"`` for a TensorFlow source path, else None."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    p = Path(source)
    if p.is_dir():
        return "saved_model" if (p / "saved_model.pb").is_file() or (p / "saved_model.pbtxt").is_file() else None
    suffix = p.suffix.lower()
    return "keras" if suffix in KERAS_SUFFIXES else "tflite" if suffix == ".tflite" else None


def cache_dir():
    return Path(os.environ.get("WORKBENCH_CONVERT_CACHE", Path.home() / ".cache" / "routine-workbench" / "converted"))


def _digest(path, tool_version):
    h = hashlib.sha256(f"{tool_version}|opset {OPSET}|".encode())
    files = sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else [path]
    for q in files:
        h.update(str(q.relative_to(path) if path.is_dir() else q.name).encode())
        with open(q, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:32]


def _tf2onnx():
    try:
        import tf2onnx
        import tensorflow  # noqa: F401 - tf2onnx converts through it
    except ImportError as e:
        raise MissingExtraError(f"reading a TensorFlow, Keras or TFLite file needs tensorflow and tf2onnx, which are "
                                f"not installed ({e.name or e}): {INSTALL}") from None
    return tf2onnx


def convert(source):
    """The path of the ONNX conversion of TensorFlow source ``source`` (converted now, or from
    the cache)."""
    what = kind(source)
    path = Path(source)
    if what is None:
        raise ModelFileError(f"{source}: not a SavedModel directory, a Keras .keras/.h5 file or a .tflite file")
    tf2onnx = _tf2onnx()
    target = cache_dir() / f"{path.stem or path.name}-{_digest(path, tf2onnx.__version__)}.onnx"
    if target.is_file():
        print(f"{source}: the ONNX conversion cached at {target}", file=sys.stderr)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.onnx")
    print(f"{source}: converting the {what.replace('_', ' ')} to ONNX with tf2onnx {tf2onnx.__version__} "
          f"(opset {OPSET})...", file=sys.stderr)
    try:
        if what == "saved_model":
            # the command line form: it loads the SavedModel's signatures and freezes the graph
            done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(path), "--output",
                                   str(partial), "--opset", str(OPSET)], capture_output=True, text=True)
            if done.returncode != 0 or not partial.is_file():
                raise ModelFileError(f"{source}: tf2onnx could not convert the SavedModel: "
                                     f"{done.stderr.strip()[-800:]}")
        else:
            import onnx
            if what == "keras":
                proto = _convert_keras(tf2onnx, path)
            else:
                proto, _ = tf2onnx.convert.from_tflite(str(path), opset=OPSET)
            onnx.save(proto, str(partial))
    except WorkbenchError:
        raise
    except Exception as e:   # noqa: BLE001 - TensorFlow and tf2onnx raise many types for a bad file
        raise ModelFileError(f"{source}: tf2onnx could not convert it: {type(e).__name__}: {str(e)[:800]}") from None
    partial.replace(target)   # atomic: a concurrent reader never sees half a file
    print(f"{source}: converted, cached at {target}", file=sys.stderr)
    return target


def _convert_keras(tf2onnx, path):
    import keras
    import tensorflow as tf
    model = keras.models.load_model(str(path), compile=False)
    spec = [tf.TensorSpec(t.shape, t.dtype, name=getattr(t, "name", None) or f"input_{i}")
            for i, t in enumerate(model.inputs)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET)
    return proto


def _stripped(name):
    return name[:-2] if name.endswith(":0") else name


def _pair(tf_names, onnx_names):
    """Index into ``tf_names`` of each of ``onnx_names``: by name (``:0`` suffixes aside, and the
    ``serving_default_`` prefix TFLite gives signature inputs), else by position."""
    keys = {}
    for i, n in enumerate(tf_names):
        for k in (_stripped(n), _stripped(n).removeprefix("serving_default_")):
            keys.setdefault(k, i)
    found = [keys.get(_stripped(n)) for n in onnx_names]
    if None in found or len(set(found)) != len(found):
        return list(range(len(onnx_names)))
    return found


def reference_outputs(source, model, feeds):
    """TensorFlow's own outputs of ``source`` on ``feeds`` (keyed by the ONNX inputs of its
    conversion ``model``), keyed by the conversion's output names: the oracle of ``--check``."""
    _tf2onnx()
    import numpy as np
    import tensorflow as tf
    inits = {i.name for i in model.graph.initializer}
    in_names = [i.name for i in model.graph.input if i.name not in inits]
    out_names = [o.name for o in model.graph.output]
    what, path = kind(source), str(source)
    if what == "keras":
        import keras
        m = keras.models.load_model(path, compile=False)
        order = _pair([getattr(t, "name", "") for t in m.inputs], in_names)
        xs = [None] * len(in_names)
        for onnx_i, tf_i in enumerate(order):
            xs[tf_i] = feeds[in_names[onnx_i]]
        ys = m(xs if len(xs) > 1 else xs[0], training=False)
        ys = [np.asarray(y) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]
        return dict(zip(out_names, ys))
    if what == "saved_model":
        fn = tf.saved_model.load(path).signatures["serving_default"]
        sig = list(fn.structured_input_signature[1])
        order = _pair(sig, in_names)
        result = fn(**{sig[tf_i]: tf.constant(feeds[in_names[onnx_i]]) for onnx_i, tf_i in enumerate(order)})
        keys = list(result)
        return {n: np.asarray(result[keys[k]]) for n, k in zip(out_names, _pair(keys, out_names))}
    interp = tf.lite.Interpreter(model_path=path)
    ins = interp.get_input_details()
    for onnx_i, tf_i in enumerate(_pair([d["name"] for d in ins], in_names)):
        x = feeds[in_names[onnx_i]]
        if tuple(ins[tf_i]["shape"]) != x.shape:
            interp.resize_tensor_input(ins[tf_i]["index"], x.shape)
    interp.allocate_tensors()
    for onnx_i, tf_i in enumerate(_pair([d["name"] for d in ins], in_names)):
        interp.set_tensor(ins[tf_i]["index"], feeds[in_names[onnx_i]])
    interp.invoke()
    outs = interp.get_output_details()
    return {n: np.array(interp.get_tensor(outs[k]["index"]))
            for n, k in zip(out_names, _pair([d["name"] for d in outs], out_names))}
