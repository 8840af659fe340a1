"""``cpu:bfloat16:nchw/direct_f32io`` for LSTM: :mod:`.recurrent`'s routine with its products on
the AVX512-BF16 GEMM (``gemm_bf16.gemm``): W and R rounded to bfloat16 and packed once, in
:meth:`prepare`; x and each step's h rounded to bfloat16 as the GEMM gathers them; the sums,
gates and states in float32, and the tensors between layers too (``_f32io``: no cast adapt).

A step reads the whole recurrent matrix, which bounds the recurrence by memory (4 MB of float32
at hidden size 512); in bfloat16 it is half the bytes, and each core's share of it about its L2.
The rounding of h compounds over the steps like any layer's: the plan's error report shows it.
"""
from __future__ import annotations

import numpy as np

from ..ir.formats import Format
from ..ir.graph import NCHW
from . import conv_bf16
from .recurrent import LstmDirect, _Direction


class _Bf16Direction(_Direction):
    """One direction's recurrence with its two products bound on the bfloat16 GEMM."""

    def __init__(self, x, packed, bias, h0, c0, y, reverse, scratch):
        seq, batch, _ = x.shape
        k = conv_bf16._kernels()
        super().__init__(x, None, None, None, bias, h0, c0, y, reverse)
        # the GEMM takes contiguous rows: a strided input is copied first, each run
        self.xc = None if x.flags.c_contiguous else np.empty(x.shape, np.float32)
        rows = (x if self.xc is None else self.xc).reshape(seq * batch, -1)
        self.project = k.gemm(rows, packed[0], self.xw.reshape(seq * batch, -1), bias=bias, bind=True,
                              scratch=scratch)
        # step s: g = h @ R^T + xw[s], one product over all the gates
        self.steps = [[k.gemm(self.h, packed[1], self.g, residual=self.xw[s], bind=True, scratch=scratch)]
                      for s in range(seq)]

    def __call__(self, num_threads):
        if self.xc is not None:
            self.xc[...] = self.x
        return super().__call__(num_threads)


class LstmBf16(LstmDirect):
    dtype = "bfloat16"
    algo = "direct_f32io"
    priority = 10.5
    uses_blas = False
    requires = conv_bf16.REQUIRES
    #: Each gate sums products of four rounded operands (W, x, R and the step's h, the last
    #: carrying the earlier steps' rounding): the error variance of about four direct layers.
    error_weight = 4.0

    @classmethod
    def available(cls):
        return conv_bf16._kernels() is not None

    @classmethod
    def input_formats(cls, layer, specs):
        return [None if s is None else Format(str(np.dtype(s.dtype)), NCHW) for s in specs]

    @classmethod
    def output_formats(cls, layer):
        return [Format(str(np.dtype(s.dtype)), NCHW) for s in layer.out_specs]

    @classmethod
    def applies(cls, layer, specs):
        return cls.available() and super().applies(layer, specs)

    @classmethod
    def prepare(cls, layer):
        w, r = layer.consts[1], layer.consts[2]
        k = conv_bf16._kernels()
        return {"packed": [(k.pack(np.ascontiguousarray(w[d], np.float32)), k.pack(np.ascontiguousarray(r[d], np.float32)))
                           for d in range(w.shape[0])],
                "bias": cls._gate_bias(layer)}

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        # each product's float32 rows gathered and rounded: the input's depth, then the hidden size
        k = conv_bf16._kernels()
        return max(k.im2col_scratch_bytes(specs[0].shape[-1], num_threads),
                   k.im2col_scratch_bytes(layer.attrs["hidden_size"], num_threads))

    @classmethod
    def _direction(cls, state, d, x, h0, c0, y, reverse):
        return _Bf16Direction(x, state["packed"][d], state["bias"][d], h0, c0, y, reverse, state.get("workspace"))
