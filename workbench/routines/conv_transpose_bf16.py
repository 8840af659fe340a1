"""``cpu:bfloat16:nhwc/shuffle_bf16``: ConvTranspose with kernel == stride, no padding, group 1 (the
2x upsampling of detector and segmentation heads) on the AVX512-BF16 GEMM
(``kernels_pyx/conv_shuffle_bf16.pyx``): output row ``i * KH + kh`` is input row ``i`` times kernel
row ``kh``'s weights, written in place with the bias and activation fused.  ``shuffle_bf16_f32out``
writes float32, for a float32 consumer (a head's last layer, whose output the model returns).

The weights are rounded to bfloat16 and packed once, in :meth:`prepare`.  Offered only where the
CPU has AVX512-BF16 and the module's ``_avx512bf16`` build is there, and only to a tuning that
allows bfloat16.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import NHWC
from ..runtime import cpu
from . import conv_bf16
from .conv_bf16 import REQUIRES, _F32Out
from .conv_transpose import _Shuffle
from .edges import edge_forms
from .eltwise import fused_activation


def _kernels():
    # offered where the bfloat16 GEMM is (conv_bf16 says whether this machine has bfloat16 at all)
    if conv_bf16._kernels() is None:
        return None
    mod = cpu.kernel_module("conv_shuffle_bf16", "avx512bf16")
    return mod if mod is not None and mod.available else None


class NhwcShuffleBf16(_Shuffle):
    dtype = "bfloat16"
    layout = NHWC
    algo = "shuffle_bf16"
    priority = 11.9
    uses_blas = False
    requires = REQUIRES

    @classmethod
    def available(cls):
        return _kernels() is not None

    @classmethod
    def applies(cls, layer, specs):
        mod = _kernels()
        if mod is None or not super().applies(layer, specs):
            return False
        act = fused_activation(layer, layer.out_specs[0].shape, extended=True)
        # a per-channel slope (PRelu) is not in the bfloat16 epilogue
        return act is not None and act[3] is None and mod.handles(act[0])

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.consts[1], np.float32)   # (C, M, KH, KW)
        kw = w.shape[3]
        b = layer.consts.get(2)
        code, p0, p1, _ = fused_activation(layer, layer.out_specs[0].shape, extended=True)
        return {"w": _kernels().pack(np.ascontiguousarray(w)),
                # per GEMM column, (kw, m): the bias repeated kw times
                "bias": None if b is None else np.ascontiguousarray(np.tile(np.asarray(b, np.float32).reshape(-1), kw)),
                "act": (code, p0, p1)}

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        kh, kw = layer.attrs["kernel_shape"]
        return _kernels().scratch_bytes(specs[0].shape[3], kh, kw, layer.out_specs[0].shape[1], num_threads)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        kh, kw = layer.attrs["kernel_shape"]
        code, p0, p1 = state["act"]
        _kernels().conv_transpose_shuffle(args[0], state["w"], outs[0], kh, kw, state["bias"], code, p0, p1,
                                          num_threads, state.get("workspace"))


edge_forms(NhwcShuffleBf16, globals(), [("f32out", (_F32Out,), 11.89)])
