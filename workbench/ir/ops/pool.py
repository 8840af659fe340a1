"""Pooling: MaxPool, AveragePool (count_include_pad, ceil_mode, dilations), global pools, any rank."""
import itertools
import math

import numpy as np

from .base import Op, check
from ..graph import TensorSpec
from .conv import resolve_pads, window_attrs


def pool_out_size(size, k, s, d, pb, pe, ceil_mode):
    span = (size + pb + pe - ((k - 1) * d + 1)) / s
    out = (math.ceil(span) if ceil_mode else math.floor(span)) + 1
    if ceil_mode and (out - 1) * s >= size + pb:  # a last window starting in the end padding is dropped
        out -= 1
    return out


class _Pool(Op, register=False):
    @classmethod
    def normalize(cls, node):
        x = node.spec(0)
        n = len(x.shape) - 2
        kernel = list(node.attr("kernel_shape", None) or node.fail("kernel_shape is required"))
        strides, dilations = window_attrs(node, kernel, n)
        if node.attr("storage_order", 0) != 0:
            node.fail("storage_order=1 is not supported")
        return dict(kernel_shape=kernel, strides=strides, dilations=dilations,
                    pads=resolve_pads(node, x.shape[2:], kernel, strides, dilations),
                    ceil_mode=int(node.attr("ceil_mode", 0)),
                    count_include_pad=int(node.attr("count_include_pad", 0)))

    @classmethod
    def _out(cls, layer, x_shape):
        a = layer.attrs
        n = len(a["kernel_shape"])
        return [pool_out_size(size, k, s, d, a["pads"][i], a["pads"][i + n], a["ceil_mode"])
                for i, (size, k, s, d) in enumerate(zip(x_shape[2:], a["kernel_shape"], a["strides"], a["dilations"]))]

    @classmethod
    def infer(cls, layer, specs):
        x = specs[0]
        check(len(x.shape) == len(layer.attrs["kernel_shape"]) + 2, layer,
              f"input {x.shape} does not match kernel_shape {layer.attrs['kernel_shape']}")
        out = cls._out(layer, x.shape)
        check(all(o > 0 for o in out), layer, f"output spatial size {out} is empty for input {x.shape}")
        check(len(layer.outputs) == 1, layer, "the Indices output of MaxPool is not supported")
        return [TensorSpec(x.shape[:2] + tuple(out), x.dtype)]

    @classmethod
    def _windows(cls, layer, x, fill):
        """Yield, per kernel tap, the strided view of the padded input under that tap."""
        a = layer.attrs
        n = len(a["kernel_shape"])
        out = cls._out(layer, x.shape)
        pad_width = [(0, 0), (0, 0)]
        for i in range(n):
            need = (out[i] - 1) * a["strides"][i] + (a["kernel_shape"][i] - 1) * a["dilations"][i] + 1
            pad_width.append((a["pads"][i], max(a["pads"][i + n], need - x.shape[2 + i] - a["pads"][i])))
        xp = np.pad(x, pad_width, constant_values=fill)
        for taps in itertools.product(*(range(k) for k in a["kernel_shape"])):
            idx = (slice(None), slice(None)) + tuple(
                slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(taps, a["dilations"], a["strides"], out))
            yield xp[idx]


class MaxPool(_Pool):
    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        # The lowest finite value, not -inf: a window that lies wholly in the padding (possible
        # with dilation) gives it, as in ONNX Runtime.
        lowest = np.finfo(x.dtype).min if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
        out = None
        for view in cls._windows(layer, x, lowest):
            out = view.copy() if out is None else np.maximum(out, view, out=out)
        return [out]


class AveragePool(_Pool):
    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        a = layer.attrs
        n = len(a["kernel_shape"])
        total = None
        for view in cls._windows(layer, x, 0):
            total = view.astype(np.float64) if total is None else total + view
        # The divisor is separable: per spatial dim, count the taps that land inside the input
        # (or inside input + explicit pads with count_include_pad; never ceil_mode's extra end).
        count = np.ones((), np.float64)
        for i, o in enumerate(cls._out(layer, x.shape)):
            size, k, s, d = x.shape[2 + i], a["kernel_shape"][i], a["strides"][i], a["dilations"][i]
            pb, pe = a["pads"][i], a["pads"][i + n]
            lo, hi = (-pb, size + pe) if a["count_include_pad"] else (0, size)
            pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - pb
            count = np.multiply.outer(count, ((pos >= lo) & (pos < hi)).sum(axis=1))
        # A window wholly in the padding (dilation) sums nothing: 0, as ONNX Runtime gives, not 0/0.
        return [(total / np.maximum(count, 1)).astype(x.dtype)]


class _GlobalPool(Op, register=False):
    reduce = None

    @classmethod
    def infer(cls, layer, specs):
        x = specs[0]
        check(len(x.shape) >= 3, layer, f"input {x.shape} has no spatial dimensions")
        return [TensorSpec(x.shape[:2] + (1,) * (len(x.shape) - 2), x.dtype)]

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        axes = tuple(range(2, x.ndim))
        return [cls.reduce(x, axis=axes, keepdims=True).astype(x.dtype, copy=False)]


class GlobalAveragePool(_GlobalPool):
    reduce = staticmethod(np.mean)


class GlobalMaxPool(_GlobalPool):
    reduce = staticmethod(np.max)
