"""``cpu:float32:{nchw,nhwc}/gemm``: 2-D ConvTranspose as SGEMM + col2im (``workbench._kernels.col2im``).

Weights are packed once in :meth:`prepare` (NHWC wants them as (C, KH, KW, M/group)); the GEMM's
column buffer, one image's, is the routine's declared workspace.  Begin pads must be non-negative (the reference's slicing gives something else for
negative ones); negative end pads, ``output_padding`` and ``output_shape`` beyond the full size
come out of the output size.  1-D ConvTranspose runs channels-first as a 2-D one of height 1.  ``{nchw,nhwc}/shuffle`` serves
kernel == stride without padding (the 2x upsampling of UNet/FPN decoders); ``nhwc/shuffle_avx512``
does it on our AVX-512 GEMM.
"""
import numpy as np

from ..ir.graph import NCHW, NHWC
from . import Routine
from .conv_gemm512 import _kernels as _gemm512
from .eltwise import all_float32, fused_activation, kernels


def _geometry(attrs):
    """kernel, strides, dilations, begin pads as 2-D pairs (1-D ops get a unit height)."""
    k, s, d, p = attrs["kernel_shape"], attrs["strides"], attrs["dilations"], attrs["pads"]
    if len(k) == 1:
        return (1, k[0]), (1, s[0]), (1, d[0]), (0, p[0])
    return tuple(k), tuple(s), tuple(d), (p[0], p[1])


class _ConvTranspose(Routine, register=False):
    op = "ConvTranspose"
    algo = "gemm"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        x = specs[0].shape
        a = layer.attrs
        n = len(a["kernel_shape"])
        return (all_float32(specs, layer.out_specs) and 1 in layer.consts
                and (len(specs) < 3 or specs[2] is None or 2 in layer.consts)
                and len(x) == n + 2 and (len(x) == 4 or (cls.layout == NCHW and len(x) == 3))
                and min(a["pads"][:n]) >= 0 and not a.get("residual")
                and fused_activation(layer, layer.out_specs[0].shape) is not None)

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.consts[1], np.float32)
        if w.ndim == 3:
            w = w[:, :, None, :]
        if cls.layout == NHWC:
            w = w.transpose(0, 2, 3, 1)     # (C, Mg, KH, KW) -> (C, KH, KW, Mg)
        b = layer.consts.get(2)
        code, p0, p1, slope = fused_activation(layer, layer.out_specs[0].shape)
        return {"w": np.ascontiguousarray(w), "bias": None if b is None else np.ascontiguousarray(b, np.float32),
                "act": (code, p0, p1, slope)}

    @classmethod
    def _columns(cls, layer, specs):
        """Floats of the GEMM's columns: M * KH * KW per input pixel of one image."""
        x = specs[0].shape
        return layer.out_specs[0].shape[1] * int(np.prod(layer.attrs["kernel_shape"])) * int(np.prod(x[2:]))

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        return 4 * cls._columns(layer, specs)

    @classmethod
    def _scratch(cls, state, need):
        """``need`` floats of the workspace (a new one for a run outside an executor)."""
        ws = state.get("workspace")
        if ws is None:
            ws = state["workspace"] = np.empty(4 * need, np.uint8)
        elif ws.nbytes < 4 * need:
            raise ValueError(f"{cls.descriptor}: a workspace of {ws.nbytes} bytes; this input needs {4 * need}")
        return ws[:4 * need].view(np.float32)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        if x.ndim == 3:
            x, y = x[:, :, None, :], y[:, :, None, :]
        h, w = (x.shape[1], x.shape[2]) if cls.layout == NHWC else x.shape[2:]
        m = y.shape[3] if cls.layout == NHWC else y.shape[1]
        need = m * int(np.prod(layer.attrs["kernel_shape"])) * h * w
        kernel, strides, dilations, pads = _geometry(layer.attrs)
        code, p0, p1, slope = state["act"]
        kernels("col2im").conv_transpose(x, state["w"], y, cls._scratch(state, need), cls.layout == NHWC,
                                         layer.attrs["group"],
                                         kernel, strides, dilations, pads, state["bias"], code, p0, p1, slope,
                                         num_threads)


class _Shuffle(_ConvTranspose, register=False):
    """kernel == stride, no padding: each output pixel is one tap of one input pixel, so the
    GEMM's columns go straight to their pixels (a pixel shuffle), with no col2im accumulation and
    no zeroing; each thread runs the GEMM of its own block and shuffles it while it is in cache."""

    algo = "shuffle"
    priority = 11

    @classmethod
    def applies(cls, layer, specs):
        a = layer.attrs
        x, y = specs[0].shape, layer.out_specs[0].shape
        return (super().applies(layer, specs) and len(x) == 4 and a["group"] == 1
                and tuple(a["kernel_shape"]) == tuple(a["strides"]) and not any(a["pads"])
                and tuple(a["dilations"]) == (1, 1) and min(x) > 0
                and tuple(y[2:]) == (x[2] * a["strides"][0], x[3] * a["strides"][1]))

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        need = y.size // y.shape[0]   # M*KH*KW*H*W: one image's GEMM columns
        code, p0, p1, slope = state["act"]
        kernels("col2im").conv_transpose_shuffle(x, state["w"], y, cls._scratch(state, need), cls.layout == NHWC,
                                                 state["bias"], code, p0, p1, slope, num_threads)


class ShuffleNchw(_Shuffle):
    layout = NCHW


class ShuffleNhwc(_Shuffle):
    layout = NHWC


class ShuffleNhwcAvx512(ShuffleNhwc):
    """:class:`ShuffleNhwc` on our AVX-512 GEMM (``conv_shuffle512.conv_transpose_shuffle_nhwc``): the
    weights packed once per kernel row, one GEMM per (input row, kernel row) with bias and
    activation fused per column, written in place into its output row.  The BLAS version runs OpenBLAS from inside the
    pool's threads, on its Haswell kernels; a detector head's 24 -> 1 channel layer (N = 4 GEMM
    columns) was its worst case."""

    algo = "shuffle_avx512"
    priority = 12
    isa = "avx512"

    @classmethod
    def applies(cls, layer, specs):
        return _gemm512() is not None and _gemm512("conv_shuffle512") is not None and super().applies(layer, specs)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        kh, kw = layer.attrs["kernel_shape"]
        return _gemm512("conv_shuffle512").shuffle_scratch_bytes(specs[0].shape[3], kh, kw, layer.out_specs[0].shape[1],
                                                                 num_threads)

    @classmethod
    def prepare(cls, layer):
        state = super().prepare(layer)   # w (C, KH, KW, M)
        w = state["w"]
        code, p0, p1, slope = state["act"]
        # per GEMM column (kw, m): M's values repeated kw times
        tile = (lambda v: None if v is None else np.ascontiguousarray(np.tile(np.broadcast_to(
            np.asarray(v, np.float32).reshape(-1), (w.shape[3],)), w.shape[2])))
        state.update(packed=_gemm512("conv_shuffle512").pack(w), cols_bias=tile(state["bias"]),
                     cols_act=(code, p0, p1, tile(slope)))
        return state

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        code, p0, p1, slope = state["cols_act"]
        kh, kw = layer.attrs["kernel_shape"]
        _gemm512("conv_shuffle512").conv_transpose_shuffle_nhwc(args[0], state["packed"], outs[0], state["cols_bias"],
                                                                kh, kw, code, p0, p1, slope, num_threads,
                                                                state.get("workspace"))


class ConvTransposeNchw(_ConvTranspose):
    layout = NCHW


class ConvTransposeNhwc(_ConvTranspose):
    layout = NHWC
