"""Elementwise ops with NumPy broadcasting: arithmetic, comparison, unary math, Cast, Identity."""
import numpy as np

from .base import Op, check, same_as_input
from ..graph import TensorSpec
from .activation import _erf, epilogue


def broadcast_spec(layer, specs, dtype=None):
    shapes = [s.shape for s in specs if s is not None]
    try:
        shape = np.broadcast_shapes(*shapes)
    except ValueError:
        check(False, layer, f"inputs of shapes {', '.join(map(str, shapes))} do not broadcast")
    return [TensorSpec(shape, dtype or specs[0].dtype)]


def _int_div(a, b):
    # ONNX (like C) truncates integer division toward zero; NumPy's // floors.
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -q, q).astype(a.dtype)


class _Binary(Op, register=False):
    fn = None

    @classmethod
    def infer(cls, layer, specs):
        return broadcast_spec(layer, specs)

    @classmethod
    def compute(cls, layer, args):
        a, b = args
        return [np.asarray(cls.fn(a, b)).astype(a.dtype, copy=False)]


class _FusableBinary(_Binary, register=False):
    fusable = True

    @classmethod
    def compute(cls, layer, args):
        return [epilogue(layer, super().compute(layer, args)[0])]


class Add(_FusableBinary): fn = staticmethod(np.add)
class Sub(_FusableBinary): fn = staticmethod(np.subtract)
class Mul(_FusableBinary): fn = staticmethod(np.multiply)


class Div(_FusableBinary):
    @staticmethod
    def fn(a, b):
        return _int_div(a, b) if np.issubdtype(np.asarray(a).dtype, np.integer) else np.divide(a, b)


def upsample_factors(layer):
    """``{input: (fh, fw)}`` of an EltwiseChain's inputs read as nearest upsamples (empty: none)."""
    return {int(k): (int(fh), int(fw)) for k, fh, fw in layer.attrs.get("upsample", ())}


class EltwiseChain(Op):
    """Several Add/Sub/Mul/Div layers fused into one pass (``passes/fuse_eltwise_chain.py``).

    ``attrs["steps"]``: one dict per original layer, in order: ``op``, ``args`` (two operand
    references: ``k >= 0`` is input ``k``, ``k < 0`` the result of step ``-k - 1``) and the
    layer's fused ``activation``/``activation_params``, if any.  The last step gives the output.
    Not an ONNX op; export writes the original layers back.  ``attrs["upsample"]``, where present
    (``passes/fuse_upsample_read.py``): ``[input, fh, fw]`` triples, inputs read as their nearest
    upsample by those factors along height and width (``meta["upsampled"]`` keeps the Resize layers).
    """

    @classmethod
    def infer(cls, layer, specs):
        specs = list(specs)
        for k, (fh, fw) in upsample_factors(layer).items():
            n, c, h, w = specs[k].shape
            specs[k] = TensorSpec((n, c, h * fh, w * fw), specs[k].dtype)
        results = []
        for step in layer.attrs["steps"]:
            a, b = (specs[k] if k >= 0 else results[-k - 1] for k in step["args"])
            results.append(broadcast_spec(layer, [a, b])[0])
        return [results[-1]]

    @classmethod
    def compute(cls, layer, args):
        args = list(args)
        for k, (fh, fw) in upsample_factors(layer).items():
            args[k] = np.repeat(np.repeat(args[k], fh, axis=2), fw, axis=3)
        results = []
        for step in layer.attrs["steps"]:
            a, b = (args[k] if k >= 0 else results[-k - 1] for k in step["args"])
            op = OPS_BY_NAME[step["op"]]
            results.append(epilogue(_StepView(step), np.asarray(op.fn(a, b)).astype(a.dtype, copy=False)))
        return [results[-1]]


class _StepView:
    """A chain step seen as a layer by ``epilogue`` (which reads only ``attrs``)."""

    def __init__(self, step):
        self.attrs = step


OPS_BY_NAME = {"Add": Add, "Sub": Sub, "Mul": Mul, "Div": Div}


class Pow(_Binary):
    @classmethod
    def compute(cls, layer, args):
        a, b = args
        if np.issubdtype(a.dtype, np.floating):
            b = b.astype(a.dtype)
        return [np.power(a, b).astype(a.dtype, copy=False)]


class Mod(_Binary):
    @classmethod
    def normalize(cls, node):
        return {"fmod": node.attr("fmod", 0)}

    @classmethod
    def compute(cls, layer, args):
        a, b = args
        return [(np.fmod(a, b) if layer.attrs["fmod"] else np.mod(a, b)).astype(a.dtype, copy=False)]


class _Variadic(Op, register=False):
    fn = None

    @classmethod
    def infer(cls, layer, specs):
        return broadcast_spec(layer, specs)

    @classmethod
    def compute(cls, layer, args):
        out = args[0]
        for a in args[1:]:
            out = cls.fn(out, a)
        return [np.asarray(out).astype(args[0].dtype, copy=False)]


class Max(_Variadic): fn = staticmethod(np.maximum)
class Min(_Variadic): fn = staticmethod(np.minimum)
class Sum(_Variadic): fn = staticmethod(np.add)


class Mean(_Variadic):
    @classmethod
    def compute(cls, layer, args):
        return [(sum(args[1:], args[0]) / len(args)).astype(args[0].dtype, copy=False)]


class _Compare(Op, register=False):
    fn = None

    @classmethod
    def infer(cls, layer, specs):
        return broadcast_spec(layer, specs, dtype="bool")

    @classmethod
    def compute(cls, layer, args):
        return [np.asarray(cls.fn(*args))]


class Equal(_Compare): fn = staticmethod(np.equal)
class Less(_Compare): fn = staticmethod(np.less)
class Greater(_Compare): fn = staticmethod(np.greater)
class LessOrEqual(_Compare): fn = staticmethod(np.less_equal)
class GreaterOrEqual(_Compare): fn = staticmethod(np.greater_equal)
class And(_Compare): fn = staticmethod(np.logical_and)
class Or(_Compare): fn = staticmethod(np.logical_or)
class Xor(_Compare): fn = staticmethod(np.logical_xor)


class Not(Op):
    @classmethod
    def infer(cls, layer, specs):
        return same_as_input(layer, specs)

    @classmethod
    def compute(cls, layer, args):
        return [np.logical_not(args[0])]


class Where(Op):
    @classmethod
    def infer(cls, layer, specs):
        return broadcast_spec(layer, specs, dtype=specs[1].dtype)

    @classmethod
    def compute(cls, layer, args):
        return [np.where(*args).astype(args[1].dtype, copy=False)]


class _Unary(Op, register=False):
    fn = None

    @classmethod
    def infer(cls, layer, specs):
        return same_as_input(layer, specs)

    @classmethod
    def compute(cls, layer, args):
        return [np.asarray(cls.fn(args[0])).astype(args[0].dtype, copy=False)]


class Sqrt(_Unary): fn = staticmethod(np.sqrt)
class Exp(_Unary): fn = staticmethod(np.exp)
class Log(_Unary): fn = staticmethod(np.log)
class Neg(_Unary): fn = staticmethod(np.negative)
class Abs(_Unary): fn = staticmethod(np.abs)
class Floor(_Unary): fn = staticmethod(np.floor)
class Ceil(_Unary): fn = staticmethod(np.ceil)
class Round(_Unary): fn = staticmethod(np.round)  # half to even, as ONNX specifies
class Sin(_Unary): fn = staticmethod(np.sin)
class Cos(_Unary): fn = staticmethod(np.cos)
class Erf(_Unary): fn = staticmethod(_erf)
class Sign(_Unary): fn = staticmethod(np.sign)


class Reciprocal(_Unary):
    @staticmethod
    def fn(x):
        return np.reciprocal(x)


class Identity(_Unary):
    @staticmethod
    def fn(x):
        return x


class Dropout(Op):
    """Inference-mode Dropout: the identity, and a constant mask when asked for.

    The mask is all true from opset 12 on (the spec says so).  Before, the spec leaves it unfilled
    in inference; we give what ONNX Runtime gives: zeros, of the input's type before opset 10
    (when the mask had type T) and bool from 10.
    """

    @classmethod
    def normalize(cls, node):
        if node.opset >= 12:
            node.take(1, "ratio")
            mode = node.take(2, "training_mode")
            if mode is not None and bool(np.asarray(mode)):
                node.fail("training_mode=True is not supported for inference")
        mask_dtype = "bool" if node.opset >= 10 else node.spec(0).dtype
        return {"mask_value": node.opset >= 12, "mask_dtype": mask_dtype}

    @classmethod
    def infer(cls, layer, specs):
        out = [TensorSpec(specs[0].shape, specs[0].dtype)]
        if len(layer.outputs) > 1:
            out.append(TensorSpec(specs[0].shape, layer.attrs.get("mask_dtype", "bool")))
        return out

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        if len(layer.outputs) < 2:
            return [x]
        return [x, np.full(x.shape, layer.attrs.get("mask_value", True), layer.attrs.get("mask_dtype", "bool"))]


class Cast(Op):
    @classmethod
    def normalize(cls, node):
        return {"to": node.dtype_attr("to")}

    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(specs[0].shape, layer.attrs["to"])]

    @classmethod
    def compute(cls, layer, args):
        return [args[0].astype(layer.attrs["to"])]


class CastLike(Op):
    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(specs[0].shape, specs[1].dtype)]

    @classmethod
    def compute(cls, layer, args):
        return [args[0].astype(args[1].dtype)]
