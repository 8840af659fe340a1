"""``cpu:float32:nchw/ufunc``: NumPy ufuncs writing straight into the planned buffers.

For the long tail of ops that real exports contain but that carry little of a CNN's time
(comparisons, unary math, reductions, gathers, LayerNorm, ...).  Every routine here computes
into ``outs`` with ``out=`` (and temporaries in their declared workspace), so unlike the
reference it allocates nothing per run; NumPy's C loops do the work.  Layout is the native one
(NCHW for 4-D tensors).  Like the reference they take any dtype the op accepts (comparisons
write bool, ArgMax int64); the descriptor's ``float32`` names the family, as the reference's does.
Shape, Size, ConstantOfShape and Range have no routine here: with static shapes the importer
always folds them to constants.
"""
import numpy as np

from . import Routine
from ..ir.ops.reduce import ArgMax, _Reduce
from ..ir.ops.tensor import Gather as GatherOp


class _Ufunc(Routine, register=False):
    uses_blas = False
    algo = "ufunc"
    priority = 5

    @classmethod
    def applies(cls, layer, specs):
        return all(s is not None for s in specs[:1])


# -- elementwise: one ufunc call, NumPy broadcasting into the output buffer ---------------------
UNARY = {"Abs": np.absolute, "Ceil": np.ceil, "Cos": np.cos, "Floor": np.floor, "Log": np.log, "Neg": np.negative,
         "Reciprocal": np.reciprocal, "Round": np.rint, "Sign": np.sign, "Sin": np.sin, "Not": np.logical_not,
         "Softplus": lambda x, out: np.logaddexp(np.zeros((), x.dtype), x, out=out)}
BINARY = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add, "Equal": np.equal, "Less": np.less,
          "Greater": np.greater, "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
          "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}


class Unary(_Ufunc):
    op = tuple(UNARY)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        UNARY[layer.op](args[0], out=outs[0])


class Variadic(_Ufunc):
    """Binary and variadic ops (Max/Min/Sum fold left, comparisons and logic take two)."""

    op = tuple(BINARY) + ("Mean",)

    @classmethod
    def applies(cls, layer, specs):
        return all(s is not None for s in specs) and len(specs) >= 1

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        y = outs[0]
        fn = np.add if layer.op == "Mean" else BINARY[layer.op]
        if len(args) == 1:
            np.copyto(y, args[0], casting="unsafe")
        else:
            fn(args[0], args[1], out=y, casting="unsafe")
            for a in args[2:]:
                fn(y, a, out=y, casting="unsafe")
        if layer.op == "Mean":
            y /= len(args)


class Mod(_Ufunc):
    op = "Mod"

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        (np.fmod if layer.attrs["fmod"] else np.mod)(args[0], args[1], out=outs[0], casting="unsafe")


class Where(_Ufunc):
    op = "Where"

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        np.copyto(outs[0], args[2], casting="unsafe")
        np.copyto(outs[0], np.broadcast_to(args[1], outs[0].shape), where=np.broadcast_to(args[0], outs[0].shape),
                  casting="unsafe")


def _nbytes(shape, dtype):
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _temp(state, shape, dtype):
    """An array of ``shape`` in the routine's workspace (a new one for a run outside an executor)."""
    ws, need = state.get("workspace"), _nbytes(shape, dtype)
    if ws is None:
        ws = state["workspace"] = np.empty(need, np.uint8)
    elif ws.nbytes < need:
        raise ValueError(f"a workspace of {ws.nbytes} bytes; this input needs {need}")
    return ws[:need].view(dtype).reshape(shape)


# -- activations that need one scratch buffer -------------------------------------------------
class Activation(_Ufunc):
    op = ("Elu", "Selu", "Softsign", "Mish")   # GELU, Erf: eltwise's vectorised routine

    @classmethod
    def applies(cls, layer, specs):
        return specs[0].dtype in ("float32", "float64")

    @classmethod
    def prepare(cls, layer):
        return {}

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        return _nbytes(layer.out_specs[0].shape, layer.out_specs[0].dtype)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        s = _temp(state, y.shape, y.dtype)
        a = layer.attrs
        if layer.op in ("Elu", "Selu"):
            np.minimum(x, 0, out=y)
            np.expm1(y, out=y)
            y *= a["alpha"]
            np.maximum(x, 0, out=s)
            y += s
            if layer.op == "Selu":
                y *= a["gamma"]
        elif layer.op == "Softsign":
            np.absolute(x, out=y)
            y += 1
            np.divide(x, y, out=y)
        else:
            np.logaddexp(np.zeros((), x.dtype), x, out=y)
            np.tanh(y, out=y)
            y *= x


# -- reductions -------------------------------------------------------------------------------
REDUCE = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min,
          "ReduceProd": np.prod}


class Reduce(_Ufunc):
    op = tuple(REDUCE) + ("ReduceL2", "ReduceSumSquare")

    @classmethod
    def prepare(cls, layer):
        return {}

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        # the squares, summed next
        return _nbytes(specs[0].shape, specs[0].dtype) if layer.op in ("ReduceL2", "ReduceSumSquare") else 0

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        axes = _Reduce._axes(layer, x.ndim)
        if not axes:
            if layer.op == "ReduceL2":
                np.absolute(x, out=y)
            elif layer.op == "ReduceSumSquare":
                np.multiply(x, x, out=y)
            else:
                np.copyto(y, x)
            return
        keep = np.reshape(y, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
        if layer.op in REDUCE:
            REDUCE[layer.op](x, axis=axes, keepdims=True, out=keep)
            return
        sq = _temp(state, x.shape, x.dtype)
        np.multiply(x, x, out=sq)
        np.sum(sq, axis=axes, keepdims=True, out=keep)
        if layer.op == "ReduceL2":
            np.sqrt(keep, out=keep)


class ArgReduce(_Ufunc):
    op = ("ArgMax", "ArgMin")

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x = args[0]
        axis = layer.attrs["axis"] % x.ndim
        flat = outs[0].reshape(x.shape[:axis] + x.shape[axis + 1:])
        (np.argmax if layer.op == "ArgMax" else np.argmin)(x, axis=axis, out=flat)


# -- data movement ----------------------------------------------------------------------------
class Gather(_Ufunc):
    op = "Gather"

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        data, idx = args
        axis = layer.attrs["axis"] % data.ndim
        idx = np.asarray(idx, np.int64)
        if np.any((idx < -data.shape[axis]) | (idx >= data.shape[axis])):
            GatherOp.compute(layer, args)   # raises the reference's error naming the layer
        np.take(data, idx, axis=axis, out=outs[0], mode="wrap")


class Expand(_Ufunc):
    op = ("Expand", "CastLike")

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        np.copyto(outs[0], np.broadcast_to(args[0], outs[0].shape) if layer.op == "Expand" else args[0],
                  casting="unsafe")


class Tile(_Ufunc):
    op = "Tile"

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, reps = args[0], layer.attrs["repeats"]
        # out viewed as (r0, d0, r1, d1, ...) is x broadcast along the r axes.
        view = outs[0].reshape([v for r, d in zip(reps, x.shape) for v in (r, d)])
        np.copyto(view, x.reshape([v for d in x.shape for v in (1, d)]))


class DepthSpace(_Ufunc):
    op = ("DepthToSpace", "SpaceToDepth")

    @classmethod
    def applies(cls, layer, specs):
        return len(specs[0].shape) == 4

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        n, c, h, w = x.shape
        b = layer.attrs["blocksize"]
        if layer.op == "SpaceToDepth":
            np.copyto(y.reshape(n, b, b, c, h // b, w // b), x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4))
        elif layer.attrs["mode"] == "DCR":
            np.copyto(y.reshape(n, c // (b * b), h, b, w, b), x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2))
        else:
            np.copyto(y.reshape(n, c // (b * b), h, b, w, b), x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3))


# -- normalisations ---------------------------------------------------------------------------
class Normalization(_Ufunc):
    op = ("BatchNormalization", "InstanceNormalization", "LayerNormalization")

    @classmethod
    def applies(cls, layer, specs):
        consts = {"BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "LayerNormalization": (1,)}
        return specs[0].dtype in ("float32", "float64") and all(i in layer.consts for i in consts[layer.op])

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        # the squared deviations, averaged next
        out = layer.out_specs[0]
        return 0 if layer.op == "BatchNormalization" else _nbytes(out.shape, out.dtype)

    @classmethod
    def prepare(cls, layer):
        x_shape, dtype = layer.out_specs[0].shape, layer.out_specs[0].dtype
        cs = (1, -1) + (1,) * (len(x_shape) - 2)
        if layer.op == "BatchNormalization":
            from ..ir.ops.normalization import BatchNormalization as BN
            s, t = BN.scale_shift(*(layer.consts[i] for i in (1, 2, 3, 4)), layer.attrs["epsilon"])
            return {"scale": s.astype(dtype).reshape(cs), "shift": t.astype(dtype).reshape(cs)}
        if layer.op == "InstanceNormalization":
            axes = tuple(range(2, len(x_shape)))
            scale, bias = layer.consts[1].reshape(cs), layer.consts[2].reshape(cs)
        else:
            axes = tuple(range(layer.attrs["axis"] % len(x_shape), len(x_shape)))
            scale, bias = layer.consts[1], layer.consts.get(2)
        reduced = tuple(1 if i in axes else d for i, d in enumerate(x_shape))
        return {"axes": axes, "scale": scale, "bias": bias, "stat": np.empty(reduced, dtype)}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        if layer.op == "BatchNormalization":
            np.multiply(x, state["scale"], out=y)
            y += state["shift"]
            return
        axes, stat = state["axes"], state["stat"]
        s = _temp(state, x.shape, x.dtype)
        np.mean(x, axis=axes, keepdims=True, out=stat)
        np.subtract(x, stat, out=y)
        np.multiply(y, y, out=s)
        np.mean(s, axis=axes, keepdims=True, out=stat)
        stat += layer.attrs["epsilon"]
        np.sqrt(stat, out=stat)
        y /= stat
        y *= state["scale"]
        if state["bias"] is not None:
            y += state["bias"]
