"""qint8 elementwise layers and joins, so that a network stays in qint8 between its convolutions.

- ``cpu:qint8:{nchw,nhwc}/table``: any elementwise layer of one uint8 tensor (an activation, a
  unary function, a binary op with a scalar constant, a chain of such): 256 inputs, so a table
  of 256 results, computed at prepare by the op's own NumPy reference on the dequantized
  integers and requantized to the output's parameters (``table_f32``: dequantized, a fused
  dequantize).  Exact to the reference's rounding of each of the 256 values.
- ``cpu:qint8:{nchw,nhwc}/direct``: Add, Sub and Mul of two uint8 tensors with their own
  parameters, one of them broadcast or not, computed in float32 and requantized (``_f32``:
  float32 out), with the layer's fused activation.
- ``cpu:qint8:{nchw,nhwc}/table`` Concat: each part requantized to the output's parameters by a
  table of its own, copied where it has them already (``table_f32``: dequantized).

Every tensor keeps the one set of parameters calibration gave it; the change of scale a join
needs (a requantize) happens inside these routines, which is also where it costs least.
"""
from __future__ import annotations

import numpy as np

from ..ir import ops
from ..ir.graph import NCHW, NHWC
from ..runtime import cpu
from .qint8 import QRoutine, activation, out_format, params
from .tensor_ops import _physical_axis

#: Ops whose layer is elementwise in its one tensor input (its other inputs constants): a table
#: computes it on uint8 values.
TABLE_OPS = ("Relu", "Sigmoid", "HardSwish", "Tanh", "Softplus", "Mish", "Silu", "LeakyRelu", "Elu", "Selu",
             "HardSigmoid", "Gelu", "Clip", "PRelu", "Sqrt", "Exp", "Log", "Neg", "Abs", "Floor", "Ceil", "Round",
             "Sin", "Cos", "Erf", "Sign", "Reciprocal", "Add", "Sub", "Mul", "Div", "Pow", "EltwiseChain")
BINARY_OPS = ("Add", "Sub", "Mul")


def _kernels():
    return cpu.best_module("eltwise_q8")


def quantize_values(y, scale, zero):
    """Float values ``y`` as uint8 of ``(scale, zero)``: ties to even, saturated, a NaN to 0
    (the low end, as the kernels' epilogues put it)."""
    q = np.rint(np.asarray(y, np.float64) / scale) + zero
    return np.clip(np.nan_to_num(q, nan=0.0), 0, 255).astype(np.uint8)


def _to_physical(shape, layout):
    return (shape[0], shape[2], shape[3], shape[1]) if layout == NHWC else tuple(shape)


class _ElementwiseQ8(QRoutine, register=False):
    """Routines that see their tensors as flat arrays of elements: in either layout."""

    out_float = False
    priority = 10

    @classmethod
    def output_formats(cls, layer):
        return [out_format(cls.out_float, cls.layout)]

    @classmethod
    def _rank_ok(cls, specs, layer):
        return cls.layout == NCHW or all(len(s.shape) == 4 for s in list(specs) + list(layer.out_specs))


class _Bound:
    """A routine whose kernel call is bound to its arrays once (:meth:`_bound`), reading every
    input in uint8 (and writing its output so, unless ``out_float``)."""

    @classmethod
    def quant_tensors(cls, layer):
        return tuple(layer.inputs) + (() if cls.out_float else (layer.outputs[0],))

    @classmethod
    def _bound(cls, layer, state, args, outs):
        """The kernel call on these arrays, checked: a callable of ``num_threads``."""
        raise NotImplementedError

    @classmethod
    def bind(cls, layer, state, args, outs):
        return cls._bound(layer, state, args, outs)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._bound(layer, state, args, outs)(num_threads)


def _variants(base, algo):
    """Register ``base`` in both layouts, writing uint8 (``algo``) and float32 (``algo_f32``)."""
    for layout in (NCHW, NHWC):
        for out_float in (False, True):
            name = f"{base.__name__.strip('_')}{layout.capitalize()}{'F32' if out_float else ''}"
            globals()[name] = type(name, (base,), {"layout": layout, "out_float": out_float, "__module__": __name__,
                                                   "algo": algo + ("_f32" if out_float else "")})


class _TableQ8(_ElementwiseQ8, register=False):
    op = TABLE_OPS
    algo = "table"

    @staticmethod
    def _variable(layer):
        """Index of the layer's one tensor input (its others constants or absent), or None."""
        live = [i for i, t in enumerate(layer.inputs) if t and i not in layer.consts]
        return live[0] if len(live) == 1 else None

    @classmethod
    def applies(cls, layer, specs):
        i = cls._variable(layer)
        if i is None or not cls.available() or len(layer.outputs) != 1 or layer.attrs.get("post_affine") is not None:
            return False
        x, out = specs[i], layer.out_specs[0]
        return (x is not None and x.dtype == out.dtype == "float32" and tuple(x.shape) == tuple(out.shape)
                and all(np.size(v) == 1 for v in layer.consts.values()) and not layer.attrs.get("upsample")
                and cls._rank_ok([x], layer))

    @classmethod
    def quant_tensors(cls, layer):
        x = layer.inputs[cls._variable(layer)]
        return (x,) if cls.out_float else (x, layer.outputs[0])

    @classmethod
    def prepare(cls, layer, quant=None):
        who = f"{cls.descriptor} on {layer.name}"
        i = cls._variable(layer)
        sx, zx = params(quant, layer.inputs[i], who)
        values = ((np.arange(256, dtype=np.float32) - np.float32(zx)) * np.float32(sx)).astype(np.float32)
        args = [None if not t else layer.consts.get(k, values if k == i else None) for k, t in enumerate(layer.inputs)]
        with np.errstate(all="ignore"):   # a Log of a negative value is its NaN, as in float32
            y = np.asarray(ops.OPS[layer.op].compute(layer, args)[0], np.float32).ravel()
        if y.size != 256:
            raise ValueError(f"{who}: the op's reference gave {y.size} values for 256 inputs")
        if cls.out_float:
            return {"table": np.ascontiguousarray(y)}
        so, zo = params(quant, layer.outputs[0], who)
        return {"table": quantize_values(y, so, zo)}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x = args[cls._variable(layer)]
        _kernels().lut(x.reshape(1, -1), outs[0].reshape(1, -1), state["table"], num_threads)


_variants(_TableQ8, "table")


def collapse(out_shape, a_shape, b_shape):
    """``[(size, a stride, b stride)]`` in elements, at most three, of C-contiguous ``a`` and
    ``b`` broadcast to ``out_shape`` (NumPy's rules), adjacent axes merged where both operands
    step through them as one; None where more than three remain."""
    rank = len(out_shape)
    dims = []
    strides = []
    for shape in (a_shape, b_shape):
        shape = (1,) * (rank - len(shape)) + tuple(shape)
        s, step = [0] * rank, 1
        for k in range(rank - 1, -1, -1):
            s[k] = 0 if shape[k] == 1 else step
            step *= shape[k]
        strides.append(s)
    for k in range(rank):
        n = int(out_shape[k])
        if n == 1:
            continue
        if dims and dims[-1][1] == n * strides[0][k] and dims[-1][2] == n * strides[1][k]:
            dims[-1] = (dims[-1][0] * n, strides[0][k], strides[1][k])
        else:
            dims.append((n, strides[0][k], strides[1][k]))
    dims = dims or [(1, 1, 1)]
    return dims if len(dims) <= 3 and dims[-1][1] in (0, 1) and dims[-1][2] in (0, 1) else None


class _BinaryQ8(_Bound, _ElementwiseQ8, register=False):
    op = BINARY_OPS
    algo = "direct"

    @classmethod
    def applies(cls, layer, specs):
        if (not cls.available() or len(specs) != 2 or layer.consts or len(layer.outputs) != 1
                or any(s is None or s.dtype != "float32" for s in specs) or layer.out_specs[0].dtype != "float32"):
            return False
        out = layer.out_specs[0].shape
        if len(out) == 0 or not cls._rank_ok(specs, layer):
            return False
        shapes = [_to_physical(s.shape, cls.layout) for s in specs]
        return (activation(layer, out[1] if len(out) > 1 else 1) is not None
                and collapse(_to_physical(out, cls.layout), *shapes) is not None)


    @classmethod
    def prepare(cls, layer, quant=None):
        who = f"{cls.descriptor} on {layer.name}"
        (sa, za), (sb, zb) = (params(quant, t, who) for t in layer.inputs)
        so, zo = (1.0, 0) if cls.out_float else params(quant, layer.outputs[0], who)
        out = layer.out_specs[0].shape
        (lo, hi), computed = activation(layer, out[1] if len(out) > 1 else 1)
        f = np.float32
        if layer.op == "Mul":
            ra, rb = f(sa) * f(sb) / f(so), 0.0
        else:   # in float32 step by step, as ONNX Runtime's QLinearAdd forms its ratios
            ra, rb = f(sa) / f(so), (1 if layer.op == "Add" else -1) * (f(sb) / f(so))
        return {"op": "mul" if layer.op == "Mul" else "add", "ra": float(ra), "rb": float(rb), "za": za, "zb": zb,
                "zo": zo, "lo": None if lo is None else lo / so, "hi": None if hi is None else hi / so,
                "act": None if computed is None else (*computed[:3], so)}

    @classmethod
    def _bound(cls, layer, state, args, outs):
        a, b = args
        out = outs[0]
        dims = collapse(out.shape, a.shape, b.shape)
        return _kernels().Binary(a, b, out, dims, state["op"], state["ra"], state["rb"], state["za"], state["zb"],
                                 state["zo"], state["lo"], state["hi"], state["act"])


_variants(_BinaryQ8, "direct")


class _ConcatQ8(_Bound, _ElementwiseQ8, register=False):
    op = "Concat"
    algo = "table"

    @classmethod
    def applies(cls, layer, specs):
        return (cls.available() and not layer.consts and len(specs) > 0 and all(t for t in layer.inputs)
                and all(s is not None and s.dtype == "float32" for s in specs)
                and layer.out_specs[0].dtype == "float32" and layer.out_specs[0].size > 0 and cls._rank_ok(specs, layer))


    @classmethod
    def prepare(cls, layer, quant=None):
        """Each part's table into the output's integers (None: it has them already)."""
        who = f"{cls.descriptor} on {layer.name}"
        out = None if cls.out_float else params(quant, layer.outputs[0], who)
        tables = []
        q = np.arange(256, dtype=np.float64)
        for t in layer.inputs:
            s, z = params(quant, t, who)
            real = ((q - z) * np.float32(s)).astype(np.float32)
            if out is None:
                tables.append(real)
            else:
                tables.append(None if (s, z) == out else quantize_values(real, *out))
        return {"tables": tables}

    @classmethod
    def _bound(cls, layer, state, args, outs):
        whole = outs[0]
        axis = _physical_axis(layer.attrs["axis"], whole.ndim, cls.layout)
        outer = int(np.prod(whole.shape[:axis], dtype=np.int64))
        inner = int(np.prod(whole.shape[axis + 1:], dtype=np.int64))
        rows = whole.reshape(outer, -1)
        k = _kernels()
        calls, start = [], 0
        for part, table in zip(args, state["tables"]):
            width = part.shape[axis] * inner
            src, dst = part.reshape(outer, width), rows[:, start:start + width]
            if table is None:
                calls.append(lambda nt, src=src, dst=dst: np.copyto(dst, src))
            else:
                calls.append(lambda nt, src=src, dst=dst, table=table: k.lut(src, dst, table, nt))
            start += width

        def run(num_threads):
            for call in calls:
                call(num_threads)
        return run


_variants(_ConcatQ8, "table")
