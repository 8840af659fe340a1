"""A network's first convolution straight from the caller's float32 NCHW image
(``kernels_pyx/stem_conv.pyx``, ``wb_stem512.h``).

Every image model starts with a convolution of an RGB image, and for the NHWC routines that
image first needs an NCHW -> NHWC adapt (the whole input read and written once more), after
which their kernels run at a fraction of their speed on a depth of three channels a tap.
``cpu:float32:nhwc/stem_nchw_in`` reads the NCHW image and writes NHWC float32;
``cpu:bfloat16:nhwc/stem_nchw_in`` writes bfloat16 (the float32 sums rounded once, so the next
layer starts in bfloat16 with no cast), and is offered only to a tuning that allows bfloat16.
Images of at most 4 channels, up to 64 output channels, any kernel, stride and padding,
dilation 1, one group; bias, activation and post-activation affine fused.  AVX-512F only.
"""
from __future__ import annotations

import numpy as np

from ..ir.formats import Format
from ..ir.graph import NCHW, NHWC
from ..runtime import cpu
from . import Routine, conv_bf16
from .conv_gemm import geometry
from .epilogue import encode


def _kernels(isa="avx512"):
    mod = cpu.kernel_module("stem_conv", isa)
    return mod if mod is not None and mod.available else None


class NchwInStem(Routine):
    op = "Conv"
    layout = NHWC
    algo = "stem_nchw_in"
    priority = 10.5
    uses_blas = False
    requires = "needs a CPU with AVX-512F and the stem_conv_avx512 build (python setup.py build_ext --inplace)"

    @staticmethod
    def _mod():
        return _kernels()

    @classmethod
    def available(cls):
        return cls._mod() is not None

    @classmethod
    def applies(cls, layer, specs):
        mod = cls._mod()
        if mod is None or len(specs) < 2 or specs[0] is None or 0 in layer.consts or layer.attrs.get("residual"):
            return False
        x, w, out = specs[0], layer.consts.get(1), layer.out_specs[0]
        if len(x.shape) != 4 or x.dtype != "float32" or out.dtype != "float32" or w is None or w.ndim != 4:
            return False
        _, _, dilations, _, group = geometry(layer)
        if group != 1 or tuple(dilations) != (1, 1) or not mod.applies(x.shape[1], w.shape[0]):
            return False
        if len(specs) > 2 and specs[2] is not None and specs[2].dtype != "float32":
            return False
        epi = encode(layer, w.shape[0], extended=True, post_affine=True)
        return epi is not None and epi.code != 7 and mod.handles(epi.code)

    @classmethod
    def input_layouts(cls, layer, specs):
        return [NCHW for _ in specs]

    @classmethod
    def input_formats(cls, layer, specs):
        return [None if s is None else Format(s.dtype, NCHW) for s in specs]

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.consts[1], np.float32)
        bias = layer.consts.get(2)
        epi = encode(layer, w.shape[0], extended=True, post_affine=True)
        post = None if epi.post is None else tuple(np.ascontiguousarray(p, np.float32) for p in epi.post)
        return {"w": cls._mod().pack(w), "geometry": geometry(layer), "epi": epi, "post": post,
                "bias": None if bias is None else np.ascontiguousarray(bias, np.float32)}

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        kernel, strides, _, _, _ = geometry(layer)
        return 4 * cls._mod().scratch_floats(specs[0].shape, kernel, strides, layer.out_specs[0].shape[3], num_threads)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        kernel, strides, _, pads, _ = state["geometry"]
        epi, ws = state["epi"], state.get("workspace")
        cls._mod().conv(args[0], state["w"], outs[0], kernel, strides, pads, state["bias"], epi.code, epi.p0, epi.p1,
                        state["post"], None if ws is None else ws.view(np.float32), num_threads)


class NchwInStemBf16(NchwInStem):
    dtype = "bfloat16"
    requires = conv_bf16.REQUIRES

    @staticmethod
    def _mod():
        # the build that rounds to bfloat16 with VCVTNEPS2BF16, where this CPU has it
        return _kernels("avx512bf16") or _kernels()

    @classmethod
    def available(cls):
        # Its kernel rounds without AVX512-BF16, but where the bfloat16 routines are not offered
        # a bfloat16 output would only feed casts back to float32.
        return super().available() and conv_bf16._kernels() is not None

    @classmethod
    def applies(cls, layer, specs):
        return cls.available() and super().applies(layer, specs)

    @classmethod
    def output_formats(cls, layer):
        return [Format("bfloat16", NHWC)]
