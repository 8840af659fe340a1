"""Activation functions: standalone ops, and the fused epilogue of Conv/Gemm/Add layers.

``ACTIVATIONS`` maps an op name to ``f(x, params)``; the fusion pass moves a following activation
layer into its producer as ``attrs["activation"]`` + ``attrs["activation_params"]`` and
:func:`epilogue` applies it there, so fused and unfused graphs compute the same thing.
"""
import math

import numpy as np

from .base import Op, same_as_input


def _hard_sigmoid(x, alpha, beta):
    return np.clip(alpha * x + beta, 0, 1).astype(x.dtype, copy=False)


def _erf(x):
    try:
        from scipy.special import erf
        return erf(x).astype(x.dtype, copy=False)
    except ImportError:  # pragma: no cover - scipy is a dependency
        return np.vectorize(math.erf)(x).astype(x.dtype)


def _sigmoid(x):
    # exp of a non-positive argument only: no overflow warning for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _expm1_neg(x):
    # np.where evaluates both branches: clamp so the unused positive side cannot overflow.
    return np.expm1(np.minimum(x, 0))


def _softplus(x):
    return np.logaddexp(np.zeros((), x.dtype), x).astype(x.dtype, copy=False)


ACTIVATIONS = {
    "Relu": lambda x, p: np.maximum(x, np.zeros((), x.dtype)),
    "LeakyRelu": lambda x, p: np.where(x >= 0, x, x * np.asarray(p["alpha"], x.dtype)),
    "PRelu": lambda x, p: np.where(x >= 0, x, x * p["slope"]).astype(x.dtype, copy=False),
    "Clip": lambda x, p: np.clip(x, p["min"], p["max"]).astype(x.dtype, copy=False),
    "Sigmoid": lambda x, p: _sigmoid(x),
    "HardSigmoid": lambda x, p: _hard_sigmoid(x, p["alpha"], p["beta"]),
    "HardSwish": lambda x, p: x * _hard_sigmoid(x, 1 / 6, 0.5),
    "Tanh": lambda x, p: np.tanh(x),
    "Elu": lambda x, p: np.where(x > 0, x, p["alpha"] * _expm1_neg(x)).astype(x.dtype, copy=False),
    "Selu": lambda x, p: (p["gamma"] * np.where(x > 0, x, p["alpha"] * _expm1_neg(x))).astype(x.dtype, copy=False),
    "Softplus": lambda x, p: _softplus(x),
    "Silu": lambda x, p: (x * _sigmoid(x)).astype(x.dtype, copy=False),
    "Softsign": lambda x, p: x / (1 + np.abs(x)),
    "Mish": lambda x, p: x * np.tanh(_softplus(x)),
    "Gelu": lambda x, p: (0.5 * x * (1 + (np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))
                                          if p["approximate"] == "tanh" else _erf(x / np.sqrt(2)))))
                         .astype(x.dtype, copy=False),
}

#: Activations that the fusion pass may move into a producer's epilogue.
FUSABLE = ("Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "PRelu", "Tanh")
#: Activations only the elementwise and convolution kernels run as an epilogue (not the GEMM,
#: MatMul and ConvTranspose ones): they fuse into these producers only.
FUSABLE_ELTWISE = ("Silu", "Gelu")
ELTWISE_PRODUCERS = ("Add", "Sub", "Mul", "Div", "ChannelAffine", "Conv")


def epilogue(layer, y):
    """Apply the fused activation of ``layer`` (if any) to its raw result ``y``, then its fused
    post-activation affine (``passes/fuse_post_affine.py``), per channel (axis 1)."""
    act = layer.attrs.get("activation")
    y = y if act is None else ACTIVATIONS[act](y, layer.attrs.get("activation_params", {}))
    post = layer.attrs.get("post_affine")
    if post is not None:
        shape = (1, -1) + (1,) * (y.ndim - 2)
        y = (y * post["scale"].reshape(shape) + post["shift"].reshape(shape)).astype(y.dtype, copy=False)
    return y


class _Activation(Op, register=False):
    @classmethod
    def normalize(cls, node):
        return {}

    @classmethod
    def infer(cls, layer, specs):
        return same_as_input(layer, specs)

    @classmethod
    def compute(cls, layer, args):
        return [ACTIVATIONS[cls.op_type](args[0], layer.attrs)]


class Relu(_Activation): pass
class Sigmoid(_Activation): pass
class HardSwish(_Activation): pass
class Tanh(_Activation): pass
class Softplus(_Activation): pass
class Softsign(_Activation): pass
class Mish(_Activation): pass


class Silu(_Activation):
    """``x * sigmoid(x)`` (SiLU, Swish-1).  Not an ONNX op: the fusion pass makes it from the
    Sigmoid + Mul that exporters write, and export writes it back so."""


class LeakyRelu(_Activation):
    @classmethod
    def normalize(cls, node):
        return {"alpha": node.attr("alpha", 0.01)}


class Elu(_Activation):
    @classmethod
    def normalize(cls, node):
        return {"alpha": node.attr("alpha", 1.0)}


class Selu(_Activation):
    @classmethod
    def normalize(cls, node):
        return {"alpha": node.attr("alpha", 1.67326319217681884765625),
                "gamma": node.attr("gamma", 1.05070102214813232421875)}


class HardSigmoid(_Activation):
    @classmethod
    def normalize(cls, node):
        return {"alpha": node.attr("alpha", 0.2), "beta": node.attr("beta", 0.5)}


class Gelu(_Activation):
    @classmethod
    def normalize(cls, node):
        return {"approximate": node.attr("approximate", "none")}


class Clip(_Activation):
    @classmethod
    def normalize(cls, node):
        if node.opset < 11:
            lo, hi = node.attr("min", -np.inf), node.attr("max", np.inf)
        else:
            lo, hi = node.take(1, "min"), node.take(2, "max")
        lo = -np.inf if lo is None else float(np.asarray(lo).reshape(()))
        hi = np.inf if hi is None else float(np.asarray(hi).reshape(()))
        return {"min": lo, "max": hi}

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        lo, hi = layer.attrs["min"], layer.attrs["max"]
        if np.issubdtype(x.dtype, np.integer):
            info = np.iinfo(x.dtype)
            lo, hi = max(lo, info.min), min(hi, info.max)
        return [np.clip(x, np.asarray(lo).astype(x.dtype), np.asarray(hi).astype(x.dtype))]


class PRelu(Op):
    weight_inputs = (1,)

    @classmethod
    def infer(cls, layer, specs):
        return same_as_input(layer, specs)

    @classmethod
    def compute(cls, layer, args):
        x, slope = args
        return [np.where(x >= 0, x, x * slope).astype(x.dtype, copy=False)]
