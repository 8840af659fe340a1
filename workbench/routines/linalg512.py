"""``cpu:float32:nchw/gemm_avx512``: MatMul and Gemm with constant weights on our AVX-512 SGEMM.

The BLAS routines (:mod:`.linalg`) run OpenBLAS single-threaded per column block, on the
Haswell kernels the environment pins it to; a recogniser's classifier, (1, 40, 120) @ (120,
6625), ran there at about 50 GFLOP/s.  Here the weights are packed into the kernel's panels once
in :meth:`prepare`, and the product runs as the 1x1 NHWC convolution it is (``gemm512.conv1x1_nhwc``:
the left operand's rows are the pixels), with bias and activation fused in its epilogue.
Offered where the CPU has AVX-512; the profiler picks between it and BLAS.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import NCHW
from . import Routine
from .conv_gemm512 import _kernels
from .linalg import _activation


def _float32(*specs):
    return all(s is not None and s.dtype == "float32" for s in specs)


def c_is_bias(layer):
    """A Gemm's C is absent, scaled away, or a constant with one value per column (or one in all)."""
    a, c = layer.attrs, layer.consts.get(2)
    n = layer.out_specs[0].shape[1] if len(layer.out_specs[0].shape) == 2 else -1
    return (len(layer.inputs) < 3 or not layer.inputs[2] or a["beta"] == 0
            or (c is not None and np.size(c) in (1, n) and np.ndim(c) <= 2 and (np.ndim(c) < 2 or np.shape(c)[0] == 1)))


def gemm_operands(layer):
    """``(alpha * B, beta * C as a per-column bias or None)`` of a Gemm whose C :func:`c_is_bias`."""
    a = layer.attrs
    b = np.asarray(layer.consts[1], np.float32) * np.float32(a["alpha"])
    c = layer.consts.get(2)
    if c is None or a["beta"] == 0:
        return b, None
    n = layer.out_specs[0].shape[1]
    return b, np.ascontiguousarray(np.broadcast_to(np.asarray(c, np.float32).reshape(-1) * np.float32(a["beta"]), (n,)),
                                   np.float32)


class _Gemm512(Routine, register=False):
    uses_blas = False
    layout = NCHW
    algo = "gemm_avx512"
    priority = 11
    isa = "avx512"

    @staticmethod
    def _args(a, state, out, bias):
        """conv1x1_nhwc's arguments for ``out = act(a @ W + bias)`` over all of ``a``'s rows."""
        rows, k = int(np.prod(a.shape[:-1], dtype=np.int64)), a.shape[-1]
        code, p0, p1, slope = state["act"]
        return (a.reshape(1, 1, rows, k), state["w"], bias, None, out.reshape(1, 1, rows, out.shape[-1]),
                code, p0, p1, slope)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        return _kernels().conv1x1_scratch_bytes(num_threads)

    @classmethod
    def _run(cls, a, state, out, bias, num_threads):
        _kernels().conv1x1_nhwc(*cls._args(a, state, out, bias), num_threads, scratch=state.get("workspace"))

    @classmethod
    def bind(cls, layer, state, args, outs):
        return _kernels().Conv1x1Nhwc(*cls._args(args[0], state, outs[0], state.get("bias")),
                                      scratch=state.get("workspace"))


class MatMulGemm512(_Gemm512):
    """``a (..., M, K) @ b (K, N)``, ``b`` a constant: one GEMM over all of ``a``'s rows."""

    op = "MatMul"

    @classmethod
    def applies(cls, layer, specs):
        b = layer.consts.get(1)
        return (_kernels() is not None and 0 not in layer.consts and b is not None and np.ndim(b) == 2
                and len(specs[0].shape) >= 2 and _float32(specs[0], layer.out_specs[0])
                and np.asarray(b).dtype == np.float32 and min(np.shape(b)) > 0
                and int(np.prod(specs[0].shape, dtype=np.int64)) > 0 and _activation(layer) is not None)

    @classmethod
    def prepare(cls, layer):
        b = np.ascontiguousarray(layer.consts[1], np.float32)
        bias = layer.consts.get(2)   # fused from an Add (passes/fuse_matmul_bias.py)
        return {"w": _kernels().pack_b(b), "act": _activation(layer),
                "bias": None if bias is None else np.ascontiguousarray(bias, np.float32)}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._run(args[0], state, outs[0], state["bias"], num_threads)


class GemmGemm512(_Gemm512):
    """Gemm ``alpha * a @ op(b) + beta * c`` with a constant ``b``, no ``transA``, and ``c`` a
    constant per column (or absent)."""

    op = "Gemm"

    @classmethod
    def applies(cls, layer, specs):
        a, b = layer.attrs, layer.consts.get(1)
        return (_kernels() is not None and b is not None and np.ndim(b) == 2 and not a["transA"]
                and len(specs[0].shape) == 2 and _float32(specs[0], layer.out_specs[0])
                and np.asarray(b).dtype == np.float32 and c_is_bias(layer) and _activation(layer) is not None
                and min(layer.out_specs[0].shape) > 0 and specs[0].shape[1] > 0)

    @classmethod
    def prepare(cls, layer):
        b, bias = gemm_operands(layer)
        return {"w": _kernels().pack_b(np.ascontiguousarray(b), trans_b=bool(layer.attrs["transB"])),
                "bias": bias, "act": _activation(layer)}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._run(args[0], state, outs[0], state["bias"], num_threads)
