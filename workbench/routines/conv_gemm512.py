"""Float32 convolutions on our own AVX-512 SGEMM (``kernels_pyx/gemm512.pyx``; other kernels than
1x1 through ``conv_im2col512.pyx``).

``cpu:float32:nhwc/gemm1x1_avx512`` computes ``out(NHW, M) = x(NHW, C) @ W^T(C, M)`` with the
weights packed into the kernel's panels once, in :meth:`prepare`; ``cpu:float32:nchw/gemm1x1_avx512``
computes ``out[n](M, HW) = W(M, C) @ x[n](C, HW)``, packing each image's pixels per call.  Both
apply the fused bias/residual/activation in registers before each block of the output is stored
(ReLU, clip, leaky ReLU; other activations as a pass over each tile right after it is written).
A residual that dies at the layer is overwritten in place (:meth:`Routine.in_place_input`): the
executor passes its buffer as the output, and the product is accumulated onto it.

The environment pins OpenBLAS to its Haswell (AVX2) kernels; these routines are the
runtime-dispatched AVX-512 alternative to ``gemm1x1``, offered only where the CPU has AVX-512
and the ``gemm512_avx512`` module is built.  They never call the BLAS, so need no BLAS limit.
"""
from __future__ import annotations

import numpy as np

from ..runtime import cpu
from ..ir.graph import NCHW, NHWC
from ..ir.ops.conv import residual_after_activation
from .conv_gemm import _ConvGemm, geometry
from .epilogue import encode


def _kernels(name="gemm512"):
    """The AVX-512 build of ``name`` (gemm512, or the convolutions on its SGEMM: conv_im2col512,
    conv_shuffle512), or None where this CPU or build lacks it."""
    mod = cpu.kernel_module(name, "avx512")
    return mod if mod is not None and mod.available else None


class _Gemm512(_ConvGemm, register=False):
    uses_blas = False
    algo = "gemm1x1_avx512"
    # Same as gemm1x1: without a measurement the default stays the BLAS routine (ties break by
    # descriptor); the profiler picks this one where it is faster.
    priority = 12
    one_by_one = True

    @classmethod
    def applies(cls, layer, specs):
        if _kernels() is None or not super().applies(layer, specs):
            return False
        _, strides, _, _, group = geometry(layer)
        return tuple(strides) == (1, 1) and group == 1

    @classmethod
    def in_place_input(cls, layer):
        # the kernels accumulate onto it, which puts it under the activation
        return 3 if layer.attrs.get("residual") and not residual_after_activation(layer) else None


    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.consts[1], np.float32)
        m = w.shape[0]
        bias = layer.consts.get(2)
        return {"w": cls._pack(w.reshape(m, -1)), "epi": encode(layer, m, extended=True, post_affine=cls.post_affine),
                "bias": None if bias is None else np.ascontiguousarray(bias, np.float32)}

    @classmethod
    def _args(cls, layer, state, args, outs):
        """The kernel's arguments before ``num_threads``."""
        bias = state["bias"]
        if bias is None and len(args) > 2 and args[2] is not None:
            bias = np.ascontiguousarray(args[2], np.float32)
        residual = args[3] if layer.attrs.get("residual") else None
        epi = state["epi"]
        return args[0], state["w"], bias, residual, outs[0], epi.code, epi.p0, epi.p1, epi.slope

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._conv(*cls._args(layer, state, args, outs), num_threads, post=state["epi"].post,
                  res_post=residual_after_activation(layer), scratch=state.get("workspace"))


class NchwGemm1x1Avx512(_Gemm512):
    layout = NCHW

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        _, c, h, w = specs[0].shape
        return _kernels().conv1x1_nchw_scratch_bytes(c, h * w, num_threads)

    @staticmethod
    def _pack(w):
        return np.ascontiguousarray(w)

    @staticmethod
    def _conv(*args, post=None, res_post=False, scratch=None):
        _kernels().conv1x1_nchw(*args, res_post=res_post, scratch=scratch)


class NhwcGemm1x1Avx512(_Gemm512):
    layout = NHWC
    post_affine = True
    strided_in = strided_out = True   # the GEMM's A and C leading dimensions

    @staticmethod
    def _pack(w):
        # (M, C) read transposed: the kernel's panels of W^T (C, M).
        return _kernels().pack_b(np.ascontiguousarray(w), trans_b=True)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        return _kernels().conv1x1_scratch_bytes(num_threads)

    @staticmethod
    def _conv(*args, post=None, res_post=False, scratch=None):
        _kernels().conv1x1_nhwc(*args, post=post, res_post=res_post, scratch=scratch)

    @classmethod
    def bind(cls, layer, state, args, outs):
        return _kernels().Conv1x1Nhwc(*cls._args(layer, state, args, outs), post=state["epi"].post,
                                      res_post=residual_after_activation(layer), scratch=state.get("workspace"))


class _Im2col512(_ConvGemm, register=False):
    """Group-1 convolutions of any kernel, stride, dilation and padding: the column tile of each
    job gathered by the same im2col code as ``im2col`` (``conv_gemm.pxd``), then our SGEMM."""

    uses_blas = False
    algo = "im2col_avx512"
    priority = 11.5   # measured faster than BLAS im2col and gemm1x1; the profiler has the last word
    implicit = False

    @classmethod
    def applies(cls, layer, specs):
        if _kernels() is None or _kernels("conv_im2col512") is None or not super().applies(layer, specs):
            return False   # (a 2-D convolution from here on)
        kernel, strides, _, pads, group = geometry(layer)
        # A 1x1 stride-1 unpadded layer is gemm1x1_avx512's: the same GEMM on the input read in
        # place, where this one copies it first (and cannot add a dying residual in place).
        # Offered too, it tied in the profile and lost in the model (ResNet-50's conv3 layers).
        dominated = tuple(kernel) == (1, 1) and tuple(strides) == (1, 1) and not any(pads)
        return group == 1 and not dominated

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.consts[1], np.float32)
        m = w.shape[0]
        bias = layer.consts.get(2)
        return {"w": cls._pack(w), "epi": encode(layer, m, extended=True, post_affine=cls.post_affine),
                "geometry": geometry(layer),
                "bias": None if bias is None else np.ascontiguousarray(bias, np.float32)}

    @classmethod
    def _args(cls, layer, state, args, outs):
        """conv_im2col's arguments before ``num_threads``."""
        kernel, strides, dilations, pads, _ = state["geometry"]
        bias = state["bias"]
        if bias is None and len(args) > 2 and args[2] is not None:
            bias = np.ascontiguousarray(args[2], np.float32)
        residual = args[3] if layer.attrs.get("residual") else None
        epi = state["epi"]
        return (cls.layout == NHWC, args[0], state["w"], bias, residual, outs[0], kernel, strides, dilations, pads,
                epi.code, epi.p0, epi.p1, epi.slope)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        kh, kw = geometry(layer)[0]
        n, m, oh, ow = layer.out_specs[0].shape
        return _kernels("conv_im2col512").conv_im2col_scratch_bytes(
            cls.layout == NHWC, specs[0].shape[1] * kh * kw, m, n, oh * ow, cls.implicit, num_threads)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        _kernels("conv_im2col512").conv_im2col(
            *cls._args(layer, state, args, outs), num_threads, cls.implicit, post=state["epi"].post,
            res_post=residual_after_activation(layer), scratch=state.get("workspace"))

    @classmethod
    def bind(cls, layer, state, args, outs):
        return _kernels("conv_im2col512").ConvIm2col(
            *cls._args(layer, state, args, outs), implicit=cls.implicit, post=state["epi"].post,
            res_post=residual_after_activation(layer), scratch=state.get("workspace"))


class NchwIm2colAvx512(_Im2col512):
    layout = NCHW

    @staticmethod
    def _pack(w):
        return np.ascontiguousarray(w.reshape(w.shape[0], -1))


class NhwcIm2colAvx512(_Im2col512):
    layout = NHWC
    post_affine = True
    strided_in = strided_out = True   # the gather's pixel stride; C's leading dimension

    @classmethod
    def reads_strided(cls, layer, index):
        return cls.strided_in and index == 0   # the residual is read as a contiguous block

    @staticmethod
    def _pack(w):
        # GEMM depth in the NHWC gather's order (ki, kj, channel); (M, K) read transposed.
        m = w.shape[0]
        return _kernels().pack_b(np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(m, -1)), trans_b=True)


class NhwcImplicitAvx512(NhwcIm2colAvx512):
    """Implicit GEMM: the same weights and SGEMM as ``im2col_avx512``, but the output pixels whose
    taps lie inside the input are multiplied straight from the input (a kernel row's KW x C taps
    are one contiguous run of NHWC memory), with no im2col buffer to write and read back; only
    the padded border is gathered.  Horizontal dilation 1 only.

    A job is a span of output pixels (and, for small outputs, a range of channels); its strips of
    12 pixels are four triples of neighbours from anywhere in the span, so they run on past the
    end of an output row (``kernels_pyx/_implicit512.pxd``).  Every strip streams all the
    weights, which pays where the weights are small next to the image; the profiler measures it
    beside im2col_avx512 and picks per layer."""

    algo = "implicit_avx512"
    priority = 11.4   # below im2col_avx512 until measured: the profiler has the last word
    implicit = True
    strided_in = False   # a kernel row's taps are read as one run of KW x C floats

    @classmethod
    def applies(cls, layer, specs):
        return super().applies(layer, specs) and tuple(geometry(layer)[2])[1] == 1
