"""Reductions (ReduceMean, ReduceSum, ...) and ArgMax/ArgMin."""
import numpy as np

from .base import Op, check
from ..graph import TensorSpec


class _Reduce(Op, register=False):
    fn = None
    axes_input_since = 18  # ReduceSum moved axes to an input in opset 13, the others in 18

    @classmethod
    def normalize(cls, node):
        if node.opset >= cls.axes_input_since:
            axes = node.take(1, "axes")
        else:
            axes = node.attr("axes", None)
        axes = None if axes is None or len(np.atleast_1d(axes)) == 0 else [int(a) for a in np.atleast_1d(axes)]
        return {"axes": axes, "keepdims": int(node.attr("keepdims", 1)),
                "noop": int(node.attr("noop_with_empty_axes", 0)) and axes is None}

    @classmethod
    def _axes(cls, layer, rank):
        axes = layer.attrs["axes"]
        if axes is None:
            return () if layer.attrs["noop"] else tuple(range(rank))
        check(all(-rank <= a < rank for a in axes), layer, f"axes {axes} out of range for rank {rank}")
        return tuple(sorted(a % rank for a in axes))

    @classmethod
    def infer(cls, layer, specs):
        shape = specs[0].shape
        axes = cls._axes(layer, len(shape))
        if layer.attrs["keepdims"]:
            out = tuple(1 if i in axes else d for i, d in enumerate(shape))
        else:
            out = tuple(d for i, d in enumerate(shape) if i not in axes)
        return [TensorSpec(out, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        # No axes (noop_with_empty_axes) still reduces each element alone: the identity for
        # Mean/Max/..., but |x| for ReduceL2 and x^2 for ReduceSumSquare, as ONNX Runtime does.
        axes = cls._axes(layer, x.ndim)
        return [np.asarray(cls.fn(x, axis=axes, keepdims=bool(layer.attrs["keepdims"]))).astype(x.dtype, copy=False)]


class ReduceMean(_Reduce): fn = staticmethod(np.mean)
class ReduceMax(_Reduce): fn = staticmethod(np.max)
class ReduceMin(_Reduce): fn = staticmethod(np.min)
class ReduceProd(_Reduce): fn = staticmethod(np.prod)


class ReduceSum(_Reduce):
    axes_input_since = 13
    fn = staticmethod(np.sum)


class ReduceL2(_Reduce):
    @staticmethod
    def fn(x, axis, keepdims):
        return np.sqrt(np.sum(np.square(x, dtype=np.float64), axis=axis, keepdims=keepdims))


class ReduceSumSquare(_Reduce):
    @staticmethod
    def fn(x, axis, keepdims):
        return np.sum(np.square(x), axis=axis, keepdims=keepdims)


class ArgMax(Op):
    fn = staticmethod(np.argmax)

    @classmethod
    def normalize(cls, node):
        if node.attr("select_last_index", 0):
            node.fail("select_last_index=1 is not supported")
        return {"axis": int(node.attr("axis", 0)), "keepdims": int(node.attr("keepdims", 1))}

    @classmethod
    def infer(cls, layer, specs):
        shape = list(specs[0].shape)
        axis = layer.attrs["axis"] % len(shape)
        if layer.attrs["keepdims"]:
            shape[axis] = 1
        else:
            del shape[axis]
        return [TensorSpec(shape, "int64")]

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        axis = layer.attrs["axis"] % x.ndim
        out = cls.fn(x, axis=axis)
        return [(np.expand_dims(out, axis) if layer.attrs["keepdims"] else out).astype(np.int64)]


class ArgMin(ArgMax):
    fn = staticmethod(np.argmin)
