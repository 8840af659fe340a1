"""bfloat16 convolutions on the AVX512-BF16 GEMM (``kernels_pyx/gemm_bf16.pyx``).

``cpu:bfloat16:nhwc/gemm1x1_bf16`` computes ``out(NHW, M) = x(NHW, C) @ W^T(C, M)`` with x and
out in bfloat16 and the sums in float32: VDPBF16PS does the multiply-adds of two float32 FMAs
per instruction.  The weights are rounded to bfloat16 and packed once, in :meth:`prepare`; bias,
residual (bfloat16), activation and post-activation affine are applied to the float32 sums
before the one rounding to bfloat16.  ``gemm1x1_bf16_f32out`` is the same product written in
float32: where the next layer runs in float32 the selection can leave bfloat16 there without a
cast adapt; ``_f32in`` reads a float32 image, rounded to bfloat16 as each job gathers its rows,
so it can enter bfloat16 without one, and ``_f32io`` does both: float32 tensors between layers,
bfloat16 arithmetic inside them.  A fused residual comes in the output's data type.  ``im2col_bf16`` (and its ``_f32out``) serves every other group-1 convolution: each
job gathers its rows of the im2col matrix into its thread's part of the workspace, then the same GEMM;
``implicit_bf16`` (and its three float32-edged forms) the same product reading the taps where
they lie in a zero-bordered copy of the image, no gather.  The gathered rows and the bordered
copy are each routine's declared workspace (:meth:`workspace`), placed by the memory planner.  ``depthwise_bf16``,
``depthwise_wide_bf16`` and ``depthwise_dot_bf16`` (and their ``_f32out``) take the depthwise layers.  ``winograd2_bf16`` (and its
``_f32out``/``_f32in``/``_f32io``) runs 3x3 stride-1 layers as F(2x2,3x3) Winograd with the
transform-domain products in bfloat16 (``kernels_pyx/winograd_bf16.pyx``): 2.25x fewer
multiply-adds than im2col_bf16 for 1.3-1.6x its error (:data:`WINOGRAD_ERROR`).  F(4x4,3x3) is
not offered: its transforms (entries up to 5 in B^T, 8 in A^T) amplify the rounding of V to
bfloat16 about 15-fold (4-6% of the output's peak on N(0,1) layers, against F2's 0.3-0.5%).

Offered only where the CPU has AVX512-BF16 and the ``gemm_bf16_avx512bf16`` module is built, and
only to a tuning that allows bfloat16 (``Session.tune(precisions=...)``).
"""
from __future__ import annotations

import numpy as np

from ..ir.formats import Format
from ..ir.graph import NHWC
from ..ir.ops.conv import residual_after_activation
from ..runtime import cpu
from . import Routine, bias_correction
from .conv_depthwise import depthwise_applies
from .edges import edge_forms
from .conv_gemm import _ConvGemm, geometry
from .conv_winograd import transform_weights
from .epilogue import encode


REQUIRES = ("needs a CPU with AVX512-BF16 (cpu flag avx512_bf16) and the gemm_bf16_avx512bf16 build "
            "(python setup.py build_ext --inplace)")
REQUIRES_AMX = ("needs a CPU with AMX (cpu flags amx_tile, amx_bf16), Linux 5.16 or later, and the gemm_bf16_amx "
                "build (python setup.py build_ext --inplace)")


def _kernels(name="gemm_bf16", isa="avx512bf16"):
    mod = cpu.kernel_module(name, isa)
    return mod if mod is not None and mod.available else None


#: Bound on max |ours - reference| / max |reference| of winograd2_bf16 on 3x3 layers of
#: unit-sized outputs (``tests/routines/test_conv_winograd_bf16.py``; the kernel test checks an
#: elementwise bound instead).  Measured 2.6e-3 to 4.6e-3 on N(0,1) layers of 64 to 512 channels,
#: 1.3-1.6x im2col_bf16's on the same layers; narrow layers, whose outputs sum few products,
#: can show up to sqrt(error_weight) times a direct routine's.
WINOGRAD_ERROR = 6e-3


class _Bf16:
    """What every routine here shares: its data type and layout, and the build it needs."""
    dtype = "bfloat16"
    layout = NHWC
    uses_blas = False
    requires = REQUIRES
    isa = "avx512bf16"   # the build of gemm_bf16 whose GEMM the routine runs

    @classmethod
    def available(cls):
        return _kernels() is not None and cls.gemm() is not None

    @classmethod
    def gemm(cls):
        """The gemm_bf16 module of this routine's build, or None where it cannot run."""
        return _kernels("gemm_bf16", cls.isa)


class _Bf16Conv(_Bf16, _ConvGemm, register=False):
    post_affine = True
    strided_out = True   # C's (Winograd: the output transform's) pixel stride: an NHWC Concat part in place
    #: The data type the image arrives in: bfloat16, or float32 rounded as each job gathers it.
    in_dtype = "bfloat16"

    @classmethod
    def input_formats(cls, layer, specs):
        # the image in in_dtype; a fused residual in the output's data type (it has its shape)
        formats = super().input_formats(layer, specs)
        out = cls.output_formats(layer)[0].dtype
        return [f if f is None or i in layer.consts else Format(out if i == 3 else cls.in_dtype, f.layout)
                for i, f in enumerate(formats)]

    @classmethod
    def applies(cls, layer, specs):
        mod = cls.gemm()
        if mod is None or not super().applies(layer, specs) or geometry(layer)[4] != 1:
            return False
        epi = encode(layer, layer.out_specs[0].shape[1], extended=True, post_affine=True)
        return epi.code != 7 and mod.handles(epi.code)

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.consts[1], np.float32)
        m = w.shape[0]
        bias = bias_correction.conv(layer, w, layer.consts.get(2))
        # GEMM depth in the gather's order: (kernel row, kernel column, channel).
        return {"w": cls.gemm().pack(np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(m, -1))),
                "epi": encode(layer, m, extended=True, post_affine=True), "geometry": geometry(layer),
                "bias": None if bias is None else np.ascontiguousarray(bias, np.float32)}

    @classmethod
    def _args(cls, layer, state, args, outs):
        """The kernel's arguments before ``num_threads``."""
        bias = state["bias"]
        if bias is None and len(args) > 2 and args[2] is not None:
            bias = np.ascontiguousarray(args[2], np.float32)
        epi = state["epi"]
        return (args[0], state["w"], outs[0], state["geometry"], bias,
                args[3] if layer.attrs.get("residual") else None, epi.code, epi.p0, epi.p1, epi.post,
                residual_after_activation(layer))

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._conv(*cls._args(layer, state, args, outs), num_threads, scratch=state.get("workspace"))

    @classmethod
    def bind(cls, layer, state, args, outs):
        # checked once: a direct call's checks cost several microseconds a layer, every run
        return cls._conv(*cls._args(layer, state, args, outs), 1, bind=True, scratch=state.get("workspace"))


class NhwcGemm1x1Bf16(_Bf16Conv):
    algo = "gemm1x1_bf16"
    one_by_one = True
    priority = 12

    @classmethod
    def applies(cls, layer, specs):
        return super().applies(layer, specs) and tuple(geometry(layer)[1]) == (1, 1)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        # a float32 image's rows are rounded to bfloat16 as each job gathers them
        return cls.gemm().im2col_scratch_bytes(specs[0].shape[1], num_threads) if cls.in_dtype == "float32" else 0

    @classmethod
    def _conv(cls, x, w, out, geo, *args, bind=False, scratch=None):
        return cls.gemm().gemm(x, w, out, *args, bind=bind, scratch=scratch)


class _F32Out:
    """The same routine writing its output in float32 (and reading a fused residual so)."""

    @classmethod
    def output_formats(cls, layer):
        return [Format("float32", NHWC)]


class _F32In:
    """The same routine reading a float32 image, rounded to bfloat16 as each job gathers it."""
    in_dtype = "float32"


class NhwcIm2colBf16(_Bf16Conv):
    algo = "im2col_bf16"
    priority = 11.8

    @classmethod
    def applies(cls, layer, specs):
        if not super().applies(layer, specs):
            return False   # (a 2-D convolution from here on)
        kernel, strides, _, pads, _ = geometry(layer)
        # a 1x1 stride-1 unpadded layer is gemm1x1_bf16's: the same GEMM without the gather
        return not (tuple(kernel) == (1, 1) and tuple(strides) == (1, 1) and not any(pads))

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        kernel = geometry(layer)[0]
        return cls.gemm().im2col_scratch_bytes(kernel[0] * kernel[1] * specs[0].shape[1], num_threads)

    @classmethod
    def _conv(cls, x, w, out, geo, *args, bind=False, scratch=None):
        kernel, strides, dilations, pads, _ = geo
        return cls.gemm().conv_im2col(x, w, out, kernel, strides, dilations, pads, *args, bind=bind, scratch=scratch)


class NhwcImplicitBf16(_Bf16Conv):
    """im2col_bf16's product without the gather (``wb_implicit_bf16.h``): the image copied once
    into a zero-bordered one, each block of an output row's pixels reading its taps there.  The
    same packed weights and sums in the same order, so the same outputs bit for bit; faster where
    the gather was the cost (many taps of many channels on large maps, few output channels)."""

    algo = "implicit_bf16"
    priority = 11.81

    @classmethod
    def applies(cls, layer, specs):
        if not super().applies(layer, specs):
            return False
        # an odd channel count would split a pair of depth across two taps; 1x1 is gemm1x1's
        return specs[0].shape[1] % 2 == 0 and tuple(geometry(layer)[0]) != (1, 1)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        n, c, h, w = specs[0].shape
        kernel, strides, dilations, pads, _ = geometry(layer)
        return cls.gemm().implicit_scratch_bytes((n, h, w, c), pads, cls.in_dtype == "float32", tuple(strides),
                                                 tuple(kernel), tuple(dilations))

    @classmethod
    def _conv(cls, x, w, out, geo, *args, bind=False, scratch=None):
        kernel, strides, dilations, pads, _ = geo
        return cls.gemm().conv_implicit(x, w, out, kernel, strides, dilations, pads, *args, bind=bind, scratch=scratch)


class _Amx:
    """The same product on AMX tiles (the ``gemm_bf16_amx`` build, ``wb_gemm_amx.h``): one
    TDPBF16PS does a 16x32 by 32x16 block's multiply-adds, 256 times a VDPBF16PS's, with the same
    float32 sums and epilogue.  Its weights are packed for that build (the depth padded to whole
    tiles of 32)."""
    isa = "amx"
    requires = REQUIRES_AMX


class NhwcGemm1x1Amx(_Amx, NhwcGemm1x1Bf16):
    algo = "gemm1x1_amx"
    priority = 12.5


class NhwcIm2colAmx(_Amx, NhwcIm2colBf16):
    algo = "im2col_amx"
    priority = 12.4


class NhwcImplicitAmx(_Amx, NhwcImplicitBf16):
    """implicit_bf16 on tiles: a tile is 16 pixels of an output row, read where they lie in the
    bordered image.  With a multiple of 32 channels each tap's channels are read 32 at a time;
    with fewer or others, and no dilation across, each kernel row's taps as one run of KW x C
    words, 32 at a time and a narrower tail (``wba_runs_block``)."""
    algo = "implicit_amx"
    priority = 12.45

    @classmethod
    def applies(cls, layer, specs):
        if not super().applies(layer, specs):
            return False
        kernel, _, dilations, _, _ = geometry(layer)
        c, gemm = specs[0].shape[1], cls.gemm()
        return c % 32 == 0 or gemm is not None and gemm.reads_runs(c, kernel[1], dilations[1])


class NhwcWinograd2Bf16(_Bf16Conv):
    algo = "winograd2_bf16"
    priority = 11.85
    m = 2
    #: Each output sums, through A^T, products of V and U entries that each mix several inputs
    #: and weights: with every magnitude 1, the first-order bound of F(2x2,3x3)'s rounding is
    #: 64/9 times a direct 3x3's (the sums of |A^T| (|B^T| 1 |B|) * (|G| 1 |G^T|) |A| over 9).
    error_weight = 64 / 9

    @classmethod
    def applies(cls, layer, specs):
        if _kernels("winograd_bf16") is None or not super().applies(layer, specs):
            return False
        kernel, strides, dilations, pads, _ = geometry(layer)
        # fewer channels than a vector: the transforms cost more than the products they save
        return (tuple(kernel) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilations) == (1, 1)
                and specs[0].shape[1] >= 16)

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.consts[1], np.float32)
        bias = layer.consts.get(2)
        u = transform_weights(w, cls.m).transpose(0, 2, 1)   # ((m+2)^2, C, M)
        return {"w": _kernels("winograd_bf16").pack(np.ascontiguousarray(u)), "geometry": geometry(layer),
                "epi": encode(layer, w.shape[0], extended=True, post_affine=True),
                "bias": None if bias is None else np.ascontiguousarray(bias, np.float32), "exact": None}

    # run checks its arrays on each call: a few microseconds against layers of 100 or more
    bind = classmethod(Routine.bind.__func__)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        return 0   # V and Mo are the kernel's own (winograd_bf16._scratch says why)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, pu, out, geo, *epilogue = cls._args(layer, state, args, outs)
        nonfinite = _kernels("winograd_bf16").conv(x, pu, out, cls.m, geo[3], *epilogue, num_threads=num_threads)
        if nonfinite:
            # The transforms mix a whole patch (inf - inf is NaN): an input holding NaN or an
            # infinity is computed again on the direct routine, which keeps each output's window.
            if state["exact"] is None:
                state["exact"] = NhwcIm2colBf16.prepare(layer)
            NhwcIm2colBf16.run(layer, state["exact"], args, outs, num_threads)


class NhwcDepthwiseBf16(_Bf16, Routine):
    """Depthwise convolutions on bfloat16 images (``wb_dw_bf16.h``): the input widened as it is
    loaded, float32 weights and sums, one rounding at the store.  No fused residual or
    post-activation affine (the float32 routines keep those layers)."""

    op = "Conv"
    algo = "depthwise_bf16"
    priority = 10
    wide = False   # the kernel's form: see NhwcDepthwiseWideBf16

    @classmethod
    def applies(cls, layer, specs):
        mod = _kernels()
        if (mod is None or _kernels("depthwise_bf16") is None or not depthwise_applies(layer, specs)
                or layer.attrs.get("residual")):
            return False
        if layer.attrs.get("post_affine") is not None:
            return False
        epi = encode(layer, specs[0].shape[1], extended=True)
        return epi is not None and epi.code != 7 and mod.handles(epi.code)

    dot = False    # the VDPBF16PS form: see NhwcDepthwiseDotBf16

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.const(1), np.float32)
        b = layer.const(2) if len(layer.inputs) > 2 else None
        if cls.dot:   # the other forms multiply by the float32 weights
            b = bias_correction.conv(layer, w, b)
        k, hwc = _kernels("depthwise_bf16"), np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))   # (KH, KW, C)
        wp, bp = k.pack_depthwise_dot(hwc, b) if cls.dot else k.pack_depthwise(hwc, b, cls.wide)
        return {"w": wp, "bias": bp, "epi": encode(layer, w.shape[0], extended=True), "geometry": geometry(layer)}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        kernel, strides, dilations, pads, _ = state["geometry"]
        epi = state["epi"]
        _kernels("depthwise_bf16").conv_depthwise(args[0], state["w"], state["bias"], outs[0], kernel, strides,
                                                  dilations, pads, epi.code, epi.p0, epi.p1, num_threads, cls.wide,
                                                  state.get("workspace"), cls.dot)


class NhwcDepthwiseWideBf16(NhwcDepthwiseBf16):
    """The input rows a band of output rows reads widened to float32 once, into the thread's part
    of the workspace, and the float32 register kernel run on them (``wbd_rows_wide``): faster than the
    sliding form where each input is read by many taps (stride 1, larger images), slower where
    the widening is a larger share (stride 2, small maps).  Dilation 1 only."""

    algo = "depthwise_wide_bf16"
    wide = True
    priority = 9.95

    @classmethod
    def applies(cls, layer, specs):
        return super().applies(layer, specs) and tuple(geometry(layer)[2]) == (1, 1)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        n, c, h, w = specs[0].shape
        kernel, strides, _, pads, _ = geometry(layer)
        return _kernels("depthwise_bf16").wide_scratch_bytes((n, h, w, c), kernel, strides, pads, num_threads)


class NhwcDepthwiseDotBf16(NhwcDepthwiseBf16):
    """bfloat16 weights, two kernel rows' taps a VDPBF16PS (``wb_dw_dot_bf16.h``): an instruction
    does the multiply-adds of two float32 FMAs and needs no widening, so it runs faster than the
    float32 kernel on a float32 image (besides reading half the bytes).  Square 3x3, 5x5 and 7x7
    kernels, strides 1 and 2 across, dilation 1; the weights' rounding adds to the input's."""

    algo = "depthwise_dot_bf16"
    priority = 10.05
    dot = True

    @classmethod
    def applies(cls, layer, specs):
        if not super().applies(layer, specs):
            return False
        kernel, strides, dilations, _, _ = geometry(layer)
        return _kernels("depthwise_bf16").dot_handles(kernel, strides, dilations)


def _forms(out, inp, io):
    """The float32-edged forms at these priorities (the selection's order without a profile)."""
    return [("f32out", (_F32Out,), out), ("f32in", (_F32In,), inp), ("f32io", (_F32In, _F32Out), io)]


edge_forms(NhwcGemm1x1Bf16, globals(), _forms(11.9, 11.89, 11.88))
edge_forms(NhwcGemm1x1Amx, globals(), _forms(12.49, 12.48, 12.47))
edge_forms(NhwcIm2colAmx, globals(), _forms(12.39, 12.38, 12.37))
edge_forms(NhwcImplicitAmx, globals(), _forms(12.44, 12.43, 12.42))
edge_forms(NhwcIm2colBf16, globals(), _forms(11.7, 11.69, 11.68))
edge_forms(NhwcImplicitBf16, globals(), _forms(11.79, 11.78, 11.77))
edge_forms(NhwcWinograd2Bf16, globals(), _forms(11.84, 11.83, 11.82))
edge_forms(NhwcDepthwiseBf16, globals(), [("f32out", (_F32Out,), 9.9)])
edge_forms(NhwcDepthwiseWideBf16, globals(), [("f32out", (_F32Out,), 9.85)])
edge_forms(NhwcDepthwiseDotBf16, globals(), [("f32out", (_F32Out,), 9.95)])
