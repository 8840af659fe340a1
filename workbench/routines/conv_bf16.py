"""bfloat16 1x1 convolutions on the AVX512-BF16 GEMM (``kernels_pyx/gemm_bf16.pyx``).

``cpu:bfloat16:nhwc/gemm1x1_bf16`` computes ``out(NHW, M) = x(NHW, C) @ W^T(C, M)`` with x and
out in bfloat16 and the sums in float32: VDPBF16PS does the multiply-adds of two float32 FMAs
per instruction.  The weights are rounded to bfloat16 and packed once, in :meth:`prepare`; bias,
residual (bfloat16), activation and post-activation affine are applied to the float32 sums
before the one rounding to bfloat16.  ``gemm1x1_bf16_f32out`` is the same product written in
float32: where the next layer runs in float32 the selection can leave bfloat16 there without a
cast adapt.

Offered only where the CPU has AVX512-BF16 and the ``gemm_bf16_avx512bf16`` module is built, and
only to a tuning that allows bfloat16 (``Session.tune(precisions=...)``).
"""
from __future__ import annotations

import numpy as np

from ..ir.formats import Format
from ..ir.graph import NHWC
from ..ir.ops.conv import residual_after_activation
from ..runtime import cpu
from .conv_gemm import _ConvGemm, geometry
from .epilogue import encode


def _kernels():
    mod = cpu.kernel_module("gemm_bf16", "avx512bf16")
    return mod if mod is not None and mod.available else None


class NhwcGemm1x1Bf16(_ConvGemm):
    dtype = "bfloat16"
    layout = NHWC
    algo = "gemm1x1_bf16"
    uses_blas = False
    one_by_one = True
    post_affine = True
    priority = 12

    @classmethod
    def applies(cls, layer, specs):
        mod = _kernels()
        if mod is None or not super().applies(layer, specs):
            return False
        _, strides, _, _, group = geometry(layer)
        epi = encode(layer, layer.out_specs[0].shape[1], extended=True, post_affine=True)
        return tuple(strides) == (1, 1) and group == 1 and epi.code != 7 and mod.handles(epi.code)

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.consts[1], np.float32)
        m = w.shape[0]
        bias = layer.consts.get(2)
        return {"w": _kernels().pack(np.ascontiguousarray(w.reshape(m, -1))),
                "epi": encode(layer, m, extended=True, post_affine=True),
                "bias": None if bias is None else np.ascontiguousarray(bias, np.float32)}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        bias = state["bias"]
        if bias is None and len(args) > 2 and args[2] is not None:
            bias = np.ascontiguousarray(args[2], np.float32)
        epi = state["epi"]
        _kernels().gemm(args[0], state["w"], outs[0], bias, args[3] if layer.attrs.get("residual") else None,
                        epi.code, epi.p0, epi.p1, epi.post, residual_after_activation(layer), num_threads)


class NhwcGemm1x1Bf16F32Out(NhwcGemm1x1Bf16):
    algo = "gemm1x1_bf16_f32out"
    priority = 11.9

    @classmethod
    def output_formats(cls, layer):
        return [Format("float32", NHWC)]
