"""The ops of the shape subgraphs that exporters write: Shape, Size, ConstantOfShape, Range.

With static shapes they are folded to constants at import, so their reference is all they need
(Shape and Size only ever see a zero-stride stand-in of their input's static shape).
"""
import numpy as np

from .base import Op
from ...errors import ShapeError, where
from ..graph import TensorSpec


class Shape(Op):
    @classmethod
    def normalize(cls, node):
        return {"start": int(node.attr("start", 0)), "end": node.attr("end", None)}

    @classmethod
    def _dims(cls, layer, shape):
        end = layer.attrs["end"]
        return list(shape)[slice(layer.attrs["start"], None if end is None else int(end))]

    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec((len(cls._dims(layer, specs[0].shape)),), "int64")]

    @classmethod
    def compute(cls, layer, args):
        return [np.array(cls._dims(layer, args[0].shape), np.int64)]


class Size(Op):
    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec((), "int64")]

    @classmethod
    def compute(cls, layer, args):
        return [np.array(args[0].size, np.int64)]


class ConstantOfShape(Op):
    @classmethod
    def normalize(cls, node):
        value = node.attr("value", None)
        return {"value": np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(1)}

    @classmethod
    def compute(cls, layer, args):
        value = layer.attrs["value"]
        return [np.full(tuple(int(d) for d in args[0]), value[0], dtype=value.dtype)]


class Range(Op):
    @classmethod
    def compute(cls, layer, args):
        start, limit, delta = (np.asarray(a).reshape(()) for a in args)
        # The length in float64 whatever the type, as ONNX shape inference and ONNX Runtime
        # compute it: float32 arithmetic can round e.g. (0.6 - 0.1) / 0.5 down to 1, not 2.
        n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
        return [(start + np.arange(n, dtype=np.float64 if start.dtype.kind == "f" else np.int64) * delta)
                .astype(start.dtype)]


class If(Op):
    """An ONNX If whose condition is known only at run time (``onnx_io/control_flow.py``; one that
    folds at load is its branch instead).  Inputs: the condition, then the tensors the branches
    read; ``meta["branches"]``: the two imported graphs, each run on those tensors.  Both must give
    outputs of the same static shapes.  No NumPy ``compute``: the reference executor runs the
    picked branch's graph itself (``runtime/interpreter.py``)."""

    @classmethod
    def infer(cls, layer, specs):
        g = next(g for g in layer.meta["branches"].values() if not isinstance(g, str))
        return [g.spec(o) for o in g.outputs]

    @classmethod
    def branch(cls, layer, cond):
        """The graph of the branch ``cond`` picks (ShapeError where it cannot run at these shapes)."""
        g = layer.meta["branches"]["then" if bool(np.asarray(cond).reshape(-1)[0]) else "else"]
        if isinstance(g, str):
            raise ShapeError(f"{where(layer)}: {g}")
        return g

    @classmethod
    def compute(cls, layer, args):
        raise NotImplementedError(f"{where(layer)}: an If runs a graph: the reference executor runs the branch "
                                  f"it picks, the branches routine its compiled plan")
