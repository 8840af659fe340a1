"""Quantized ONNX ops, as exporters and ``onnxruntime.quantization`` write them: QuantizeLinear and
DequantizeLinear (QDQ), DynamicQuantizeLinear, QLinearConv, ConvInteger, QLinearMatMul and
MatMulInteger.

Their NumPy references follow the ONNX specification: integer products summed exactly (int64),
``round half to even`` then saturation where a result is requantized, and
``real = (q - zero_point) * scale``.  Scales and zero points are constants, taken into the
layer's attributes at import (per tensor, or per channel along ``axis`` for QuantizeLinear and
DequantizeLinear and for the weights of QLinearConv); blocked quantization (``block_size``) and
the float8/4-bit/16-bit types are refused by name.  Weights must be constants, as for Conv.
"""
from __future__ import annotations

import numpy as np

from ..graph import TensorSpec
from .base import Op, check
from .conv import Conv, as_2d, conv_out_size, im2col, resolve_pads, window_attrs

INTEGER = ("uint8", "int8")
_RANGE = {"uint8": (0, 255), "int8": (-128, 127)}


def _zero_point(node, i, what, default="uint8"):
    """The constant zero point at input ``i`` (0 of ``default``'s type when absent)."""
    z = node.take(i, what)
    if z is None:
        return np.zeros((), default)
    z = np.asarray(z)
    if z.dtype.name not in INTEGER + ("int32",):
        node.fail(f"{what} is {z.dtype.name}; only uint8 and int8 (int32 for a bias) are supported")
    return z


def _scale(node, i, what):
    s = np.asarray(node.take(i, what, required=True))
    if s.dtype != np.float32 or not (np.isfinite(s).all() and (s > 0).all()):
        node.fail(f"{what} must be positive finite float32 values, got {s.dtype.name} {s.ravel()[:4]}")
    return s.astype(np.float32)


def _along(value, axis, ndim):
    """A per-tensor or per-axis constant shaped to broadcast along ``axis`` of an ``ndim``-D array."""
    value = np.asarray(value)
    if value.ndim == 0 or value.size == 1:
        return value.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = value.size
    return value.reshape(shape)


def quantize(x, scale, zero_point, dtype):
    """ONNX QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)``; NaN -> 0."""
    lo, hi = _RANGE[dtype]
    q = np.rint(np.asarray(x, np.float32) / scale) + np.asarray(zero_point, np.float32)
    return np.clip(np.where(np.isnan(q), 0, q), lo, hi).astype(dtype)


def _axis(node):
    return int(node.attr("axis", 1))


class QuantizeLinear(Op):
    @classmethod
    def normalize(cls, node):
        if int(node.attr("block_size", 0)):
            node.fail("blocked quantization (block_size) is not supported")
        scale = _scale(node, 1, "y_scale")
        zp = _zero_point(node, 2, "y_zero_point")
        dtype = zp.dtype.name
        if "output_dtype" in node._attrs:
            dtype = np.dtype(node.dtype_attr("output_dtype")).name
        if dtype not in INTEGER:
            node.fail(f"quantizing to {dtype} is not supported (uint8 and int8 are)")
        return {"scale": scale, "zero_point": zp.astype(dtype), "axis": _axis(node), "dtype": dtype}

    @classmethod
    def infer(cls, layer, specs):
        a = layer.attrs
        check(a["scale"].size == 1 or (len(specs[0].shape) > 0 and specs[0].shape[a["axis"] % len(specs[0].shape)]
                                       == a["scale"].size), layer,
              f"{a['scale'].size} scales along axis {a['axis']} of {specs[0].shape}")
        return [TensorSpec(specs[0].shape, a["dtype"])]

    @classmethod
    def compute(cls, layer, args):
        a, x = layer.attrs, args[0]
        return [quantize(x, _along(a["scale"], a["axis"], x.ndim), _along(a["zero_point"], a["axis"], x.ndim),
                         a["dtype"])]


class DequantizeLinear(Op):
    @classmethod
    def normalize(cls, node):
        if int(node.attr("block_size", 0)):
            node.fail("blocked quantization (block_size) is not supported")
        x = node.spec(0)
        if x.dtype not in INTEGER + ("int32",):
            node.fail(f"dequantizing {x.dtype} is not supported (uint8, int8 and int32 are)")
        return {"scale": _scale(node, 1, "x_scale"), "zero_point": _zero_point(node, 2, "x_zero_point", x.dtype),
                "axis": _axis(node)}

    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(specs[0].shape, "float32")]

    @classmethod
    def compute(cls, layer, args):
        a, x = layer.attrs, args[0]
        z = _along(a["zero_point"], a["axis"], x.ndim).astype(np.float32)
        return [((x.astype(np.float32) - z) * _along(a["scale"], a["axis"], x.ndim)).astype(np.float32)]


class DynamicQuantizeLinear(Op):
    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(specs[0].shape, "uint8"), TensorSpec((), "float32"), TensorSpec((), "uint8")]

    @classmethod
    def compute(cls, layer, args):
        x = np.asarray(args[0], np.float32)
        lo, hi = min(0.0, float(np.min(x))) if x.size else 0.0, max(0.0, float(np.max(x))) if x.size else 0.0
        scale = np.float32((hi - lo) / 255)
        if scale == 0:
            return [np.zeros(x.shape, np.uint8), np.array(0, np.float32), np.array(0, np.uint8)]
        zp = np.uint8(np.clip(np.rint(0 - lo / scale), 0, 255))
        return [quantize(x, scale, zp, "uint8"), np.array(scale, np.float32), np.array(zp, np.uint8)]


def _conv_attrs(node, x_index, w_index):
    x, w = node.spec(x_index), node.const_spec(w_index, "weights")
    if len(x.shape) != 4 or len(w.shape) != 4:
        node.fail(f"only 2-D {node.op_type} is supported; input is {x.shape}, weights {w.shape}")
    kernel = list(node.attr("kernel_shape", list(w.shape[2:])))
    strides, dilations = window_attrs(node, kernel, 2)
    pads = resolve_pads(node, x.shape[2:], kernel, strides, dilations)
    return dict(kernel_shape=kernel, strides=strides, dilations=dilations, pads=pads, group=int(node.attr("group", 1)))


def _conv_sums(attrs, x, w):
    """``sum (x * w)`` over each window in int64, exactly (x, w already zero-point shifted)."""
    a, x2, w2 = as_2d(attrs, x, w)
    n, c = x2.shape[:2]
    m, g = w2.shape[0], a["group"]
    oh, ow = (conv_out_size(x2.shape[2 + i], a["kernel_shape"][i], a["strides"][i], a["dilations"][i],
                            a["pads"][i], a["pads"][i + 2]) for i in range(2))
    cols = im2col(x2, a["kernel_shape"], a["strides"], a["dilations"], a["pads"], (oh, ow)).reshape(n, g, -1, oh * ow)
    return np.matmul(w2.reshape(g, m // g, -1), cols).reshape(n, m, oh, ow)


def _conv_specs(layer, specs, x_index, w_index, dtype):
    return [TensorSpec(Conv.infer(layer, [specs[x_index], specs[w_index]])[0].shape, dtype)]


class ConvInteger(Op):
    weight_inputs = (1,)

    @classmethod
    def normalize(cls, node):
        attrs = _conv_attrs(node, 0, 1)
        attrs["x_zero_point"] = _zero_point(node, 2, "x_zero_point", node.spec(0).dtype)
        attrs["w_zero_point"] = _zero_point(node, 3, "w_zero_point", node.const_spec(1, "weights").dtype)
        return attrs

    @classmethod
    def infer(cls, layer, specs):
        return _conv_specs(layer, specs, 0, 1, "int32")

    @classmethod
    def compute(cls, layer, args):
        a = layer.attrs
        x = args[0].astype(np.int64) - a["x_zero_point"].astype(np.int64)
        w = args[1].astype(np.int64) - _along(a["w_zero_point"], 0, args[1].ndim).astype(np.int64)
        return [_conv_sums(a, x, w).astype(np.int32)]


class QLinearConv(Op):
    weight_inputs = (3, 8)

    @classmethod
    def normalize(cls, node):
        attrs = _conv_attrs(node, 0, 3)
        attrs.update(x_scale=_scale(node, 1, "x_scale"), x_zero_point=_zero_point(node, 2, "x_zero_point", node.spec(0).dtype),
                     w_scale=_scale(node, 4, "w_scale"),
                     w_zero_point=_zero_point(node, 5, "w_zero_point", node.const_spec(3, "weights").dtype),
                     y_scale=_scale(node, 6, "y_scale"), y_zero_point=_zero_point(node, 7, "y_zero_point"))
        return attrs

    @classmethod
    def infer(cls, layer, specs):
        return _conv_specs(layer, specs, 0, 3, layer.attrs["y_zero_point"].dtype.name)

    @classmethod
    def compute(cls, layer, args):
        a = layer.attrs
        x = args[0].astype(np.int64) - a["x_zero_point"].astype(np.int64)
        w = args[3].astype(np.int64) - _along(a["w_zero_point"], 0, 4).astype(np.int64)
        acc = _conv_sums(a, x, w)
        if len(args) > 8 and args[8] is not None:
            acc = acc + args[8].astype(np.int64).reshape(1, -1, 1, 1)
        m = acc.shape[1]
        mult = (a["x_scale"].astype(np.float64) * np.broadcast_to(a["w_scale"], (m,)).astype(np.float64)
                / a["y_scale"].astype(np.float64)).reshape(1, m, 1, 1)
        y = np.rint(acc * mult) + a["y_zero_point"].astype(np.int64)
        lo, hi = _RANGE[a["y_zero_point"].dtype.name]
        return [np.clip(y, lo, hi).astype(a["y_zero_point"].dtype)]


def _matmul_specs(layer, a, b, dtype):
    check(len(a.shape) >= 2 and len(b.shape) >= 2 and a.shape[-1] == b.shape[-2], layer,
          f"inner dimensions differ: {a.shape} @ {b.shape}")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        check(False, layer, f"batch dimensions of {a.shape} and {b.shape} do not broadcast")
    return [TensorSpec(tuple(batch) + (a.shape[-2], b.shape[-1]), dtype)]


class MatMulInteger(Op):
    @classmethod
    def normalize(cls, node):
        return {"a_zero_point": _zero_point(node, 2, "a_zero_point", node.spec(0).dtype),
                "b_zero_point": _zero_point(node, 3, "b_zero_point", node.spec(1).dtype)}

    @classmethod
    def infer(cls, layer, specs):
        return _matmul_specs(layer, specs[0], specs[1], "int32")

    @classmethod
    def compute(cls, layer, args):
        a = layer.attrs
        za = a["a_zero_point"].astype(np.int64)
        zb = a["b_zero_point"].astype(np.int64)
        za = za.reshape(-1, 1) if za.ndim == 1 and za.size > 1 else za   # per row of A
        return [np.matmul(args[0].astype(np.int64) - za, args[1].astype(np.int64) - zb).astype(np.int32)]


class QLinearMatMul(Op):
    @classmethod
    def normalize(cls, node):
        return {"a_scale": _scale(node, 1, "a_scale"), "a_zero_point": _zero_point(node, 2, "a_zero_point", node.spec(0).dtype),
                "b_scale": _scale(node, 4, "b_scale"), "b_zero_point": _zero_point(node, 5, "b_zero_point", node.spec(3).dtype),
                "y_scale": _scale(node, 6, "y_scale"), "y_zero_point": _zero_point(node, 7, "y_zero_point")}

    @classmethod
    def infer(cls, layer, specs):
        return _matmul_specs(layer, specs[0], specs[3], layer.attrs["y_zero_point"].dtype.name)

    @classmethod
    def compute(cls, layer, args):
        a = layer.attrs
        acc = np.matmul(args[0].astype(np.int64) - a["a_zero_point"].astype(np.int64),
                        args[3].astype(np.int64) - a["b_zero_point"].astype(np.int64))
        mult = (a["a_scale"].astype(np.float64) * a["b_scale"].astype(np.float64) / a["y_scale"].astype(np.float64))
        y = np.rint(acc * mult) + a["y_zero_point"].astype(np.int64)
        lo, hi = _RANGE[a["y_zero_point"].dtype.name]
        return [np.clip(y, lo, hi).astype(a["y_zero_point"].dtype)]
