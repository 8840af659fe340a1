"""qint8 convolutions, NHWC, on the VNNI kernels of ``kernels_pyx/gemm_q8.pyx``.

``cpu:qint8:nhwc/gemm_vnni`` runs any ungrouped 2-D convolution as a GEMM of uint8 pixels by
int8 weights: a 1x1 unit-stride unpadded one on the image itself, the others on windows gathered
a tile of output rows at a time into the workspace (the padding filled with the image's zero
point, which is real zero).  ``cpu:qint8:nhwc/gemm_amx`` is the same on AMX tiles, where the
CPU has them.  ``cpu:qint8:nhwc/depthwise_vnni`` runs depthwise ones, taps two at a time.  Each
writes uint8 in the output tensor's parameters; the ``..._f32`` twins write float32, a
dequantize fused into the epilogue, so a plan can leave qint8 at any convolution without an
adapt.  A fused residual is read in the output's data type; a fused ReLU or Clip is a clamp, other
activations (hard swish, SiLU, sigmoid, ...) are computed in real units before the rounding.
"""
from __future__ import annotations

import numpy as np

from ..ir.graph import NHWC
from ..ir.passes.fuse_qdq import PRE_RESIDUAL
from .conv_gemm import geometry
from .qint8 import OnAmx, QRoutine, Requant, activation, kernels, layer_weights, model_bias, out_format, params


class _ConvQ8(QRoutine, register=False):
    op = "Conv"
    layout = NHWC
    #: Writes float32 (a fused dequantize) instead of the output tensor's uint8.
    out_float = False

    @classmethod
    def applies(cls, layer, specs):
        if kernels() is None or len(specs) < 2 or specs[0] is None:
            return False
        x, w, out = specs[0], layer.consts.get(1), layer.out_specs[0]
        if len(x.shape) != 4 or x.dtype != "float32" or out.dtype != "float32" or w is None or w.ndim != 4:
            return False
        if len(specs) > 2 and specs[2] is not None and 2 not in layer.consts:
            return False   # a bias computed at run time
        if layer.attrs.get("residual") and (len(specs) < 4 or specs[3] is None
                                            or specs[3].shape != out.shape or specs[3].dtype != "float32"):
            return False
        if kernels().MAX_DEPTH < w[0].size:
            return False
        return activation(layer, out.shape[1]) is not None and cls._shape_applies(layer, specs)

    @classmethod
    def _shape_applies(cls, layer, specs):
        raise NotImplementedError

    @classmethod
    def input_formats(cls, layer, specs):
        formats = super().input_formats(layer, specs)
        if layer.attrs.get("residual"):   # read in the output's type, added in the epilogue
            formats[3] = out_format(cls.out_float, NHWC)
        return formats

    @classmethod
    def output_formats(cls, layer):
        return [out_format(cls.out_float, NHWC)]

    @classmethod
    def quant_tensors(cls, layer):
        tensors = [layer.inputs[0]]
        if not cls.out_float:
            tensors.append(layer.outputs[0])
            if layer.attrs.get("residual"):
                tensors.append(layer.inputs[3])
        return tuple(tensors)

    @classmethod
    def _conv(cls, layer, state, args, outs):
        """The kernel bound to these arrays, checked: a callable of ``num_threads``."""
        raise NotImplementedError

    @classmethod
    def bind(cls, layer, state, args, outs):
        return cls._conv(layer, state, args, outs)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._conv(layer, state, args, outs)(num_threads)

    @classmethod
    def _requant(cls, layer, quant, scales):
        who = f"{cls.descriptor} on {layer.name}"
        residual = layer.attrs.get("residual") and not cls.out_float
        mid = layer.meta.get(PRE_RESIDUAL)   # a pre-quantized model's rounding before the add
        x = params(quant, layer.inputs[0], who)
        return Requant(x, scales, layer.consts.get(2),
                       None if cls.out_float else params(quant, layer.outputs[0], who),
                       activation(layer, layer.out_specs[0].shape[1]),
                       params(quant, layer.inputs[3], who) if residual else None,
                       None if mid is None or not layer.attrs.get("residual") else (mid.scale[0], mid.zero_point[0]),
                       model_bias(layer, x[0], scales))


class _GemmQ8(_ConvQ8, register=False):
    algo = "gemm_vnni"

    @classmethod
    def _shape_applies(cls, layer, specs):
        return layer.attrs["group"] == 1 and cls.available()

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        return cls._geometry(layer, specs[0])[5]

    @staticmethod
    def _geometry(layer, x):
        kernel, strides, dilations, pads, _ = geometry(layer)
        n, c, h, w = x.shape
        return kernels().conv_geometry((n, h, w, c), kernel, strides, dilations, pads)

    @classmethod
    def prepare(cls, layer, quant=None):
        w = np.asarray(layer.consts[1], np.float32)
        q, scales = layer_weights(layer, w)
        m = w.shape[0]
        packed, sums = kernels().pack(np.ascontiguousarray(q.transpose(0, 2, 3, 1).reshape(m, -1)))
        rq = cls._requant(layer, quant, scales)
        return {"packed": packed, "comp": rq.compensation(sums), "rq": rq}

    @classmethod
    def _conv(cls, layer, state, args, outs):
        kernel, strides, dilations, pads, _ = geometry(layer)
        rq = state["rq"]
        return kernels(cls.isa).Conv(args[0], state["packed"], outs[0].shape[3], state["comp"], rq.mult, rq.bias,
                                     outs[0], kernel, strides, dilations, pads, fill=rq.zx,
                                     workspace=state.get("workspace"), zo=rq.zo, lo=rq.lo, hi=rq.hi,
                                     res=args[3] if layer.attrs.get("residual") else None, rmult=rq.rmult,
                                     rzp=rq.rzp, mid=rq.mid, act=rq.act)


class NhwcGemmQ8(_GemmQ8):
    pass


class NhwcGemmQ8F32(_GemmQ8):
    algo = "gemm_vnni_f32"
    out_float = True


class NhwcGemmAmxQ8(OnAmx, _GemmQ8):
    """The same GEMM on AMX tiles: eight times VNNI's multiply-adds an instruction, where the
    depth is enough to keep them busy (the profiler finds where)."""


class NhwcGemmAmxQ8F32(NhwcGemmAmxQ8):
    algo = "gemm_amx_f32"
    out_float = True


class _DepthwiseQ8(_ConvQ8, register=False):
    algo = "depthwise_vnni"

    @classmethod
    def _shape_applies(cls, layer, specs):
        w, c = layer.consts[1], specs[0].shape[1]
        return (layer.attrs["group"] == c and w.shape[0] == c and w.shape[1] == 1
                and w.shape[2] * w.shape[3] <= kernels().MAX_TAPS and not layer.attrs.get("residual"))

    @classmethod
    def prepare(cls, layer, quant=None):
        q, scales = layer_weights(layer, np.asarray(layer.consts[1], np.float32))
        packed, sums = kernels().pack_depthwise(q)
        rq = cls._requant(layer, quant, scales)
        return {"w": packed, "comp": rq.compensation(sums), "rq": rq,
                "zrow": np.full(q.shape[0], rq.zx, np.uint8)}

    @classmethod
    def _conv(cls, layer, state, args, outs):
        kernel, strides, dilations, pads, _ = geometry(layer)
        rq = state["rq"]
        return kernels().Depthwise(args[0], state["w"], kernel, strides, dilations, pads, state["comp"], rq.mult,
                                   rq.bias, outs[0], state["zrow"], zo=rq.zo, lo=rq.lo, hi=rq.hi, act=rq.act)


class NhwcDepthwiseQ8(_DepthwiseQ8):
    pass


class NhwcDepthwiseQ8F32(_DepthwiseQ8):
    algo = "depthwise_vnni_f32"
    out_float = True

