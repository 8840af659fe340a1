"""The engines a benchmark times side by side: our compiled plan, ONNX Runtime and OpenVINO.

An :class:`Engine` is a zero-argument ``run`` plus ``outputs()`` (``{name: array}`` in NCHW,
whatever the session's io_format, so that every engine's outputs compare directly).  Peers run
the model file as given (NCHW inputs); they are optional: a peer that is not installed comes
back as ``None`` with a note saying why.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from ..errors import WorkbenchError

#: Peer names accepted by ``--peers`` -> engine names in reports.
PEERS = {"ort": "onnxruntime", "onnxruntime": "onnxruntime", "openvino": "openvino", "ov": "openvino",
         "openvino-bf16": "openvino-bf16", "ov-bf16": "openvino-bf16"}


class BenchError(WorkbenchError):
    """Bad benchmark input: an unknown peer, an option that does not apply."""


@dataclass
class Engine:
    name: str
    run: object                  # zero-argument callable: one inference
    outputs: object              # zero-argument callable: {output name: NCHW array}
    version: str = ""
    settings: dict = field(default_factory=dict)


def parse_peers(text):
    """``"ort,openvino"`` -> ``["onnxruntime", "openvino"]``; ``"none"`` or ``""`` -> ``[]``."""
    names = [p.strip().lower() for p in (text or "").split(",") if p.strip()]
    if names == ["none"]:
        return []
    unknown = [p for p in names if p not in PEERS]
    if unknown:
        raise BenchError(f"unknown peer(s) {', '.join(map(repr, unknown))}; known: ort, openvino, openvino-bf16 "
                         f"(or none)")
    return list(dict.fromkeys(PEERS[p] for p in names))


def to_nchw(outputs, graph, io_format):
    """Our outputs as the peers give them: 4-D float outputs of an NHWC session transposed back."""
    from ..runtime.interpreter import io_shape
    result = {}
    for name, value in outputs.items():
        spec = graph.spec(name)
        nhwc = value.ndim == 4 and io_shape(spec, io_format) != tuple(spec.shape)
        result[name] = value.transpose(0, 3, 1, 2) if nhwc else value
    return result


def ours(session, feeds, name="tuned"):
    """The session's compiled plan on ``feeds`` (in the session's io_format)."""
    from .._version import __version__
    model = session.compile()
    return Engine(name, lambda: model.run(feeds), lambda: to_nchw(model.run(feeds), session.graph, session.io_format),
                  version=__version__, settings={"threads": model.num_threads, "io_format": session.io_format})


def ort_session(model, threads, profile_prefix=None):
    """An ONNX Runtime CPU session on ``model`` (ModelProto, bytes or path): ORT_ENABLE_ALL,
    ``threads`` intra-op threads, one inter-op thread; profiling when ``profile_prefix`` is
    given.  None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnxruntime(model, feeds, threads):
    """ONNX Runtime on ``model`` with NCHW ``feeds``, or None when it is not installed."""
    sess = ort_session(model, threads)
    if sess is None:
        return None
    import onnxruntime as ort
    names = [o.name for o in sess.get_outputs()]
    return Engine("onnxruntime", lambda: sess.run(names, feeds),
                  lambda: dict(zip(names, sess.run(names, feeds))), version=ort.__version__,
                  settings={"threads": int(threads), "inter_op_threads": 1,
                            "graph_optimization_level": "ORT_ENABLE_ALL", "provider": "CPUExecutionProvider"})


def ort_quantized(model, calibration):
    """``model`` quantized by ONNX Runtime's ``quantize_static`` as its int8 CPU path is meant to
    be used: QDQ, uint8 activations, int8 weights per channel, MinMax ranges over
    ``calibration`` (a list of NCHW feeds); the quantized ModelProto, or None when onnxruntime
    is not installed.  A model below opset 13 is converted to 13 first (per-channel
    DequantizeLinear needs it)."""
    try:
        from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        return None
    import onnx

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.rest = iter(calibration)

        def get_next(self):
            return next(self.rest, None)

    proto = model if hasattr(model, "SerializeToString") else onnx.load_from_string(model) if isinstance(
        model, bytes) else onnx.load(os.fspath(model))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:   # per-channel DequantizeLinear (its axis) needs opset 13
        from onnx import version_converter
        proto = version_converter.convert_version(proto, 13)
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = (os.path.join(tmp, f) for f in ("model.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(proto, src)
        try:
            quant_pre_process(src, pre, skip_symbolic_shape=True)
        except Exception:   # the pre-processing is an optimisation of the result, not needed for it
            pre = src
        quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True)
        return onnx.load(out)


def onnxruntime_int8(model, feeds, threads, calibration):
    """ONNX Runtime on ``model`` quantized by :func:`ort_quantized` on ``calibration``, or None."""
    quantized = ort_quantized(model, calibration)
    engine = None if quantized is None else onnxruntime(quantized, feeds, threads)
    if engine is not None:
        engine.name = "onnxruntime-int8"
        engine.settings.update(quantization="quantize_static QDQ u8s8 per-channel MinMax",
                               calibration_inputs=len(calibration))
    return engine


def openvino(model, feeds, threads, precision="f32"):
    """OpenVINO on the CPU in ``precision`` (its INFERENCE_PRECISION_HINT: f32, or bf16 where the
    CPU has it), reshaped to the static shapes of ``feeds``; None when it is not installed (a
    benchmark-only dependency)."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    if hasattr(model, "SerializeToString") or isinstance(model, bytes):
        # read_model wants a file for ONNX; a temporary one is read whole before it goes away.
        data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(data)
            net = core.read_model(path)
    else:
        net = core.read_model(os.fspath(model))
    net.reshape({name: list(value.shape) for name, value in feeds.items()})
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": int(threads),
              "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(net, "CPU", config)
    request = compiled.create_infer_request()
    names = [o.get_any_name() for o in compiled.outputs]

    def outputs():
        result = request.infer(feeds)
        return {n: np.array(result[compiled.outputs[i]]) for i, n in enumerate(names)}
    return Engine("openvino" + ("" if precision == "f32" else f"-{precision}"), lambda: request.infer(feeds), outputs,
                  version=ov.get_version(),
                  settings={"threads": int(threads), "INFERENCE_PRECISION_HINT": precision,
                            "PERFORMANCE_HINT": "LATENCY", "device": "CPU"})


def peer(name, model, feeds, threads):
    """The engine of peer ``name`` (``"onnxruntime"``, ``"openvino"`` or ``"openvino-bf16"``), or
    None if not installed."""
    if name == "openvino-bf16":
        return openvino(model, feeds, threads, precision="bf16")
    return {"onnxruntime": onnxruntime, "openvino": openvino}[name](model, feeds, threads)


def output_errors(reference, engine_outputs):
    """Max relative error (:func:`workbench.onnx_io.ort.relative_error`) of an engine's outputs against
    ours, over the outputs both have; ``inf`` when they share none."""
    from ..onnx_io.ort import relative_error
    shared = [n for n in reference if n in engine_outputs]
    if not shared:
        return float("inf")
    return max(relative_error(engine_outputs[n], reference[n]) for n in shared)
