"""Quantized ONNX ops (workbench/ir/ops/quantized.py): the onnx package's backend test cases for
QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, ConvInteger, QLinearConv, MatMulInteger
and QLinearMatMul, a model quantized by onnxruntime.quantization.quantize_static against ONNX
Runtime, and the unsupported variants named in their errors."""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import workbench
from onnx_helpers import make_model
from workbench.errors import WorkbenchError
from workbench.onnx_io.ort import run_onnxruntime

CASES = ["test_quantizelinear", "test_quantizelinear_axis", "test_dequantizelinear", "test_dequantizelinear_axis",
         "test_dynamicquantizelinear", "test_dynamicquantizelinear_max_adjusted",
         "test_dynamicquantizelinear_min_adjusted", "test_convinteger_with_padding",
         "test_convinteger_without_padding", "test_qlinearconv", "test_matmulinteger",
         "test_qlinearmatmul_2D_uint8_float32", "test_qlinearmatmul_2D_int8_float32",
         "test_qlinearmatmul_3D_uint8_float32", "test_qlinearmatmul_3D_int8_float32"]


@pytest.fixture(scope="module")
def backend_cases():
    import warnings
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c.name: c for c in collect_testcases(None) if c.name in CASES}


def _with_constants(case):
    """The case's model with every input but the first an initializer (weights, scales and zero
    points are constants in the models users bring; the engine requires constant weights)."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    ins, outs = case.data_sets[0]
    first = m.graph.input[0]
    for vi, arr in zip(list(m.graph.input)[1:], ins[1:]):
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), vi.name))
    keep = onnx.ValueInfoProto()
    keep.CopyFrom(first)
    del m.graph.input[:]
    m.graph.input.append(keep)
    return m, {first.name: ins[0]}, outs


@pytest.mark.parametrize("name", CASES)
def test_backend_cases_exactly(backend_cases, name):
    model, feeds, want = _with_constants(backend_cases[name])
    graph = workbench.load(model.SerializeToString())
    got = workbench.ReferenceExecutor(graph).run(feeds)
    for out, w in zip(model.graph.output, want):
        g = np.asarray(got[out.name])
        assert g.dtype == np.asarray(w).dtype and g.shape == np.shape(w), (out.name, g.dtype, g.shape)
        np.testing.assert_array_equal(g, w)


def test_a_quantize_static_model_matches_onnxruntime_within_one_step(tmp_path, rng):
    quantization = pytest.importorskip("onnxruntime.quantization")
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c1", "r0"], ["s"]),
             helper.make_node("GlobalAveragePool", ["s"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    inits = [("w0", w(16, 3, 3, 3)), ("b0", w(16)), ("w1", w(16, 16, 1, 1)), ("b1", w(16)), ("wf", w(10, 16)),
             ("bf", w(10))]
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    src.write_bytes(make_model(nodes, [("x", [1, 3, 12, 12])], [("y", [1, 10])], inits).SerializeToString())
    calib = [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(8)]

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    quantization.quantize_static(str(src), str(dst), Reader(), quant_format=quantization.QuantFormat.QDQ,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8, per_channel=True)
    q = onnx.load(str(dst))
    assert {n.op_type for n in q.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    last = next(n for n in q.graph.node if "y" in n.output)
    assert last.op_type == "DequantizeLinear"   # the classifier's output is quantized too
    step = float(numpy_helper.to_array(next(t for t in q.graph.initializer if t.name == last.input[1])))
    graph = workbench.load(str(dst))
    for seed in range(3):
        feeds = {"x": np.random.default_rng(seed).standard_normal((1, 3, 12, 12)).astype(np.float32)}
        ours = workbench.ReferenceExecutor(graph).run(feeds)["y"]
        ort = run_onnxruntime(q, feeds)["y"]
        # ONNX Runtime runs the QDQ pairs as integer kernels and we as float arithmetic between
        # exact quantize/dequantize steps: an intermediate value on a rounding tie may land one
        # step apart, and that step reaches the output as at most one of its own steps here
        assert np.abs(ours - ort).max() <= step * 1.001, (np.abs(ours - ort).max(), step)


def test_unsupported_variants_are_named():
    def model(node, init):
        return make_model([node], [("x", [4])], [("y", [4], onnx.TensorProto.UINT8)], init, opset=21)
    int16 = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    with pytest.raises(WorkbenchError, match="y_zero_point is int16"):
        workbench.load(model(int16, [("s", np.float32(0.1)), ("z", np.int16(0))]).SerializeToString())
    blocked = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], block_size=2)
    with pytest.raises(WorkbenchError, match="blocked quantization"):
        workbench.load(model(blocked, [("s", np.full(2, 0.1, np.float32))]).SerializeToString())
    bad = helper.make_node("QuantizeLinear", ["x", "s"], ["y"])
    with pytest.raises(WorkbenchError, match="y_scale must be positive"):
        workbench.load(model(bad, [("s", np.float32(0.0))]).SerializeToString())
