"""``cpu:qint8:nchw/gemm_vnni``: MatMul and Gemm with constant weights on the qint8 GEMM
(``kernels_pyx/gemm_q8.pyx``), the left operand's rows uint8, the weights int8 per output column.

At batch 1 a classifier's product streams its weights once per run: in int8 they are a quarter of
float32's bytes (VGG-16's first fully connected layer: 103 MB instead of 411).  ``gemm_vnni``
writes the output tensor's uint8, ``gemm_vnni_f32`` float32 (a fused dequantize: the logits of a
classifier leave qint8 there); ``gemm_amx`` and ``gemm_amx_f32`` run the product on AMX tiles
where the CPU has them.  Operands are not images: they keep their native order.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import NCHW
from .linalg512 import c_is_bias, gemm_operands
from .qint8 import OnAmx, QRoutine, Requant, activation, kernels, layer_weights, model_bias, out_format, params


class _GemmQ8(QRoutine, register=False):
    layout = NCHW
    algo = "gemm_vnni"
    out_float = False

    @classmethod
    def _operands(cls, layer, specs):
        b = layer.consts.get(1)
        return (cls.available() and specs[0] is not None and specs[0].dtype == "float32" and 0 not in layer.consts
                and layer.out_specs[0].dtype == "float32" and b is not None and np.asarray(b).dtype == np.float32
                and np.ndim(b) == 2 and min(np.shape(b)) > 0 and len(layer.outputs) == 1
                and activation(layer, layer.out_specs[0].shape[-1]) is not None)

    @classmethod
    def output_formats(cls, layer):
        return [out_format(cls.out_float, NCHW)]

    @classmethod
    def quant_tensors(cls, layer):
        return (layer.inputs[0],) if cls.out_float else (layer.inputs[0], layer.outputs[0])

    @classmethod
    def _state(cls, layer, quant, w, bias):
        """The packed ``w`` (N, K) and the epilogue's constants."""
        who = f"{cls.descriptor} on {layer.name}"
        if w.shape[1] > kernels().MAX_DEPTH:
            raise ValueError(f"{who}: depth {w.shape[1]} > {kernels().MAX_DEPTH}: the int32 sums could overflow")
        q, scales = layer_weights(layer, w)
        packed, sums = kernels().pack(np.ascontiguousarray(q))
        x = params(quant, layer.inputs[0], who)
        rq = Requant(x, scales, bias, None if cls.out_float else params(quant, layer.outputs[0], who),
                     activation(layer, w.shape[0]), int_bias=model_bias(layer, x[0], scales))
        return {"packed": packed, "comp": rq.compensation(sums), "rq": rq}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        a, out, rq = args[0], outs[0], state["rq"]
        n = out.shape[-1]
        kernels(cls.isa).gemm(a.reshape(-1, a.shape[-1]), state["packed"], n, state["comp"], rq.mult, rq.bias,
                       out.reshape(-1, n), zo=rq.zo, lo=rq.lo, hi=rq.hi, num_threads=num_threads, act=rq.act)


class MatMulQ8(_GemmQ8):
    """``a (..., M, K) @ b (K, N)``, ``b`` a constant: one GEMM over all of ``a``'s rows."""

    op = "MatMul"

    @classmethod
    def applies(cls, layer, specs):
        return (cls._operands(layer, specs) and len(specs[0].shape) >= 2
                and int(np.prod(specs[0].shape, dtype=np.int64)) > 0 and np.shape(layer.consts[1])[0] <= kernels().MAX_DEPTH)

    @classmethod
    def prepare(cls, layer, quant=None):
        b = np.asarray(layer.consts[1], np.float32)
        return cls._state(layer, quant, b.T, layer.consts.get(2))


class GemmQ8(_GemmQ8):
    """Gemm ``alpha * a @ op(b) + beta * c`` with a constant ``b``, no ``transA``, and ``c`` a
    constant per column (or absent)."""

    op = "Gemm"

    @classmethod
    def applies(cls, layer, specs):
        b = layer.consts.get(1)
        depth = None if b is None else np.shape(b)[1 if layer.attrs["transB"] else 0]
        return (cls._operands(layer, specs) and not layer.attrs["transA"] and len(specs[0].shape) == 2
                and c_is_bias(layer) and min(layer.out_specs[0].shape) > 0 and 0 < depth <= kernels().MAX_DEPTH)

    @classmethod
    def prepare(cls, layer, quant=None):
        b, bias = gemm_operands(layer)
        return cls._state(layer, quant, b if layer.attrs["transB"] else b.T, bias)


class MatMulQ8F32(MatMulQ8):
    algo = "gemm_vnni_f32"
    out_float = True


class GemmQ8F32(GemmQ8):
    algo = "gemm_vnni_f32"
    out_float = True


class MatMulAmxQ8(OnAmx, MatMulQ8):
    pass


class GemmAmxQ8(OnAmx, GemmQ8):
    pass


class MatMulAmxQ8F32(MatMulAmxQ8):
    algo = "gemm_amx_f32"
    out_float = True


class GemmAmxQ8F32(GemmAmxQ8):
    algo = "gemm_amx_f32"
    out_float = True
