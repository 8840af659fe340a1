"""``cpu:float32:{nchw,nhwc}/direct``: elementwise layers.

- Add/Sub/Mul/Div with NumPy broadcasting and a fused activation.  Logical broadcasting is turned
  into per-operand element strides over the output's *physical* loop order (for NHWC: n, h, w, c),
  coalesced to at most four loops, so the same kernel serves a same-shape add (one flat loop), a
  per-channel or per-(n, c) scale (squeeze-excite) and a scalar, in either layout.  Broadcasts
  that need more than four loops stay with the reference.
- Activation layers (Relu, Clip, Sigmoid, HardSigmoid, HardSwish, LeakyRelu, Tanh, per-channel
  PRelu, SiLU, GELU both forms) and Erf, Exp, and ChannelAffine (``x * scale[c] + shift[c]``,
  fused activation): one row kernel whose channel is the row (NCHW) or the column (NHWC); the
  transcendental functions are the vectorised polynomials of ``kernels_pyx/wb_vmath.h``.
- Sqrt, Pow (scalar constant exponent) and Cast: NumPy ufuncs writing into the output buffer
  (single-threaded, but without the reference's temporaries).

Activations are layout-agnostic; the NHWC variants apply to 4-D tensors only (elsewhere they
would duplicate the NCHW ones).
"""
from types import SimpleNamespace

import numpy as np

from ..runtime import cpu
from ..ir.graph import NCHW, NHWC
from . import Routine
from .epilogue import CODES, encode
from .loops import broadcast_loops, periodic_rows

PRELU = CODES["PRelu"]


# -- helpers shared by the routine modules of this family -----------------------------------------
#: The fastest built variant of a kernel module (the routine modules import it from here).
kernels = cpu.best_module


def memo(state, key, build):
    """``state[key]``, built by ``build()`` on first use (per-shape plans: prepare sees no input shapes)."""
    value = state.get(key)
    if value is None:
        value = state[key] = build()
    return value


def all_float32(*spec_lists):
    return all(s is None or s.dtype == "float32" for specs in spec_lists for s in specs)


def channel_geometry(shape, layout):
    """``(rows, cols, channel_is_row)`` of a tensor stored in ``layout`` whose channel is axis 1."""
    size = int(np.prod(shape, dtype=np.int64))
    if layout == NHWC and len(shape) == 4:
        return size // shape[1], shape[1], False
    if len(shape) >= 3:
        return shape[0] * shape[1], size // max(shape[0] * shape[1], 1), True
    if len(shape) == 2:
        return shape[0], shape[1], False
    return 1, size, True


def as_stored(array, nhwc):
    """A contiguous float32 copy of a constant, transposed to (N, H, W, C) when ``nhwc`` and 4-D."""
    a = np.asarray(array, np.float32)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1) if nhwc and a.ndim == 4 else a)


# -- broadcasting binary ops -----------------------------------------------------------------------
def _binary_plan(layer, specs, layout):
    out = layer.out_specs[0].shape
    nhwc = layout == NHWC
    operands = [(s.shape, nhwc and len(s.shape) == 4) for s in specs]
    return broadcast_loops(out, operands, nhwc)


def fused_activation(layer, shape, extended=False):
    """The fused activation as (code, p0, p1, per-channel slope or None), or None if unsupported.

    ``extended``: the caller runs this module's kernels, which also know SiLU and GELU.
    """
    if layer.attrs.get("activation") == "PRelu":
        slope = np.asarray(layer.attrs["activation_params"]["slope"], np.float32)
        if slope.size and np.all(slope == slope.flat[0]):
            return CODES["LeakyRelu"], float(slope.flat[0]), 0.0, None   # a uniform slope is a LeakyRelu
        if len(shape) < 2:
            return None
    ep = (encode(layer, shape[1], rank=len(shape), extended=extended) if len(shape) >= 2
          else encode(layer, 1, rank=1, extended=extended))
    if ep is None:
        return None if layer.attrs.get("activation") else (0, 0.0, 0.0, None)
    if ep.code == PRELU:
        return ep.code, 0.0, 0.0, ep.slope
    return ep.code, ep.p0, ep.p1, None


class _Binary(Routine, register=False):
    uses_blas = False
    op = ("Add", "Sub", "Mul", "Div")
    algo = "direct"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        if len(specs) != 2 or any(s is None for s in specs) or not all_float32(specs, layer.out_specs):
            return False
        out = layer.out_specs[0].shape
        if cls.layout == NHWC and len(out) != 4:
            return False
        return (_binary_plan(layer, specs, cls.layout) is not None
                and fused_activation(layer, out, extended=True) is not None)

    @classmethod
    def prepare(cls, layer):
        consts = {i: as_stored(v, cls.layout == NHWC) for i, v in layer.consts.items()}
        return {"consts": consts, "epilogue": fused_activation(layer, layer.out_specs[0].shape, extended=True)}

    @classmethod
    def _operands(cls, layer, state, args, out=None):
        """``(a, b, dims, a_strides, b_strides)`` for the kernel, the plan cached per shapes; where
        an array is a channel slice of a wider buffer (:attr:`strided_in`/:attr:`strided_out`),
        one loop per axis on its real strides."""
        a, b = (state["consts"].get(i, x) for i, x in enumerate(args))
        nhwc = cls.layout == NHWC
        # Physical shapes tell which operands are stored NHWC: 4-D ones, constants transposed in prepare.
        logical = [(s[0], s[3], s[1], s[2]) if nhwc and len(s) == 4 else s for s in (a.shape, b.shape)]
        if all(v.flags.c_contiguous for v in (a, b) + (() if out is None else (out,))):
            key = (a.shape, b.shape)
            plan = state.get(key)
            if plan is None:
                plan = state[key] = _binary_plan(layer, [SimpleNamespace(shape=s) for s in logical], cls.layout)
        else:
            def strides(v):
                st = [x // v.itemsize for x in v.strides]
                return [st[0], st[3], st[1], st[2]] if nhwc and v.ndim == 4 else st
            plan = broadcast_loops(layer.out_specs[0].shape, [(s, nhwc and len(s) == 4, strides(v))
                                                              for s, v in zip(logical, (a, b))], nhwc, coalesce=False)
        dims, (sa, sb) = plan
        return a, b, dims, sa, sb

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        a, b, dims, sa, sb = cls._operands(layer, state, args, outs[0])
        code, p0, p1, slope = state["epilogue"]
        out = outs[0]
        k = kernels("eltwise")
        if slope is not None and not out.flags.c_contiguous:   # a Concat's part: PRelu's rows want it whole
            whole = np.empty(out.shape, np.float32)
            cls.run(layer, state, args, [whole], num_threads)
            np.copyto(out, whole)
            return
        chain = cls._periodic(layer, state, a, b, out, dims, sa, sb)
        if chain is not None:
            chain(num_threads)
            return
        k.binary(a, b, out, dims, sa, sb, layer.op, 0 if slope is not None else code, p0, p1, num_threads)
        if slope is not None:
            rows, cols, by_row = channel_geometry(layer.out_specs[0].shape, cls.layout)
            k.channel_rows(out, out, rows, cols, by_row, act=code, slope=slope, num_threads=num_threads)

    @classmethod
    def _periodic(cls, layer, state, a, b, out, dims, sa, sb):
        """The op as a one-step chain (``eltwise_chain.pyx``) whose rows are whole planes, where
        the innermost loop is one NHWC pixel of a per-channel operand (:func:`periodic_rows`);
        else None."""
        code, p0, p1, slope = state["epilogue"]
        if slope is not None or not all(v.flags.c_contiguous for v in (a, b, out)):
            return None
        dims, strides, rows = periodic_rows(dims, [sa, sb])
        if rows is None:
            return None
        return kernels("eltwise_chain").Chain([a, b], strides, out, dims, [(layer.op, 0, 1, code, p0, p1)], rows)

    @classmethod
    def bind(cls, layer, state, args, outs):
        code, p0, p1, slope = state["epilogue"]
        if slope is not None:
            return None
        a, b, dims, sa, sb = cls._operands(layer, state, args, outs[0])
        return (cls._periodic(layer, state, a, b, outs[0], dims, sa, sb)
                or kernels("eltwise").Binary(a, b, outs[0], dims, sa, sb, layer.op, code, p0, p1))


class BinaryNchw(_Binary):
    layout = NCHW


class BinaryNhwc(_Binary):
    layout = NHWC
    strided_in = strided_out = True   # a CSP bottleneck's shortcut Add writes its Concat part


# -- activation layers and ChannelAffine ----------------------------------------------------------
ACTIVATION_OPS = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "PRelu", "Silu", "Gelu",
                  "Erf", "Exp")
#: Unary maps that are not activations anywhere else: their eltwise.pyx codes.
UNARY_CODES = {"Erf": 12, "Exp": 13}


def _activation_code(layer, shape):
    """The standalone activation of ``layer`` as (code, p0, p1, slope), or None."""
    if layer.op in UNARY_CODES:
        return UNARY_CODES[layer.op], 0.0, 0.0, None
    params = dict(layer.attrs)
    if layer.op == "PRelu":
        if 1 not in layer.consts:
            return None
        params = {"slope": layer.consts[1]}
    fake = SimpleNamespace(attrs={"activation": layer.op, "activation_params": params})
    return fused_activation(fake, shape, extended=True)


class _Rows(Routine, register=False):
    uses_blas = False
    algo = "direct"
    priority = 10

    @classmethod
    def _shape_ok(cls, specs, layer):
        shape = specs[0].shape
        return (all_float32(specs, layer.out_specs) and (len(shape) == 4 or cls.layout == NCHW)
                and int(np.prod(shape, dtype=np.int64)) > 0)


class _Activation(_Rows, register=False):
    op = ACTIVATION_OPS

    @classmethod
    def applies(cls, layer, specs):
        return cls._shape_ok(specs, layer) and _activation_code(layer, specs[0].shape) is not None

    @classmethod
    def prepare(cls, layer):
        return _activation_code(layer, layer.out_specs[0].shape)

    @classmethod
    def _geometry(cls, layer, state, x):
        if state[3] is None:
            return 1, x.size, True
        return channel_geometry(layer.out_specs[0].shape, cls.layout)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        code, p0, p1, slope = state
        rows, cols, by_row = cls._geometry(layer, state, args[0])
        kernels("eltwise").channel_rows(args[0], outs[0], rows, cols, by_row, act=code, p0=p0, p1=p1, slope=slope,
                                        num_threads=num_threads)

    @classmethod
    def bind(cls, layer, state, args, outs):
        code, p0, p1, slope = state
        rows, cols, by_row = cls._geometry(layer, state, args[0])
        return kernels("eltwise").ChannelRows(args[0], outs[0], rows, cols, by_row, act=code, p0=p0, p1=p1,
                                              slope=slope)


class ActivationNchw(_Activation):
    layout = NCHW


class ActivationNhwc(_Activation):
    layout = NHWC


class _ChannelAffine(_Rows, register=False):
    op = "ChannelAffine"

    @classmethod
    def applies(cls, layer, specs):
        shape = specs[0].shape
        return (len(shape) >= 2 and cls._shape_ok(specs, layer) and 1 in layer.consts and 2 in layer.consts
                and fused_activation(layer, shape, extended=True) is not None)

    @classmethod
    def prepare(cls, layer):
        return (as_stored(layer.consts[1], False), as_stored(layer.consts[2], False),
                fused_activation(layer, layer.out_specs[0].shape, extended=True))

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        scale, shift, (code, p0, p1, slope) = state
        rows, cols, by_row = channel_geometry(layer.out_specs[0].shape, cls.layout)
        kernels("eltwise").channel_rows(args[0], outs[0], rows, cols, by_row, scale, shift, code, p0, p1, slope,
                                        num_threads)

    @classmethod
    def bind(cls, layer, state, args, outs):
        scale, shift, (code, p0, p1, slope) = state
        rows, cols, by_row = channel_geometry(layer.out_specs[0].shape, cls.layout)
        return kernels("eltwise").ChannelRows(args[0], outs[0], rows, cols, by_row, scale, shift, code, p0, p1,
                                              slope)


class ChannelAffineNchw(_ChannelAffine):
    layout = NCHW


class ChannelAffineNhwc(_ChannelAffine):
    layout = NHWC


# -- simple unary math, through ufuncs with out= ----------------------------------------------------
UFUNCS = {"Sqrt": np.sqrt}


class _Ufunc(_Rows, register=False):
    op = ("Sqrt", "Pow")
    algo = "ufunc"

    @classmethod
    def applies(cls, layer, specs):
        if not cls._shape_ok(specs[:1], layer):
            return False
        # Pow: a scalar constant exponent only (no broadcasting in the physical layout to get
        # wrong), of any numeric type: the reference casts it to the base's type, as we do.
        return layer.op != "Pow" or (1 in layer.consts and np.asarray(layer.consts[1]).size == 1)

    @classmethod
    def prepare(cls, layer):
        return np.float32(np.asarray(layer.consts[1]).reshape(())) if layer.op == "Pow" else None

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        if layer.op == "Pow":
            np.power(args[0], state, out=outs[0])
        else:
            UFUNCS[layer.op](args[0], out=outs[0])


class UfuncNchw(_Ufunc):
    layout = NCHW


class UfuncNhwc(_Ufunc):
    layout = NHWC


class CastNchw(Routine):
    """Cast as a conversion into the output buffer (any dtypes; channels-first only, since the
    layout adapts are float32)."""

    uses_blas = False
    op = "Cast"
    algo = "ufunc"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        return specs[0].size > 0

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        np.copyto(outs[0], args[0], casting="unsafe")
