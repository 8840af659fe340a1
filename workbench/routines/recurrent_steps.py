"""LSTM with its whole recurrence in C (``kernels_pyx/wb_lstm.h``; the GRU and RNN take the same
kernel, :mod:`.recurrent_gru_steps`): each direction's input
projection as one matrix product, then every step's ``h @ R^T``, gates and states in one kernel
call, with no return to Python between steps.

Two ways to spread a step over the threads, each its own routine, since which is faster depends
on the hidden size, the caches and the load on the machine:

- ``steps_dirs``: the directions side by side, one per thread, with nothing to wait for between
  steps; each core streams all of its direction's R every step.
- ``steps_split``: the directions in turn, each step's blocks of hidden units shared out over the
  threads, each keeping the same share of R in its own L2; a pool job per step.

In float32 (``cpu:float32:nchw/steps_*``) and with R and h rounded to bfloat16 for the products
(``cpu:bfloat16:nchw/steps_*_f32io``: half R's bytes; the sums, gates and states in float32, and
the tensors between layers too).
"""
from __future__ import annotations

import numpy as np

from ..runtime import cpu
from . import conv_bf16
from .recurrent import LstmDirect, _gemm
from .recurrent_bf16 import LstmBf16


def _steps_kernel(bf16):
    """The recurrent kernel module whose LstmSteps has vector code for these weights, or None."""
    mod = cpu.kernel_module("recurrent", "avx512bf16" if bf16 else "avx512")
    if mod is None or not hasattr(mod, "LstmSteps"):
        return None
    return mod if (mod.native_bfloat16 if bf16 else mod.native_float32) else None


class _Bound:
    """One layer's directions bound on fixed arrays: the projections, then the steps."""

    def __init__(self, cls, layer, state, args, outs):
        x = args[0]
        h0 = args[5] if len(args) > 5 else None
        c0 = args[6] if len(args) > 6 else None
        outs = list(outs) + [None] * (3 - len(outs))
        y, self.yh, self.yc = outs
        seq, batch, _ = x.shape
        hid = layer.attrs["hidden_size"]
        ndir = len(state["bias"])
        lstm = cls.kind == "lstm"
        c0 = c0 if lstm else None
        # the projections take contiguous rows: a strided input is copied first, each run
        self.x, self.xc = x, (None if x.flags.c_contiguous else np.empty(x.shape, np.float32))
        rows = (x if self.xc is None else self.xc).reshape(seq * batch, -1)
        self.init = [(None if h0 is None else h0[d], None if c0 is None else c0[d]) for d in range(ndir)]
        self.states, self.projections, dirs = [], [], []
        for d in range(ndir):
            xw = np.empty((seq, batch, cls.gates * hid), np.float32)
            h, c = np.zeros((batch, hid), np.float32), np.zeros((batch, hid), np.float32) if lstm else None
            self.states.append((h, c))
            self.projections.append(cls._projection(state, d, rows, xw.reshape(seq * batch, -1)))
            dirs.append(dict(r=state["steps"][d], xw=xw, h=h, c=c, rb=state["rb"][d] if "rb" in state else None,
                             y=None if y is None else y[:, d],
                             reverse=layer.attrs["direction"] == "reverse" or d == 1))
        self.steps = _steps_kernel(cls.bf16).RecurrentSteps(dirs, cls.bf16, cls.kind)
        self.split = cls.split

    def __call__(self, num_threads):
        if self.xc is not None:
            self.xc[...] = self.x
        for project in self.projections:
            project(num_threads)
        for (h, c), (h0, c0) in zip(self.states, self.init):
            h[...] = 0 if h0 is None else h0
            if c is not None:
                c[...] = 0 if c0 is None else c0
        self.steps.steps(num_threads, self.split)
        for d, (h, c) in enumerate(self.states):
            if self.yh is not None:
                self.yh[d] = h
            if self.yc is not None and c is not None:
                self.yc[d] = c


class _Steps:
    """What the step routines share; ``bf16`` and ``split`` pick the kernel and the threading,
    ``kind`` and ``gates`` the cell (the GRU's and RNN's in :mod:`.recurrent_gru_steps`)."""
    bf16 = False
    split = False
    uses_blas = False
    kind, gates = "lstm", 4

    @classmethod
    def available(cls):
        return _steps_kernel(cls.bf16) is not None and super().available()

    @classmethod
    def applies(cls, layer, specs):
        return _steps_kernel(cls.bf16) is not None and super().applies(layer, specs)

    @classmethod
    def prepare(cls, layer):
        # W packed once for the projection's GEMM, R in the steps' own layout: nothing else of
        # the step-by-step routines' state (their R packing) is built
        k = _steps_kernel(cls.bf16)
        return {"packed": [(cls._pack_w(np.ascontiguousarray(w, np.float32)), None) for w in layer.consts[1]],
                "steps": [k.pack_steps(r, cls.bf16, cls.gates) for r in layer.consts[2]],
                "bias": cls._gate_bias(layer), **cls._more_state(layer)}

    @classmethod
    def _more_state(cls, layer):
        return {}

    @classmethod
    def bind(cls, layer, state, args, outs):
        return _Bound(cls, layer, state, args, outs)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        _Bound(cls, layer, state, args, outs)(num_threads)


class _Float32(_Steps):
    @classmethod
    def available(cls):
        return _gemm() is not None and super().available()

    @classmethod
    def applies(cls, layer, specs):
        return _gemm() is not None and super().applies(layer, specs)

    @staticmethod
    def _pack_w(w):
        return _gemm().pack_b(np.ascontiguousarray(w.T))

    @staticmethod
    def _projection(state, d, rows, xw):
        # gemm512's 1x1-convolution kernel over (1, 1, rows, depth) images, the bias fused
        return _gemm().Conv1x1Nhwc(rows.reshape(1, 1, *rows.shape), state["packed"][d][0], state["bias"][d], None,
                                   xw.reshape(1, 1, *xw.shape), scratch=state.get("workspace"))


def _bf16_gemm():
    """The bfloat16 GEMM build for the projections: on AMX tiles where the CPU has them (the
    projection is a product of seq rows, enough to fill them), else AVX512-BF16."""
    return conv_bf16._kernels("gemm_bf16", "amx") or conv_bf16._kernels()


class _Bfloat16(_Steps):
    bf16 = True

    @staticmethod
    def _pack_w(w):
        return _bf16_gemm().pack(w)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        return _bf16_gemm().im2col_scratch_bytes(specs[0].shape[-1], num_threads)

    @staticmethod
    def _projection(state, d, rows, xw):
        return _bf16_gemm().gemm(rows, state["packed"][d][0], xw, bias=state["bias"][d], bind=True,
                                 scratch=state.get("workspace"))


class LstmStepsDirs(_Float32, LstmDirect):
    algo = "steps_dirs"
    priority = 10.2


class LstmStepsSplit(_Float32, LstmDirect):
    algo = "steps_split"
    priority = 10.1
    split = True


class LstmBf16StepsDirs(_Bfloat16, LstmBf16):
    algo = "steps_dirs_f32io"
    priority = 10.7


class LstmBf16StepsSplit(_Bfloat16, LstmBf16):
    algo = "steps_split_f32io"
    priority = 10.6
    split = True
