"""Quantize and dequantize adapts' kernels (kernels_pyx/quant.pyx) against ONNX Runtime's
QuantizeLinear and DequantizeLinear: ties, saturation, NaN and infinities, the fused NCHW <-> NHWC
transposes, every build, and clear errors for bad arguments."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from onnx_helpers import make_model
from workbench.onnx_io.ort import run_onnxruntime
from workbench.runtime import cpu

BUILDS = [m for m in (cpu.kernel_module("quant"), cpu.kernel_module("quant", "avx2"),
                      cpu.kernel_module("quant", "avx512")) if m is not None]


def _ort(op, x, scale, zp, shape):
    dt = TensorProto.UINT8 if op == "QuantizeLinear" else TensorProto.FLOAT
    intype = TensorProto.FLOAT if op == "QuantizeLinear" else TensorProto.UINT8
    node = helper.make_node(op, ["x", "s", "z"], ["y"])
    graph = helper.make_graph([node], "q", [helper.make_tensor_value_info("x", intype, list(shape))],
                              [helper.make_tensor_value_info("y", dt, list(shape))],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
                               helper.make_tensor("z", TensorProto.UINT8, [], [zp])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return run_onnxruntime(model, {"x": x})["y"]


def _values(rng, shape, scale, zp):
    x = rng.standard_normal(shape).astype(np.float32) * 60 * scale
    flat = x.reshape(-1)
    k = rng.integers(-300, 300, 64)
    flat[:64] = ((k + 0.5) * scale).astype(np.float32)     # exact ties of x / scale (scale a power of two)
    flat[64:70] = [np.nan, np.inf, -np.inf, 1e30, -1e30, -0.0]
    return x


@pytest.mark.parametrize("mod", BUILDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_quantize_and_dequantize_are_onnxruntimes(mod, threads, rng):
    scale, zp, shape = 0.0625, 131, (2, 7, 33, 35)
    x = _values(rng, shape, scale, zp)
    want = _ort("QuantizeLinear", x, scale, zp, shape)
    q = mod.quantize(x, np.empty(shape, np.uint8), scale, zp, num_threads=threads)
    np.testing.assert_array_equal(q, want)
    back = mod.dequantize(q, np.empty(shape, np.float32), scale, zp, num_threads=threads)
    np.testing.assert_array_equal(back, _ort("DequantizeLinear", q, scale, zp, shape))
    # fused with the layout change: the same values, transposed
    nhwc = mod.quantize(x, np.empty((2, 33, 35, 7), np.uint8), scale, zp, transpose=1, num_threads=threads)
    np.testing.assert_array_equal(nhwc, want.transpose(0, 2, 3, 1))
    nchw = mod.dequantize(nhwc, np.empty(shape, np.float32), scale, zp, transpose=2, num_threads=threads)
    np.testing.assert_array_equal(nchw, back)
    q2 = mod.quantize(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.empty(shape, np.uint8), scale, zp,
                      transpose=2, num_threads=threads)
    np.testing.assert_array_equal(q2, want)


def test_bad_arguments_are_clear_errors():
    mod = BUILDS[-1]
    x = np.zeros((1, 2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="scale must be positive"):
        mod.quantize(x, np.empty(x.shape, np.uint8), 0.0, 0)
    with pytest.raises(ValueError, match="zero point must lie"):
        mod.quantize(x, np.empty(x.shape, np.uint8), 1.0, 256)
    with pytest.raises(TypeError, match="float32 -> uint8"):
        mod.quantize(x.astype(np.float64), np.empty(x.shape, np.uint8), 1.0, 0)
    with pytest.raises(ValueError, match="needs destination \\(1, 3, 4, 2\\)"):
        mod.quantize(x, np.empty(x.shape, np.uint8), 1.0, 0, transpose=1)
    with pytest.raises(ValueError, match="a fused transpose needs a 4-D source"):
        mod.dequantize(np.zeros((3, 4), np.uint8), np.empty((3, 4), np.float32), 1.0, 0, transpose=2)
    with pytest.raises(ValueError, match="C-contiguous"):
        mod.quantize(x[..., ::2], np.empty((1, 2, 3, 2), np.uint8), 1.0, 0)
