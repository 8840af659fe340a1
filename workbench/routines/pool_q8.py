"""qint8 pooling and reshapes, so that a CNN stays in qint8 between its convolutions.

``cpu:qint8:nhwc/direct`` MaxPool keeps its input's scale and zero point (calibration gives the
output the input's parameters, :func:`~workbench.tuning.ranges.share_passthrough`); the global
average pool sums each channel exactly in int32 and requantizes (or, ``direct_f32``, writes
float32).  ``cpu:qint8:nchw/view`` is Flatten, Reshape and the like on uint8 tensors: the
executor reinterprets the buffer, and the output shares the input's parameters as MaxPool's does.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import NCHW, NHWC
from ..ir.quant import QuantError
from ..runtime import cpu
from .pool import _as_2d
from .qint8 import QRoutine, out_format, params
from .tensor_ops import ViewNchw


def _pool_kernels():
    return cpu.best_module("pool_q8")


def _shared(x, y):
    """Whether parameters ``x`` and ``y`` map integers to the same values."""
    return x == y or (x.scale, x.zero_point, x.dtype) == (y.scale, y.zero_point, y.dtype)


def same_params(quant, layer, who):
    """The parameters of ``layer``'s input, which its outputs must share (QuantError otherwise)."""
    x = quant.require(layer.inputs[0], who)
    for out in (t for t in layer.outputs if t):
        y = quant.require(out, who)
        if not _shared(x, y):
            raise QuantError(f"{who}: output {out!r} is quantized apart from input {layer.inputs[0]!r} "
                             f"({y.scale[0]:.4g}/{y.zero_point[0]} vs {x.scale[0]:.4g}/{x.zero_point[0]}); "
                             f"calibrate again (calibration shares them)")
    return params(quant, layer.inputs[0], who)


class _MovesIntegers(QRoutine, register=False):
    """A routine whose outputs hold its input's integers: the tensors share their parameters."""

    @classmethod
    def quant_tensors(cls, layer):
        return (layer.inputs[0],) + tuple(t for t in layer.outputs if t)

    @classmethod
    def quant_applies(cls, layer, quant):
        return all(_shared(quant[layer.inputs[0]], quant[t]) for t in layer.outputs if t)

    @classmethod
    def prepare(cls, layer, quant=None):
        same_params(quant, layer, f"{cls.descriptor} on {layer.name}")
        return {}


class MaxPoolQ8(_MovesIntegers):
    op = "MaxPool"
    layout = NHWC
    algo = "direct"

    @classmethod
    def applies(cls, layer, specs):
        return (cls.available() and len(specs[0].shape) == 4 and len(layer.attrs["kernel_shape"]) == 2
                and len(layer.outputs) == 1 and specs[0].dtype == "float32")

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        kernel, strides, dilations, pads = _as_2d(layer.attrs)
        _pool_kernels().maxpool(args[0], outs[0], kernel, strides, dilations, pads, num_threads)


class _GlobalAverageQ8(QRoutine, register=False):
    op = "GlobalAveragePool"
    layout = NHWC
    algo = "direct"
    out_float = False

    @classmethod
    def applies(cls, layer, specs):
        return cls.available() and len(specs[0].shape) == 4 and specs[0].dtype == "float32"

    @classmethod
    def output_formats(cls, layer):
        return [out_format(cls.out_float, NHWC)]

    @classmethod
    def quant_tensors(cls, layer):
        return (layer.inputs[0],) if cls.out_float else (layer.inputs[0], layer.outputs[0])

    @classmethod
    def prepare(cls, layer, quant=None):
        who = f"{cls.descriptor} on {layer.name}"
        sx, zx = params(quant, layer.inputs[0], who)
        so, zo = (1.0, 0) if cls.out_float else params(quant, layer.outputs[0], who)
        return {"zx": zx, "zo": zo, "sx": np.float32(sx), "so": np.float32(so), "mult": {}}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x = args[0]
        hw = x.shape[1] * x.shape[2]
        mult = state["mult"].get(hw)
        if mult is None:   # in float32, step by step, as ONNX Runtime's QLinearGlobalAveragePool: the same ties
            mult = state["mult"][hw] = float(state["sx"] / (state["so"] * np.float32(hw)))
        _pool_kernels().global_average(x, outs[0], state["zx"], mult, state["zo"], num_threads)


class GlobalAverageQ8(_GlobalAverageQ8):
    pass


class GlobalAverageQ8F32(_GlobalAverageQ8):
    algo = "direct_f32"
    out_float = True


class ViewQ8(_MovesIntegers, ViewNchw):
    """Flatten, Reshape and the like on a uint8 tensor: its output is its input's buffer and
    parameters."""

    layout = NCHW
    priority = 20

    @classmethod
    def applies(cls, layer, specs):
        return cls.available() and ViewNchw.applies(layer, specs) and specs[0].dtype == "float32"
