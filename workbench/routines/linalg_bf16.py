"""``cpu:bfloat16:nchw/gemm_bf16``: MatMul and Gemm with constant weights on the AVX512-BF16 GEMM
(``gemm_amx``: the same on AMX tiles, where the CPU has them).

The product is the one ``conv_bf16``'s 1x1 routine runs (``gemm_bf16.gemm``: the left operand's
rows against B packed once, in :meth:`prepare`, rounded to bfloat16), with bias and activation
in its float32 epilogue.  A classifier's weights are read once per run and dominate its time at
batch 1 (VGG-16's first fully connected layer streams 411 MB of float32): in bfloat16 they are
half the bytes.  The forms mirror the convolutions': ``gemm_bf16`` reads and writes bfloat16,
``_f32in`` reads float32 (rounded as each job gathers its rows), ``_f32out`` writes float32 and
``_f32io`` does both, so a product between float32 layers needs no cast adapt.  Operands are
not images: they keep their native order (layout ``nchw``).
"""
from __future__ import annotations

import numpy as np

from ..ir.formats import Format
from ..ir.graph import NCHW
from . import Routine
from . import bias_correction, conv_bf16
from .edges import edge_forms
from .eltwise import fused_activation
from .linalg512 import c_is_bias, gemm_operands


def _kernels():
    # looked up through conv_bf16 each time: one place says whether the bfloat16 GEMM is here
    return conv_bf16._kernels()


def _activation(layer):
    """(code, p0, p1) of the fused activation if the bfloat16 GEMM's epilogue applies it, else None."""
    shape = layer.out_specs[0].shape
    act = fused_activation(layer, shape, extended=True)
    mod = _kernels()
    if act is None or act[3] is not None or mod is None or not mod.handles(act[0]):
        return None
    return act[:3]


class _GemmBf16(Routine, register=False):
    dtype = "bfloat16"
    layout = NCHW
    uses_blas = False
    requires = conv_bf16.REQUIRES
    algo = "gemm_bf16"
    priority = 12
    in_dtype = "bfloat16"
    out_dtype = "bfloat16"
    isa = "avx512bf16"   # the build of gemm_bf16 whose GEMM the routine runs

    @classmethod
    def available(cls):
        return _kernels() is not None and cls.gemm() is not None

    @classmethod
    def gemm(cls):
        return conv_bf16._kernels("gemm_bf16", cls.isa)

    @classmethod
    def input_formats(cls, layer, specs):
        return [None if s is None else Format(cls.in_dtype if i == 0 else str(np.dtype(s.dtype)), NCHW)
                for i, s in enumerate(specs)]

    @classmethod
    def output_formats(cls, layer):
        return [Format(cls.out_dtype, NCHW)]

    @classmethod
    def _float_operands(cls, layer, specs):
        """The operand, the output and the weights are float32 (the tensors this family stores as bfloat16)."""
        b = layer.consts.get(1)
        return (specs[0] is not None and specs[0].dtype == "float32" and layer.out_specs[0].dtype == "float32"
                and b is not None and np.asarray(b).dtype == np.float32 and np.ndim(b) == 2 and min(np.shape(b)) > 0
                and len(layer.outputs) == 1 and _activation(layer) is not None)

    @staticmethod
    def _args(a, state, out):
        code, p0, p1 = state["act"]
        return (a, state["w"], out, state["bias"], None, code, p0, p1)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        # a float32 A's rows are rounded to bfloat16 as each job gathers them
        return cls.gemm().im2col_scratch_bytes(specs[0].shape[-1], num_threads) if cls.in_dtype == "float32" else 0

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls.gemm().gemm(*cls._args(args[0], state, outs[0]), num_threads=num_threads,
                        scratch=state.get("workspace"))

    @classmethod
    def bind(cls, layer, state, args, outs):
        return cls.gemm().gemm(*cls._args(args[0], state, outs[0]), num_threads=1, bind=True,
                               scratch=state.get("workspace"))


class MatMulBf16(_GemmBf16):
    """``a (..., M, K) @ b (K, N)``, ``b`` a constant: one GEMM over all of ``a``'s rows."""

    op = "MatMul"

    @classmethod
    def applies(cls, layer, specs):
        return (cls.gemm() is not None and 0 not in layer.consts and cls._float_operands(layer, specs)
                and len(specs[0].shape) >= 2 and int(np.prod(specs[0].shape, dtype=np.int64)) > 0)

    @classmethod
    def prepare(cls, layer):
        b = np.asarray(layer.consts[1], np.float32)
        bias = bias_correction.matmul(layer, b, layer.consts.get(2))   # fused from an Add (passes/fuse_matmul_bias.py)
        return {"w": cls.gemm().pack(np.ascontiguousarray(b.T)),
                "act": _activation(layer), "bias": None if bias is None else np.ascontiguousarray(bias, np.float32)}


class GemmBf16(_GemmBf16):
    """Gemm ``alpha * a @ op(b) + beta * c`` with a constant ``b``, no ``transA``, and ``c`` a
    constant per column (or absent)."""

    op = "Gemm"

    @classmethod
    def applies(cls, layer, specs):
        return (cls.gemm() is not None and not layer.attrs["transA"] and len(specs[0].shape) == 2 and c_is_bias(layer)
                and cls._float_operands(layer, specs) and min(layer.out_specs[0].shape) > 0 and specs[0].shape[1] > 0)

    @classmethod
    def prepare(cls, layer):
        b, bias = gemm_operands(layer)
        bias = bias_correction.matmul(layer, b.T if layer.attrs["transB"] else b, bias)
        # pack takes B^T, (N, K): a transB operand already is
        return {"w": cls.gemm().pack(np.ascontiguousarray(b if layer.attrs["transB"] else b.T)), "bias": bias,
                "act": _activation(layer)}


class MatMulAmx(conv_bf16._Amx, MatMulBf16):
    algo = "gemm_amx"
    priority = 12.5


class GemmAmx(conv_bf16._Amx, GemmBf16):
    algo = "gemm_amx"
    priority = 12.5


class _F32In:
    in_dtype = "float32"


class _F32Out:
    out_dtype = "float32"


FORMS = [("f32in", (_F32In,), 11.9), ("f32out", (_F32Out,), 11.89), ("f32io", (_F32In, _F32Out), 11.88)]
edge_forms(MatMulBf16, globals(), FORMS)
edge_forms(GemmBf16, globals(), FORMS)
AMX_FORMS = [("f32in", (_F32In,), 12.49), ("f32out", (_F32Out,), 12.48), ("f32io", (_F32In, _F32Out), 12.47)]
edge_forms(MatMulAmx, globals(), AMX_FORMS)
edge_forms(GemmAmx, globals(), AMX_FORMS)
