"""Comparison against ONNX Runtime, the correctness oracle (a test/CLI extra, never a routine)."""
from __future__ import annotations

import numpy as np

from .errors import WorkbenchError


def relative_error(ours, reference) -> float:
    """``max|ours - reference| / max|reference|`` (absolute error when the reference is all zero)."""
    ours, reference = np.asarray(ours), np.asarray(reference)
    if ours.shape != reference.shape:
        return float("inf")
    if ours.dtype.kind in "biu" or ours.dtype == bool:
        return 0.0 if np.array_equal(ours, reference) else float("inf")
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    diff = float(np.max(np.abs(ours.astype(np.float64) - reference))) if reference.size else 0.0
    return diff / scale if scale > 0 else diff


def run_onnxruntime(model, feeds, threads=2):
    """Run ``model`` (path, bytes or ModelProto) in ONNX Runtime on the CPU; ``{output: array}``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise WorkbenchError("onnxruntime is not installed; it is needed for --check "
                             "(pip install onnxruntime)") from None
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def compare_outputs(ours, reference):
    """``{output: relative error}`` for every output of ``reference``."""
    return {name: relative_error(ours[name], ref) for name, ref in reference.items()}
