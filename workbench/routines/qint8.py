"""What every qint8 routine shares: the kernels, per-channel weight quantization, the tensors'
parameters, and the requantizing epilogue's constants.

A qint8 routine reads uint8 activations ``real = sx * (q - zx)`` (per tensor, from the graph's
:class:`~workbench.ir.quant.QuantTable`) and multiplies them by int8 weights quantized
symmetrically per output channel, ``w = sw[o] * qw`` with ``|qw| <= 127``, at prepare; the int32
sums (exact) come out through one affine per channel (``mult``, ``bias``), the residual, and the
activation as a clamp, either as float32 (a fused dequantize: the plan leaves qint8 there
without an adapt) or requantized to the output tensor's own uint8 parameters.
"""
from __future__ import annotations

import numpy as np

from ..ir.formats import QUANTIZED, Format
from ..ir.quant import per_tensor
from ..runtime import cpu
from .epilogue import encode


def kernels(isa="avx512vnni"):
    """The ``isa`` build of the qint8 kernels (``avx512vnni``; ``amxint8``: its GEMM on AMX
    tiles), or None where this CPU, its kernel or the build lacks it."""
    mod = cpu.kernel_module("gemm_q8", isa)
    return mod if mod is not None and mod.available else None


REQUIRES = "AVX512-VNNI (the gemm_q8_avx512vnni build)"
REQUIRES_AMX = "AMX-INT8 tiles granted by the kernel (the gemm_q8_amxint8 build)"


def quantize_weights(w):
    """Float weights ``w`` (O, ...) -> ``(q, scales)``: int8 ``q`` of ``w``'s shape, symmetric per
    output channel (``w[o] ~ scales[o] * q[o]``, ``|q| <= 127``, ties to even), float64 scales
    (1 for an all-zero channel)."""
    w = np.asarray(w, np.float64)
    flat = w.reshape(w.shape[0], -1)
    peak = np.abs(np.where(np.isfinite(flat), flat, 0.0)).max(axis=1) if flat.size else np.zeros(w.shape[0])
    scales = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.rint(flat / scales[:, None]), -127, 127).astype(np.int8)
    return q.reshape(w.shape), scales


def clamp(layer, channels):
    """``(lo, hi)``: the fused activation as a clamp of the output (None for none), or None where
    the layer's activation is not one (a qint8 epilogue clamps; it computes nothing else)."""
    ep = encode(layer, channels)
    if ep is None or ep.code not in (0, 1, 2) or ep.slope is not None:
        return None
    return {0: (None, None), 1: (0.0, None), 2: (ep.p0, ep.p1)}[ep.code]


def out_format(out_float, layout):
    """The format a qint8 routine writes: float32 (fused dequantize) or the quantized type."""
    return Format("float32" if out_float else QUANTIZED, layout)


class Requant:
    """The epilogue's constants for sums of ``x`` (params ``sx, zx``) times weights of
    per-channel ``scales``, plus ``bias`` (float, O), into float32 (``out`` None) or uint8 of
    ``out = (so, zo)``: ``mult``, ``bias`` (float32, output units), ``zo``, the clamp in output
    units, and for a residual of params ``res`` (``(sr, zr)``; None: float32) its ``rmult``."""

    def __init__(self, x, scales, bias, out=None, bounds=(None, None), res=None):
        sx, self.zx = x
        so, self.zo = out if out is not None else (1.0, 0)
        n = len(scales)
        b = np.zeros(n) if bias is None else np.asarray(bias, np.float64).reshape(n)
        self.mult = np.ascontiguousarray(sx * np.asarray(scales) / so, np.float32)
        shift = 0.0
        self.rmult = 1.0 / so
        if res is not None:
            sr, zr = res
            self.rmult = sr / so
            shift = zr * self.rmult
        self.bias = np.ascontiguousarray(b / so - shift, np.float32)
        lo, hi = bounds
        self.lo = None if lo is None else lo / so
        self.hi = None if hi is None else hi / so

    def compensation(self, sums):
        """The image's zero point times the weight sums per channel (int32): what the kernels take
        out of sums of raw uint8 bytes."""
        return np.ascontiguousarray(np.asarray(sums, np.int64) * self.zx, np.int32)


def params(quant, tensor, who):
    """``(scale, zero point)`` of ``tensor``'s per-tensor uint8 parameters in ``quant``."""
    return per_tensor(quant.require(tensor, who), f"{who}, tensor {tensor!r}")
