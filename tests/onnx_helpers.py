"""Shared test helpers: small ONNX models built with onnx.helper, and ONNX Runtime as the oracle."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import workbench
from workbench.onnx_io.ort import relative_error, run_onnxruntime
from workbench.onnx_io.write import export_graph


def make_model(nodes, inputs, outputs, initializers=(), opset=17, name="test"):
    """A model from node protos; ``inputs``/``outputs`` are (name, shape) or (name, shape, elem_type)."""
    def vi(spec):
        n, shape, *t = spec
        return helper.make_tensor_value_info(n, t[0] if t else TensorProto.FLOAT, shape)

    graph = helper.make_graph(nodes, name, [vi(i) for i in inputs], [vi(o) for o in outputs],
                              initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def assert_matches_onnxruntime(model, fuse=True, rtol=1e-4, seed=0, **load_kwargs):
    """Import ``model``, run the reference executor and compare every output with ONNX Runtime."""
    graph = workbench.load(model.SerializeToString(), fuse=fuse, **load_kwargs)
    feeds = workbench.random_inputs(graph, seed=seed)
    ours = workbench.ReferenceExecutor(graph).run(feeds)
    theirs = run_onnxruntime(model, feeds)
    assert set(ours) == set(theirs)
    for name, ref in theirs.items():
        assert ours[name].shape == ref.shape, name
        assert relative_error(ours[name], ref) <= rtol, (name, relative_error(ours[name], ref))
    return graph, ours


def check_round_trip(graph, model):
    """The fused graph exported as ONNX runs in ONNX Runtime like the original, and re-imports the same."""
    exported = export_graph(graph)
    onnx.checker.check_model(exported)
    feeds = workbench.random_inputs(graph, seed=3)
    ours, ref = run_onnxruntime(exported, feeds), run_onnxruntime(model, feeds)
    for name in ref:
        assert relative_error(ours[name], ref[name]) <= 1e-4, name
    again = workbench.load(exported)
    assert [(l.name, l.op, l.attrs.get("activation")) for l in again] == \
           [(l.name, l.op, l.attrs.get("activation")) for l in graph]
