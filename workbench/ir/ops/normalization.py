"""BatchNormalization (inference), ChannelAffine (our per-channel scale+shift), Layer/InstanceNorm."""
import numpy as np

from .base import Op, check
from ..graph import TensorSpec
from .activation import epilogue


def _channel_shape(x_ndim):
    return (1, -1) + (1,) * (x_ndim - 2)


class BatchNormalization(Op):
    weight_inputs = (1, 2, 3, 4)

    @classmethod
    def normalize(cls, node):
        if node.attr("training_mode", 0):
            node.fail("training_mode=1 is not supported for inference")
        if len([o for o in node.outputs if o]) > 1:
            node.fail("the training outputs (running mean/var) are not supported")
        return {"epsilon": float(node.attr("epsilon", 1e-5))}

    @classmethod
    def infer(cls, layer, specs):
        x = specs[0]
        c = x.shape[1] if len(x.shape) > 1 else 0
        for i, what in enumerate(("scale", "B", "mean", "var"), start=1):
            check(specs[i].shape == (c,), layer, f"{what} has shape {specs[i].shape}, expected ({c},)")
        return [TensorSpec(x.shape, x.dtype)]

    @staticmethod
    def scale_shift(scale, bias, mean, var, eps):
        """The per-channel (scale, shift) that BatchNormalization amounts to, in float64."""
        s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        return s, bias.astype(np.float64) - mean.astype(np.float64) * s

    @classmethod
    def compute(cls, layer, args):
        x, scale, bias, mean, var = args
        cs = _channel_shape(x.ndim)
        y = (x - mean.reshape(cs)) / np.sqrt(var.reshape(cs) + np.asarray(layer.attrs["epsilon"], x.dtype))
        return [(y * scale.reshape(cs) + bias.reshape(cs)).astype(x.dtype, copy=False)]


class ChannelAffine(Op):
    """``y = x * scale[c] + shift[c]`` over axis 1: a standalone BatchNormalization after folding.

    Not an ONNX op; export writes it back as Mul + Add.
    """

    weight_inputs = (1, 2)
    fusable = True

    @classmethod
    def infer(cls, layer, specs):
        c = specs[0].shape[1]
        check(specs[1].shape == (c,) and specs[2].shape == (c,), layer,
              f"scale {specs[1].shape} / shift {specs[2].shape} do not match {c} channels")
        return [TensorSpec(specs[0].shape, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        x, scale, shift = args
        cs = _channel_shape(x.ndim)
        return [epilogue(layer, x * scale.reshape(cs) + shift.reshape(cs))]


class InstanceNormalization(Op):
    @classmethod
    def normalize(cls, node):
        return {"epsilon": float(node.attr("epsilon", 1e-5))}

    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(specs[0].shape, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        x, scale, bias = args
        axes = tuple(range(2, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
        cs = _channel_shape(x.ndim)
        y = (x - mean) / np.sqrt(var + layer.attrs["epsilon"])
        return [(y * scale.reshape(cs) + bias.reshape(cs)).astype(x.dtype, copy=False)]


class LayerNormalization(Op):
    @classmethod
    def normalize(cls, node):
        if len([o for o in node.outputs if o]) > 1:
            node.fail("the Mean/InvStdDev outputs are not supported")
        return {"axis": int(node.attr("axis", -1)), "epsilon": float(node.attr("epsilon", 1e-5))}

    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(specs[0].shape, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        x, scale = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        axes = tuple(range(layer.attrs["axis"] % x.ndim, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + layer.attrs["epsilon"]) * scale
        if bias is not None:
            y = y + bias
        return [y.astype(x.dtype, copy=False)]
