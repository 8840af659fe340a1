"""Per-tensor quantization parameters (``workbench/ir/quant.py``): the QuantizeLinear and
DequantizeLinear arithmetic against ONNX Runtime, the checks on malformed parameters, the table's
error for a tensor without any, and their round trip through a tuned file."""
import json

import numpy as np
import pytest
from onnx import helper, numpy_helper

import workbench
from onnx_helpers import make_model
from workbench.ir.quant import QuantError, QuantParams, QuantTable
from workbench.onnx_io.ort import run_onnxruntime
from workbench.tuned_file import TunedModelError


def _ort_quantize(x, scale, zero, axis=None):
    inits = [numpy_helper.from_array(np.asarray(scale, np.float32), "s"),
             numpy_helper.from_array(np.asarray(zero, np.int8), "z")]
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **({} if axis is None else {"axis": axis}))
    d = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **({} if axis is None else {"axis": axis}))
    graph = helper.make_graph([q, d], "g", [helper.make_tensor_value_info("x", 1, list(x.shape))],
                              [helper.make_tensor_value_info("q", 3, None), helper.make_tensor_value_info("y", 1, None)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    out = run_onnxruntime(model, {"x": x})
    return out["q"], out["y"]


@pytest.mark.parametrize("per_channel", [False, True])
def test_quantize_and_dequantize_match_onnxruntime(per_channel):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 4, 5)) * 4).astype(np.float32)
    x.flat[:4] = [0.5 * 0.1, 1.5 * 0.1, -2.5 * 0.1, 1e6]   # ties to even, and saturation
    scale, zero = ([0.1, 0.05, 0.2], [3, -7, 0]) if per_channel else ([0.1], [3])
    p = QuantParams(scale, zero, "int8", axis=1 if per_channel else None)
    ref_q, ref_y = _ort_quantize(x, scale if per_channel else scale[0], zero if per_channel else zero[0],
                                 axis=1 if per_channel else None)
    q = p.quantize(x)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, ref_q)
    np.testing.assert_array_equal(p.dequantize(q), ref_y)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=[0.0], zero_point=[0]), "positive and finite"),
    (dict(scale=[float("nan")], zero_point=[0]), "positive and finite"),
    (dict(scale=[0.1], zero_point=[200]), r"outside int8's range \[-128, 127\]"),
    (dict(scale=[0.1], zero_point=[-1], dtype="uint8"), "outside uint8's range"),
    (dict(scale=[0.1, 0.2], zero_point=[0]), "as many zero points as scales"),
    (dict(scale=[0.1, 0.2], zero_point=[0, 0]), "channel axis"),
    (dict(scale=[0.1], zero_point=[0], dtype="int4"), "int8, uint8"),
])
def test_malformed_parameters_are_named(kwargs, message):
    with pytest.raises(QuantError, match=message):
        QuantParams(**kwargs)


def test_per_channel_parameters_must_fit_the_tensor():
    p = QuantParams([0.1, 0.2], [0, 0], axis=1)
    with pytest.raises(QuantError, match=r"2 per-channel scales along axis 1 do not fit a tensor of shape \(1, 3\)"):
        p.quantize(np.zeros((1, 3), np.float32))


def test_a_tensor_without_parameters_is_named_with_who_needs_it():
    table = QuantTable({"a": QuantParams([0.5], [0])})
    assert table.require("a", "x").scale == (0.5,)
    with pytest.raises(QuantError, match=r"missing calibration data: tensor 'b' \(needed by layer 'conv1'\)"):
        table.require("b", "layer 'conv1'")


def _tiny_model():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return make_model(nodes, [("x", [1, 3, 8, 8])], [("y", None)], [("w", w)])


def test_the_table_travels_in_a_tuned_file(tmp_path):
    s = workbench.Session.from_onnx(_tiny_model(), num_threads=1, db=str(tmp_path / "db.sqlite"))
    s.tune()
    out = s.graph.layer(next(iter(s.graph)).name).outputs[0]
    s.graph.quant["x"] = QuantParams([0.02], [-3], source="test")
    s.graph.quant[out] = QuantParams([0.1, 0.2, 0.3, 0.4], [0, 1, 2, 3], axis=1)
    path = tmp_path / "tuned.onnx"
    s.export(str(path))
    back = workbench.Session.load(str(path))
    assert back.graph.quant.to_record() == s.graph.quant.to_record()
    assert back.graph.quant["x"].source == "test"
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(back.run({"x": x})["y"], s.run({"x": x})["y"])


@pytest.mark.parametrize("edit, message", [
    (lambda q: q.update({"nowhere": {"scale": [1.0], "zero_point": [0]}}), r"quantization parameters for \[.nowhere.\], no tensors"),
    (lambda q: q["x"].update({"scale": [-1.0]}), r"tensor 'x': a quantization scale must be positive"),
    (lambda q: q["x"].pop("zero_point"), r"tensor 'x': quantization parameters must be an object"),
])
def test_a_corrupt_table_in_a_tuned_file_is_named(tmp_path, edit, message):
    import onnx
    s = workbench.Session.from_onnx(_tiny_model(), num_threads=1, db=str(tmp_path / "db.sqlite"))
    s.tune()
    s.graph.quant["x"] = QuantParams([0.02], [-3])
    path = tmp_path / "tuned.onnx"
    s.export(str(path))
    model = onnx.load(str(path))
    prop = next(p for p in model.metadata_props if p.key == "workbench.quant")
    table = json.loads(prop.value)
    edit(table)
    prop.value = json.dumps(table)
    with pytest.raises(TunedModelError, match=r"field workbench.quant: " + message):
        workbench.Session.load(model.SerializeToString())
    prop.value = "{not json"
    with pytest.raises(TunedModelError, match=r"'workbench.quant' is malformed"):
        workbench.Session.load(model.SerializeToString())
