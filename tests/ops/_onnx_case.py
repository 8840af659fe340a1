"""Build tiny ONNX models and check workbench's reference against ONNX Runtime.

``run_case`` is the one entry point: it runs the model with ORT (CPU) and with
``workbench.ReferenceExecutor`` on the graph imported without and with fusion, and asserts that
the output shapes, dtypes, inferred specs and values agree.  A model that ORT refuses at session
creation is rejected as a hypothesis example (the spec or ORT does not allow it), never ours;
set WB_SHOW_ORT_REJECTS=1 (with ``pytest -s``) to see why ORT refused each one.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import reject, settings
from onnx import helper, numpy_helper

import workbench

#: Hypothesis settings of the per-op tests: deterministic for CI, no deadline (ORT session
#: creation has a variable first-call cost).  For a longer random search, set
#: WB_OPS_EXAMPLES_SCALE (multiplies every test's example count) and WB_OPS_RANDOM=1.
SETTINGS = dict(deadline=None, derandomize=not os.environ.get("WB_OPS_RANDOM"), database=None)
SCALE = float(os.environ.get("WB_OPS_EXAMPLES_SCALE", "1"))


def cases(n):
    return settings(max_examples=max(1, int(n * SCALE)), **SETTINGS)


ort.set_default_logger_severity(3)
_SESSION_OPTIONS = ort.SessionOptions()
_SESSION_OPTIONS.log_severity_level = 3  # ORT's warnings about unused initializers are noise here
_SESSION_OPTIONS.intra_op_num_threads = 1
_SESSION_OPTIONS.inter_op_num_threads = 1


def _elem_type(dtype):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def model(nodes, inputs, outputs, inits=None, opset=17):
    """A ModelProto.

    Parameters
    ----------
    nodes : NodeProto or list of them
    inputs : dict name -> numpy array (its shape and dtype declare the graph input)
    outputs : list of output names (declared without a shape: inference is what is checked)
    inits : dict name -> numpy array, the initializers (weights, constant operands)
    """
    nodes = [nodes] if isinstance(nodes, onnx.NodeProto) else list(nodes)
    g = helper.make_graph(
        nodes, "case",
        [helper.make_tensor_value_info(k, _elem_type(v.dtype), list(v.shape)) for k, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    opsets = [helper.make_opsetid("", opset)]
    try:
        return helper.make_model_gen_version(g, opset_imports=opsets)
    except ValueError:  # opsets older than onnx's version table (before opset 7): IR version 3
        return helper.make_model(g, opset_imports=opsets, ir_version=3)


def ort_session(m):
    """An ORT session for ``m``; a model ORT refuses is rejected as a hypothesis example."""
    try:
        return ort.InferenceSession(m.SerializeToString(), _SESSION_OPTIONS, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises several Fail/InvalidGraph/NotImplemented types
        if os.environ.get("WB_SHOW_ORT_REJECTS"):
            print("ORT refused:", str(e)[-300:])
        reject()


def ort_run(m, feeds):
    sess = ort_session(m)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def assert_close(ours, ref, tol=1e-4, what=""):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != ORT {ref.shape}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != ORT {ref.dtype}"
    if ref.dtype.kind == "f":
        assert np.array_equal(np.isnan(ours), np.isnan(ref)), f"{what}: NaN positions differ"
        fin = ~np.isnan(ref)
        assert np.array_equal(ours[fin & np.isinf(ref)], ref[fin & np.isinf(ref)]), f"{what}: infinities differ"
        fin &= ~np.isinf(ref)
        if fin.any():
            err = np.abs(ours[fin].astype(np.float64) - ref[fin]).max()
            scale = max(float(np.abs(ref[fin]).max()), 1.0)
            assert err <= tol * scale, f"{what}: max |ours - ORT| = {err:.3g} > {tol} * {scale:.3g}"
    else:
        np.testing.assert_array_equal(ours, ref, err_msg=what)


def run_case(m, feeds, expect=None, fuse=(False, True), tol=1e-4, check_fused=None, ort_model=None):
    """Compare workbench with ORT on ``m``; returns (ORT outputs, {fuse: graph}).

    expect : str or tuple of str
        Op types the un-fused import must hold as layers (the op was taken, not something else).
    check_fused : callable(graph), optional
        Extra assertion on the fused graph (e.g. that the fusion actually happened).
    ort_model : ModelProto, optional
        An equivalent model that ORT runs in place of ``m``, where ORT lacks a feature the spec
        has (e.g. Conv with auto_pad SAME and dilation): the test spells the feature out instead.
    """
    feeds = {k: np.asarray(v) for k, v in feeds.items()}  # 0-d arithmetic gives NumPy scalars
    ref = ort_run(m if ort_model is None else ort_model, feeds)
    data = m.SerializeToString()
    graphs = {}
    for f in fuse:
        g = workbench.load(data, fuse=f)
        graphs[f] = g
        if expect and not f:
            counts = g.op_counts()
            for op in (expect,) if isinstance(expect, str) else expect:
                assert counts.get(op, 0) >= 1, f"no {op} layer after import: {counts}"
        if check_fused is not None and f:
            check_fused(g)
        out = workbench.ReferenceExecutor(g).run(feeds)
        assert set(out) == set(ref), (sorted(out), sorted(ref))
        for name, value in ref.items():
            what = f"{name} (fuse={f})"
            spec = g.spec(name) if name not in g.constants else workbench.TensorSpec.of(g.constants[name])
            assert spec.shape == value.shape, f"{what}: inferred shape {spec.shape} != actual {value.shape}"
            assert spec.dtype == value.dtype.name, f"{what}: inferred dtype {spec.dtype} != actual {value.dtype}"
            assert_close(out[name], value, tol, what)
    return ref, graphs


def randn(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def same_pads(sizes, kernel, strides, dilations, mode):
    """The ONNX spec's SAME padding: output ceil(in / stride), the odd pixel at the end for SAME_UPPER.

    For the cases where ORT does not follow the spec (SAME with dilation), the test gives ORT
    these explicit pads instead.
    """
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else big)
        end.append(big if mode == "SAME_UPPER" else small)
    return begin + end
