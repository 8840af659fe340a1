"""Gemm, MatMul, Softmax/LogSoftmax."""
import numpy as np

from .base import Op, check
from ..graph import TensorSpec
from .activation import epilogue


class Gemm(Op):
    weight_inputs = (1, 2)
    fusable = True

    @classmethod
    def normalize(cls, node):
        return dict(alpha=float(node.attr("alpha", 1.0)), beta=float(node.attr("beta", 1.0)),
                    transA=int(node.attr("transA", 0)), transB=int(node.attr("transB", 0)))

    @classmethod
    def infer(cls, layer, specs):
        a, b = specs[0].shape, specs[1].shape
        check(len(a) == 2 and len(b) == 2, layer, f"Gemm needs 2-D inputs, got {a} and {b}")
        m, k = a[::-1] if layer.attrs["transA"] else a
        kb, n = b[::-1] if layer.attrs["transB"] else b
        check(k == kb, layer, f"inner dimensions differ: A {a} (transA={layer.attrs['transA']}) vs "
                               f"B {b} (transB={layer.attrs['transB']})")
        if len(specs) > 2 and specs[2] is not None:
            try:
                np.broadcast_shapes(specs[2].shape, (m, n))
            except ValueError:
                check(False, layer, f"C {specs[2].shape} does not broadcast to {(m, n)}")
        return [TensorSpec((m, n), specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        a, b = args[0], args[1]
        c = args[2] if len(args) > 2 else None
        at = layer.attrs
        y = (a.T if at["transA"] else a) @ (b.T if at["transB"] else b)
        if at["alpha"] != 1.0:
            y = y * np.asarray(at["alpha"], y.dtype)
        if c is not None:
            y = y + (c if at["beta"] == 1.0 else c * np.asarray(at["beta"], c.dtype))
        return [epilogue(layer, y.astype(a.dtype, copy=False))]

    @classmethod
    def macs(cls, layer, specs):
        m, n = layer.out_specs[0].shape
        a = specs[0].shape
        return m * n * (a[0] if layer.attrs["transA"] else a[1])


class MatMul(Op):
    fusable = True

    @classmethod
    def infer(cls, layer, specs):
        a, b = specs[0].shape, specs[1].shape
        check(len(a) >= 1 and len(b) >= 1, layer, "MatMul of a scalar")
        a2, b2 = (1,) + a if len(a) == 1 else a, b + (1,) if len(b) == 1 else b
        check(a2[-1] == b2[-2], layer, f"inner dimensions differ: {a} @ {b}")
        try:
            batch = np.broadcast_shapes(a2[:-2], b2[:-2])
        except ValueError:
            check(False, layer, f"batch dimensions of {a} and {b} do not broadcast")
        shape = tuple(batch) + (a2[-2], b2[-1])
        if len(a) == 1:
            shape = shape[:-2] + shape[-1:]
        if len(b) == 1:
            shape = shape[:-1]
        if len(specs) > 2:   # a bias along the last axis (passes/fuse_matmul_bias.py)
            check(specs[2].shape == shape[-1:], layer, f"bias of shape {specs[2].shape} for a product {shape}")
        return [TensorSpec(shape, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        y = np.matmul(args[0], args[1])
        if len(args) > 2:
            y = y + args[2]
        return [epilogue(layer, y)]

    @classmethod
    def macs(cls, layer, specs):
        k = specs[0].shape[-1]
        return int(np.prod(layer.out_specs[0].shape, dtype=np.int64)) * k


class Softmax(Op):
    log = False

    @classmethod
    def normalize(cls, node):
        # Before opset 13 the input is coerced to 2-D at `axis` and normalised over the flattened tail.
        return {"axis": int(node.attr("axis", -1 if node.opset >= 13 else 1)), "coerce_2d": node.opset < 13}

    @classmethod
    def infer(cls, layer, specs):
        r = len(specs[0].shape)
        check(-r <= layer.attrs["axis"] < max(r, 1), layer, f"axis {layer.attrs['axis']} out of range for rank {r}")
        return [TensorSpec(specs[0].shape, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        axis = layer.attrs["axis"] % max(x.ndim, 1)
        if layer.attrs["coerce_2d"]:
            xs = x.reshape(int(np.prod(x.shape[:axis])), -1)
            axes = 1
        else:
            xs, axes = x, axis
        z = xs - xs.max(axis=axes, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=axes, keepdims=True)
        y = (z - np.log(s)) if cls.log else e / s
        return [y.reshape(x.shape).astype(x.dtype, copy=False)]


class LogSoftmax(Softmax):
    log = True


class SoftmaxDot(Op):
    """A Softmax over one axis and the weighted sum of its output over that axis, fused
    (``passes/fuse_softmax_dot.py``): ``y = sum_a softmax(x, axis)_a * w[a] + bias``, shaped as
    ``out_specs[0]`` (the layer it ends in: a 1x1 Conv with one output channel, or a MatMul by
    one column).  Input 1 is ``w`` (one value per step of the axis), input 2, if any, the bias
    (one value).  Not an ONNX op; export writes the original layers back."""

    weight_inputs = (1, 2)

    @classmethod
    def infer(cls, layer, specs):
        shape, axis = specs[0].shape, layer.attrs["axis"]
        check(0 <= axis < len(shape), layer, f"axis {axis} out of range for rank {len(shape)}")
        check(specs[1].size == shape[axis], layer,
              f"{specs[1].size} weights for a softmax axis of {shape[axis]}")
        out = layer.out_specs[0]
        check(out.size * shape[axis] == specs[0].size, layer, f"output {out.shape} does not match input {shape}")
        return [TensorSpec(out.shape, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        x, w = args[0], np.asarray(args[1]).reshape(-1)
        axis = layer.attrs["axis"]
        with np.errstate(invalid="ignore"):   # inf - inf: NaN, as in ONNX Runtime
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            p = e / e.sum(axis=axis, keepdims=True)
        y = np.moveaxis(p, axis, -1) @ w.astype(x.dtype)
        if len(args) > 2 and args[2] is not None:
            y = y + np.asarray(args[2]).reshape(-1)[0]
        return [y.reshape(layer.out_specs[0].shape).astype(x.dtype, copy=False)]

    @classmethod
    def macs(cls, layer, specs):
        return specs[0].size
