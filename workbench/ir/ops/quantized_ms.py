"""Quantized ops of the ``com.microsoft`` domain, as onnxruntime's QOperator quantization writes
them: QLinearAdd, QLinearConcat and QLinearGlobalAveragePool (ONNX Runtime's contrib op
specifications).  Scales and zero points are constants taken into the attributes at import; the
NumPy references dequantize, compute in float and quantize again (round half to even, saturate),
as those ops are specified.
"""
from __future__ import annotations

import numpy as np

from ..graph import TensorSpec
from .base import Op, check
from .quantized import INTEGER, _scale, _zero_point, quantize


def _dq(x, scale, zero_point):
    return (np.asarray(x, np.float32) - np.float32(zero_point)) * np.float32(scale)


def _per_tensor(node, s, z, what):
    scale, zp = _scale(node, s, f"{what}_scale"), _zero_point(node, z, f"{what}_zero_point")
    if scale.size != 1 or zp.size != 1:
        node.fail(f"{what}: only per-tensor scales and zero points are supported")
    if zp.dtype.name not in INTEGER:
        node.fail(f"{what}_zero_point is {zp.dtype.name}; uint8 and int8 are supported")
    return float(scale.ravel()[0]), zp.ravel()[0]


class _MicrosoftOp(Op, register=False):
    domain = "com.microsoft"


class QLinearAdd(_MicrosoftOp):
    """``C = quantize(dequantize(A) + dequantize(B))``, broadcasting as Add."""

    @classmethod
    def normalize(cls, node):
        a = _per_tensor(node, 1, 2, "A")
        b = _per_tensor(node, 4, 5, "B")
        c = _per_tensor(node, 6, 7, "C")
        return {"a": a, "b": b, "c": c}

    @classmethod
    def infer(cls, layer, specs):
        x, y = specs[0], specs[3]   # the scales and zero points (1, 2) are attributes now
        try:
            shape = np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            check(False, layer, f"inputs {x.shape} and {y.shape} do not broadcast")
        return [TensorSpec(tuple(shape), np.asarray(layer.attrs["c"][1]).dtype.name)]

    @classmethod
    def compute(cls, layer, args):
        a, b, c = layer.attrs["a"], layer.attrs["b"], layer.attrs["c"]
        y = _dq(args[0], *a) + _dq(args[3], *b)
        zc = np.asarray(c[1])
        return [quantize(y, np.float32(c[0]), zc, zc.dtype.name)]


class QLinearConcat(_MicrosoftOp):
    """``Y = quantize(concat(dequantize(X_i)))`` along ``axis``: inputs Y_scale, Y_zero_point, then
    (X, X_scale, X_zero_point) per tensor."""

    @classmethod
    def normalize(cls, node):
        if (len(node.inputs) - 2) % 3 or len(node.inputs) < 5:
            node.fail(f"expected Y_scale, Y_zero_point and triples (X, X_scale, X_zero_point), got "
                      f"{len(node.inputs)} inputs")
        y = _per_tensor(node, 0, 1, "Y")
        parts = [_per_tensor(node, i + 1, i + 2, f"X{(i - 2) // 3}") for i in range(2, len(node.inputs), 3)]
        return {"axis": int(node.attr("axis")), "y": y, "parts": parts}

    @classmethod
    def infer(cls, layer, specs):
        xs = [s for s in specs if s is not None]
        rank = len(xs[0].shape)
        axis = layer.attrs["axis"] % rank
        for s in xs[1:]:
            check(len(s.shape) == rank and all(d == e for k, (d, e) in enumerate(zip(s.shape, xs[0].shape))
                                               if k != axis), layer, f"inputs {[x.shape for x in xs]} do not concatenate")
        shape = list(xs[0].shape)
        shape[axis] = sum(s.shape[axis] for s in xs)
        return [TensorSpec(tuple(shape), np.asarray(layer.attrs["y"][1]).dtype.name)]

    @classmethod
    def compute(cls, layer, args):
        xs = [x for x in args if x is not None]
        y = np.concatenate([_dq(x, *p) for x, p in zip(xs, layer.attrs["parts"])], axis=layer.attrs["axis"])
        zy = np.asarray(layer.attrs["y"][1])
        return [quantize(y, np.float32(layer.attrs["y"][0]), zy, zy.dtype.name)]


class QLinearGlobalAveragePool(_MicrosoftOp):
    """``Y = quantize(mean over the spatial axes of dequantize(X))``; ``channels_last``: NHWC."""

    @classmethod
    def normalize(cls, node):
        x = _per_tensor(node, 1, 2, "x")
        y = _per_tensor(node, 3, 4, "y")
        return {"x": x, "y": y, "channels_last": int(node.attr("channels_last", 0))}

    @classmethod
    def infer(cls, layer, specs):
        shape = specs[0].shape
        check(len(shape) >= 3, layer, f"input {shape} has no spatial axes")
        if layer.attrs["channels_last"]:
            out = (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
        else:
            out = tuple(shape[:2]) + (1,) * (len(shape) - 2)
        return [TensorSpec(out, np.asarray(layer.attrs["y"][1]).dtype.name)]

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        axes = tuple(range(1, x.ndim - 1)) if layer.attrs["channels_last"] else tuple(range(2, x.ndim))
        y = _dq(x, *layer.attrs["x"]).mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
        zy = np.asarray(layer.attrs["y"][1])
        return [quantize(y, np.float32(layer.attrs["y"][0]), zy, zy.dtype.name)]

