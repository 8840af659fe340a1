"""Data-movement ops: Reshape, Transpose, Concat, Split, Slice, Pad, Gather, Expand, Tile, ...

The ops that only compute shapes (Shape, Size, ConstantOfShape, Range) are in :mod:`.shape`.
"""
import numpy as np

from .base import Op, check
from ..graph import TensorSpec

INT64_MAX = np.iinfo(np.int64).max


def _axis(layer, axis, rank):
    check(-rank <= axis < rank, layer, f"axis {axis} out of range for rank {rank}")
    return axis % rank


def _contiguous(a):
    # Not np.ascontiguousarray: that turns a 0-d result (Expand/Transpose of a scalar) into 1-D.
    return np.asarray(a, order="C")


def _ints(value):
    return None if value is None else [int(v) for v in np.atleast_1d(np.asarray(value))]


class Reshape(Op):
    @classmethod
    def normalize(cls, node):
        return {"shape": _ints(node.take(1, "shape", required=True)), "allowzero": int(node.attr("allowzero", 0))}

    @staticmethod
    def target(layer, in_shape):
        shape = list(layer.attrs["shape"])
        if not layer.attrs["allowzero"]:
            for i, d in enumerate(shape):
                if d == 0:
                    check(i < len(in_shape), layer, f"shape {shape} copies dim {i} of a rank-{len(in_shape)} input")
                    shape[i] = in_shape[i]
        size = int(np.prod(in_shape, dtype=np.int64))
        if -1 in shape:
            check(shape.count(-1) == 1, layer, f"shape {layer.attrs['shape']} has more than one -1")
            known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
            check(known > 0 and size % known == 0, layer, f"cannot reshape {tuple(in_shape)} to {layer.attrs['shape']}")
            shape[shape.index(-1)] = size // known
        check(int(np.prod(shape, dtype=np.int64)) == size, layer,
              f"cannot reshape {tuple(in_shape)} ({size} elements) to {layer.attrs['shape']}")
        return tuple(shape)

    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(cls.target(layer, specs[0].shape), specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        return [args[0].reshape(cls.target(layer, args[0].shape))]


class Flatten(Op):
    @classmethod
    def normalize(cls, node):
        return {"axis": int(node.attr("axis", 1))}

    @classmethod
    def _shape(cls, layer, shape):
        axis = layer.attrs["axis"]
        check(-len(shape) <= axis <= len(shape), layer, f"axis {axis} out of range for rank {len(shape)}")
        axis = axis + len(shape) if axis < 0 else axis
        return (int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)))

    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(cls._shape(layer, specs[0].shape), specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        return [args[0].reshape(cls._shape(layer, args[0].shape))]


class Transpose(Op):
    @classmethod
    def normalize(cls, node):
        perm = node.attr("perm", None)
        return {"perm": None if perm is None else [int(p) for p in perm]}

    @classmethod
    def _perm(cls, layer, rank):
        perm = layer.attrs["perm"]
        perm = list(range(rank))[::-1] if perm is None else perm
        check(sorted(p % rank for p in perm) == list(range(rank)), layer, f"perm {perm} is not a permutation of rank {rank}")
        return [p % rank for p in perm]

    @classmethod
    def infer(cls, layer, specs):
        shape = specs[0].shape
        return [TensorSpec(tuple(shape[p] for p in cls._perm(layer, len(shape))), specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        return [_contiguous(np.transpose(args[0], cls._perm(layer, args[0].ndim)))]


class Squeeze(Op):
    @classmethod
    def normalize(cls, node):
        axes = node.take(1, "axes") if node.opset >= 13 else node.attr("axes", None)
        return {"axes": _ints(axes)}

    @classmethod
    def _shape(cls, layer, shape):
        axes = layer.attrs["axes"]
        if axes is None:
            return tuple(d for d in shape if d != 1)
        axes = {_axis(layer, a, len(shape)) for a in axes}
        check(all(shape[a] == 1 for a in axes), layer, f"cannot squeeze axes {sorted(axes)} of shape {shape}")
        return tuple(d for i, d in enumerate(shape) if i not in axes)

    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(cls._shape(layer, specs[0].shape), specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        return [args[0].reshape(cls._shape(layer, args[0].shape))]


class Unsqueeze(Op):
    @classmethod
    def normalize(cls, node):
        axes = node.take(1, "axes", required=True) if node.opset >= 13 else node.attr("axes", None)
        if axes is None:
            node.fail("axes is required")
        return {"axes": _ints(axes)}

    @classmethod
    def _shape(cls, layer, shape):
        rank = len(shape) + len(layer.attrs["axes"])
        axes = sorted(_axis(layer, a, rank) for a in layer.attrs["axes"])
        check(len(set(axes)) == len(axes), layer, f"repeated axes {layer.attrs['axes']}")
        out, it = [], iter(shape)
        for i in range(rank):
            out.append(1 if i in axes else next(it))
        return tuple(out)

    @classmethod
    def infer(cls, layer, specs):
        return [TensorSpec(cls._shape(layer, specs[0].shape), specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        return [args[0].reshape(cls._shape(layer, args[0].shape))]


class Concat(Op):
    @classmethod
    def normalize(cls, node):
        return {"axis": int(node.attr("axis", None) if node.attr("axis", None) is not None else node.fail("axis is required"))}

    @classmethod
    def infer(cls, layer, specs):
        specs = [s for s in specs if s is not None]
        rank = len(specs[0].shape)
        axis = _axis(layer, layer.attrs["axis"], rank)
        for s in specs:
            check(len(s.shape) == rank and all(a == b for i, (a, b) in enumerate(zip(s.shape, specs[0].shape)) if i != axis),
                  layer, f"inputs {[x.shape for x in specs]} differ outside axis {axis}")
        shape = list(specs[0].shape)
        shape[axis] = sum(s.shape[axis] for s in specs)
        return [TensorSpec(shape, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        args = [a for a in args if a is not None]
        return [np.concatenate(args, axis=layer.attrs["axis"] % args[0].ndim)]


class Split(Op):
    @classmethod
    def normalize(cls, node):
        split = node.take(1, "split") if node.opset >= 13 else node.attr("split", None)
        return {"axis": int(node.attr("axis", 0)), "split": _ints(split), "num_outputs": node.attr("num_outputs", None)}

    @classmethod
    def _sizes(cls, layer, shape):
        axis = _axis(layer, layer.attrs["axis"], len(shape))
        n = len(layer.outputs)
        if layer.attrs["split"] is not None:
            sizes = layer.attrs["split"]
            check(sum(sizes) == shape[axis] and len(sizes) == n, layer,
                  f"split {sizes} does not cover dim {shape[axis]} with {n} outputs")
        else:
            chunk = -(-shape[axis] // n)
            sizes = [min(chunk, shape[axis] - i * chunk) for i in range(n)]
            check(all(s > 0 for s in sizes), layer, f"cannot split dim {shape[axis]} into {n} parts")
        return axis, sizes

    @classmethod
    def infer(cls, layer, specs):
        shape = specs[0].shape
        axis, sizes = cls._sizes(layer, shape)
        return [TensorSpec(shape[:axis] + (s,) + shape[axis + 1:], specs[0].dtype) for s in sizes]

    @classmethod
    def compute(cls, layer, args):
        axis, sizes = cls._sizes(layer, args[0].shape)
        return np.split(args[0], np.cumsum(sizes)[:-1], axis=axis)


class Slice(Op):
    @classmethod
    def normalize(cls, node):
        if node.opset < 10:
            starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes", None), None
        else:
            starts, ends = node.take(1, "starts", required=True), node.take(2, "ends", required=True)
            axes, steps = node.take(3, "axes"), node.take(4, "steps")
        starts, ends = _ints(starts), _ints(ends)
        axes = _ints(axes) or list(range(len(starts)))
        steps = _ints(steps) or [1] * len(starts)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            node.fail(f"starts {starts}, ends {ends}, axes {axes}, steps {steps} differ in length")
        if 0 in steps:
            node.fail("a step of 0")
        return {"starts": starts, "ends": ends, "axes": axes, "steps": steps}

    @classmethod
    def _index(cls, layer, shape):
        a = layer.attrs
        index = [slice(None)] * len(shape)
        for start, end, axis, step in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
            axis = _axis(layer, axis, len(shape))
            dim = shape[axis]
            if step < 0 and end == INT64_MAX:
                # ONNX Runtime reads an INT64_MAX end as "to the end in the step's direction",
                # i.e. through index 0 when slicing backward (the spec would clamp it to dim - 1).
                end = -INT64_MAX
            start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
            if step > 0:
                start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            else:
                start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
            index[axis] = slice(start, None if end < 0 else end, step)
        return tuple(index)

    @classmethod
    def infer(cls, layer, specs):
        shape = specs[0].shape
        dummy = np.empty(shape, dtype=np.bool_)
        return [TensorSpec(np.lib.stride_tricks.as_strided(dummy, shape, [0] * len(shape))[cls._index(layer, shape)].shape,
                           specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        return [_contiguous(args[0][cls._index(layer, args[0].shape)])]


class Pad(Op):
    @classmethod
    def normalize(cls, node):
        if node.opset < 11:
            pads, value, axes = node.attr("pads"), node.attr("value", 0.0), None
        else:
            pads = node.take(1, "pads", required=True)
            value = node.take(2, "constant_value")
            axes = node.take(3, "axes")
        mode = node.attr("mode", "constant")
        if mode not in ("constant", "reflect", "edge", "wrap"):
            node.fail(f"unknown mode {mode!r}")
        value = 0.0 if value is None or np.asarray(value).size == 0 else np.asarray(value).reshape(()).item()
        return {"pads": _ints(pads), "value": value, "mode": mode, "axes": _ints(axes)}

    @classmethod
    def _widths(cls, layer, rank):
        a = layer.attrs
        axes = [_axis(layer, x, rank) for x in (a["axes"] or range(rank))]
        check(len(a["pads"]) == 2 * len(axes), layer, f"{len(a['pads'])} pads for {len(axes)} axes")
        widths = [(0, 0)] * rank
        for i, ax in enumerate(axes):
            widths[ax] = (a["pads"][i], a["pads"][i + len(axes)])
        return widths

    @classmethod
    def infer(cls, layer, specs):
        shape = specs[0].shape
        out = tuple(d + b + e for d, (b, e) in zip(shape, cls._widths(layer, len(shape))))
        check(all(d >= 0 for d in out), layer, f"pads {layer.attrs['pads']} remove more than {shape}")
        return [TensorSpec(out, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        widths = cls._widths(layer, x.ndim)
        # Negative pads crop; NumPy's pad takes only the non-negative part.
        crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(widths))
        x = x[crop]
        widths = [(max(b, 0), max(e, 0)) for b, e in widths]
        mode = layer.attrs["mode"]
        if mode == "constant":
            return [np.pad(x, widths, mode="constant", constant_values=np.asarray(layer.attrs["value"]).astype(x.dtype))]
        return [np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])]


class Gather(Op):
    @classmethod
    def normalize(cls, node):
        return {"axis": int(node.attr("axis", 0))}

    @classmethod
    def infer(cls, layer, specs):
        data, idx = specs[0].shape, specs[1].shape
        axis = _axis(layer, layer.attrs["axis"], len(data))
        return [TensorSpec(data[:axis] + idx + data[axis + 1:], specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        data, idx = args
        axis = layer.attrs["axis"] % data.ndim
        idx = np.asarray(idx, np.int64)
        check(np.all((idx >= -data.shape[axis]) & (idx < data.shape[axis])), layer,
              f"indices out of range for dim {data.shape[axis]}")
        return [np.take(data, idx, axis=axis)]


class Expand(Op):
    @classmethod
    def normalize(cls, node):
        return {"shape": _ints(node.take(1, "shape", required=True))}

    @classmethod
    def infer(cls, layer, specs):
        try:
            shape = np.broadcast_shapes(specs[0].shape, tuple(layer.attrs["shape"]))
        except ValueError:
            check(False, layer, f"cannot expand {specs[0].shape} to {layer.attrs['shape']}")
        return [TensorSpec(shape, specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        shape = np.broadcast_shapes(args[0].shape, tuple(layer.attrs["shape"]))
        return [_contiguous(np.broadcast_to(args[0], shape))]


class Tile(Op):
    @classmethod
    def normalize(cls, node):
        return {"repeats": _ints(node.take(1, "repeats", required=True))}

    @classmethod
    def infer(cls, layer, specs):
        shape = specs[0].shape
        check(len(layer.attrs["repeats"]) == len(shape), layer, f"repeats {layer.attrs['repeats']} for rank {len(shape)}")
        return [TensorSpec(tuple(d * r for d, r in zip(shape, layer.attrs["repeats"])), specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        return [np.tile(args[0], layer.attrs["repeats"])]


class DepthToSpace(Op):
    @classmethod
    def normalize(cls, node):
        return {"blocksize": int(node.attr("blocksize")), "mode": node.attr("mode", "DCR")}

    @classmethod
    def infer(cls, layer, specs):
        n, c, h, w = specs[0].shape
        b = layer.attrs["blocksize"]
        check(c % (b * b) == 0, layer, f"{c} channels not divisible by blocksize^2 = {b * b}")
        return [TensorSpec((n, c // (b * b), h * b, w * b), specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        n, c, h, w = x.shape
        b = layer.attrs["blocksize"]
        if layer.attrs["mode"] == "DCR":
            y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        return [np.ascontiguousarray(y).reshape(n, c // (b * b), h * b, w * b)]


class SpaceToDepth(Op):
    @classmethod
    def normalize(cls, node):
        return {"blocksize": int(node.attr("blocksize"))}

    @classmethod
    def infer(cls, layer, specs):
        n, c, h, w = specs[0].shape
        b = layer.attrs["blocksize"]
        check(h % b == 0 and w % b == 0, layer, f"spatial size {h}x{w} not divisible by blocksize {b}")
        return [TensorSpec((n, c * b * b, h // b, w // b), specs[0].dtype)]

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        n, c, h, w = x.shape
        b = layer.attrs["blocksize"]
        y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
        return [np.ascontiguousarray(y).reshape(n, c * b * b, h // b, w // b)]
