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
from ..ir.ops.conv import residual_after_activation
from ..ir.quant import per_tensor
from ..runtime import cpu
from . import Routine
from .epilogue import encode


def kernels(isa="avx512vnni"):
    """The ``isa`` build of the qint8 kernels (``avx512vnni``; ``amxint8``: its GEMM on AMX
    tiles), or None where this CPU, its kernel or the build lacks it."""
    mod = cpu.kernel_module("gemm_q8", isa)
    return mod if mod is not None and mod.available else None


REQUIRES = "AVX512-VNNI (the gemm_q8_avx512vnni build)"
REQUIRES_AMX = "AMX-INT8 tiles granted by the kernel (the gemm_q8_amxint8 build)"


class QRoutine(Routine, register=False):
    """What every qint8 routine declares: its data type, that its prepare reads the graph's
    quantization parameters, our own kernels only, and the build it needs (``isa``)."""

    dtype = "qint8"
    quantized = True
    uses_blas = False
    requires = REQUIRES
    priority = 5
    isa = "avx512vnni"

    @classmethod
    def available(cls):
        return kernels(cls.isa) is not None


class OnAmx:
    """Mixed in before a qint8 GEMM routine: the same routine on AMX tiles (the amxint8 build)."""

    algo = "gemm_amx"
    isa = "amxint8"
    requires = REQUIRES_AMX


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


def layer_weights(layer, w):
    """``(int8 q, scales)`` of ``layer``'s weights ``w`` (output channels first): the
    pre-quantized model's own (ir/passes/fuse_qdq.py's ``capture_weights``) where it has them and
    they match ``w``'s shape, else :func:`quantize_weights` of ``w``."""
    own = layer.meta.get("weight_quant")   # (q, scales, the model's output axis)
    if own is not None and own[0].size == np.size(w) and own[0].shape[0] == np.shape(w)[0]:
        q = own[0].reshape(np.shape(w))
        real = q.reshape(len(q), -1) * np.asarray(own[1], np.float64)[:, None]
        # the same weights (a Gemm's alpha, or a pass that rescaled them, would make them others)
        if np.allclose(real, np.asarray(w, np.float64).reshape(len(q), -1), rtol=1e-6, atol=1e-30):
            return q, np.asarray(own[1], np.float64)
    return quantize_weights(w)


def model_bias(layer, x_scale, scales):
    """The pre-quantized model's int32 bias of ``layer`` (``layer.meta["bias_quant"]``), where its
    scales are the input's times the weights' (what an integer convolution adds to its sums),
    else None."""
    own = layer.meta.get("bias_quant")
    if own is None or np.size(own[0]) != len(scales):
        return None
    want = np.float32(x_scale) * np.asarray(scales, np.float32)
    return own[0] if np.allclose(np.asarray(own[1], np.float32), want, rtol=1e-6) else None


#: Activations the epilogue computes in real units before it rounds (epilogue.py's codes: leaky
#: ReLU, hard sigmoid, hard swish, sigmoid, tanh, SiLU, both GELUs); ReLU and Clip are clamps of
#: the output, but computed too where a residual comes after them.
COMPUTED = (3, 4, 5, 6, 8, 9, 10, 11)


def activation(layer, channels):
    """``((lo, hi), act)``: the fused activation as a clamp of the output (``lo``/``hi`` None for
    none) or as ``act = (code, p0, p1, first)`` computed (else None; ``first``: before the fused
    residual, which the layer adds after it); None where the epilogue cannot apply it (a PRelu,
    a post-activation affine)."""
    ep = encode(layer, channels, extended=True)
    if ep is None or ep.slope is not None:
        return None
    first = residual_after_activation(layer)
    if ep.code == 0 or (ep.code in (1, 2) and not first):
        return {0: (None, None), 1: (0.0, None), 2: (ep.p0, ep.p1)}[ep.code], None
    return ((None, None), (ep.code, ep.p0, ep.p1, first)) if ep.code in COMPUTED + (1, 2) else None


def out_format(out_float, layout):
    """The format a qint8 routine writes: float32 (fused dequantize) or the quantized type."""
    return Format("float32" if out_float else QUANTIZED, layout)


class Requant:
    """The epilogue's constants for sums of ``x`` (params ``sx, zx``) times weights of
    per-channel ``scales``, plus ``bias`` (float, O), into float32 (``out`` None) or uint8 of
    ``out = (so, zo)``: ``mult``, ``bias`` (float32), ``zo``, the clamp in output units and the
    computed activation (``act``, from :func:`activation`; the kernels' ``(code, p0, p1, so,
    first)``); for a uint8 residual of params ``res`` (``(sr, zr)``; None: float32) its ``rmult`` and ``rzp``; and
    with ``mid = (s1, z1)`` the sums rounded to that uint8 tensor first (``mult`` and ``bias`` in
    its units, ``mid`` then ``(z1, s1 / so)`` for the kernel), as a pre-quantized model rounds a
    Conv's output before its residual add.  ``int_bias``: the model's own int32 bias (in units of
    ``sx * scales``), added to the sums before they are scaled, with the multipliers rounded to
    float32 step by step as ONNX Runtime's QLinearConv rounds them: the same rounding ties."""

    def __init__(self, x, scales, bias, out=None, act=((None, None), None), res=None, mid=None, int_bias=None):
        sx, self.zx = x
        so, self.zo = out if out is not None else (1.0, 0)
        n = len(scales)
        first = so if mid is None else mid[0]   # the scale the sums are first expressed in
        f = np.float32
        self.int_bias = None
        if int_bias is not None:
            self.int_bias = np.asarray(int_bias, np.int64).reshape(n)
            self.mult = np.ascontiguousarray((f(sx) * np.asarray(scales, f)) / f(first), f)
            self.bias = np.zeros(n, f)
        else:
            b = np.zeros(n) if bias is None else np.asarray(bias, np.float64).reshape(n)
            self.mult = np.ascontiguousarray(sx * np.asarray(scales) / first, f)
            self.bias = np.ascontiguousarray(b / first, f)
        self.mid = None if mid is None else (int(mid[1]), float(f(mid[0]) / f(so)))
        self.rmult, self.rzp = float(f(1.0) / f(so)), 0
        if res is not None:
            sr, self.rzp = res
            self.rmult = float(f(sr) / f(so))
        (lo, hi), computed = act
        self.lo = None if lo is None else lo / so
        self.hi = None if hi is None else hi / so
        self.act = None if computed is None else (*computed[:3], so, computed[3])

    def compensation(self, sums):
        """The image's zero point times the weight sums per channel (int32): what the kernels take
        out of sums of raw uint8 bytes (less the model's integer bias, where it has one)."""
        comp = np.asarray(sums, np.int64) * self.zx
        if self.int_bias is not None:
            comp = comp - self.int_bias
        return np.ascontiguousarray(comp, np.int32)


def params(quant, tensor, who):
    """``(scale, zero point)`` of ``tensor``'s per-tensor uint8 parameters in ``quant``."""
    return per_tensor(quant.require(tensor, who), f"{who}, tensor {tensor!r}")
