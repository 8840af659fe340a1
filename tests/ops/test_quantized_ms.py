"""The com.microsoft quantized ops (ir/ops/quantized_ms.py), found through the importer's
(domain, op type, opset) registry, against ONNX Runtime's own kernels: within one step of the
output's scale (the float arithmetic of a requantization may round a tie the other way)."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench
from onnx_helpers import make_model
from workbench.errors import UnsupportedOpsError
from workbench.ir import ops

ort = pytest.importorskip("onnxruntime")
U8 = TensorProto.UINT8


def _ms(model):
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def _run_both(model, feeds):
    graph = workbench.load(model.SerializeToString(), fuse=False)
    ours = workbench.ReferenceExecutor(graph).run(feeds)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return graph, ours, dict(zip(names, sess.run(names, feeds)))


def _consts(**kw):
    out = []
    for name, (v, dt) in kw.items():
        out.append((name, np.asarray(v, dt)))
    return out


def test_the_registry_finds_ops_by_domain_and_opset():
    assert ops.lookup("com.microsoft", "QLinearAdd", 1).op_type == "QLinearAdd"
    assert ops.lookup("", "QLinearAdd", 21) is None          # not an ai.onnx op
    assert ops.lookup("ai.onnx", "Conv", 11) is ops.get("Conv")
    assert ops.lookup("com.microsoft", "Conv", 1) is None


def test_qlinear_add(rng):
    node = helper.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sc", "zc"], ["c"], domain="com.microsoft")
    model = _ms(make_model([node], [("a", [2, 3, 5, 4], U8), ("b", [1, 3, 1, 4], U8)], [("c", None, U8)],
                           _consts(sa=(0.02, np.float32), za=(120, np.uint8), sb=(0.05, np.float32),
                                   zb=(7, np.uint8), sc=(0.07, np.float32), zc=(100, np.uint8))))
    feeds = {"a": rng.integers(0, 256, (2, 3, 5, 4), dtype=np.uint8), "b": rng.integers(0, 256, (1, 3, 1, 4), dtype=np.uint8)}
    graph, ours, theirs = _run_both(model, feeds)
    assert [layer.op for layer in graph] == ["QLinearAdd"]
    assert np.abs(ours["c"].astype(int) - theirs["c"].astype(int)).max() <= 1
    assert (ours["c"] == theirs["c"]).mean() > 0.95


def test_qlinear_concat(rng):
    node = helper.make_node("QLinearConcat", ["sy", "zy", "x0", "s0", "z0", "x1", "s1", "z1"], ["y"], axis=1,
                            domain="com.microsoft")
    model = _ms(make_model([node], [("x0", [1, 3, 4, 4], U8), ("x1", [1, 5, 4, 4], U8)], [("y", None, U8)],
                           _consts(sy=(0.05, np.float32), zy=(128, np.uint8), s0=(0.03, np.float32), z0=(10, np.uint8),
                                   s1=(0.09, np.float32), z1=(200, np.uint8))))
    feeds = {"x0": rng.integers(0, 256, (1, 3, 4, 4), dtype=np.uint8), "x1": rng.integers(0, 256, (1, 5, 4, 4), dtype=np.uint8)}
    _, ours, theirs = _run_both(model, feeds)
    assert ours["y"].shape == (1, 8, 4, 4)
    assert np.abs(ours["y"].astype(int) - theirs["y"].astype(int)).max() <= 1


@pytest.mark.parametrize("channels_last", [0, 1])
def test_qlinear_global_average_pool(channels_last, rng):
    shape = [2, 6, 5, 7] if not channels_last else [2, 5, 7, 6]
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"],
                            channels_last=channels_last, domain="com.microsoft")
    model = _ms(make_model([node], [("x", shape, U8)], [("y", None, U8)],
                           _consts(sx=(0.04, np.float32), zx=(90, np.uint8), sy=(0.01, np.float32), zy=(30, np.uint8))))
    feeds = {"x": rng.integers(0, 256, shape, dtype=np.uint8)}
    _, ours, theirs = _run_both(model, feeds)
    assert ours["y"].shape == theirs["y"].shape
    assert np.abs(ours["y"].astype(int) - theirs["y"].astype(int)).max() <= 1


def test_an_unknown_op_of_another_domain_is_named_with_its_domain():
    node = helper.make_node("QLinearSoftmax", ["x"], ["y"], domain="com.microsoft")
    model = _ms(make_model([node], [("x", [1, 4], U8)], [("y", None, U8)]))
    with pytest.raises(UnsupportedOpsError, match="com.microsoft.QLinearSoftmax"):
        workbench.load(model.SerializeToString())
