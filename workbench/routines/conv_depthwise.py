"""Direct depthwise Conv routines (one KHxKW filter per channel), float32, NHWC and NCHW.

``cpu:float32:nhwc/depthwise`` runs the innermost loop over channels (contiguous in NHWC);
``cpu:float32:nchw/depthwise`` sweeps each channel plane as one contiguous loop.  Both fuse
bias, residual and activation (see :mod:`workbench.routines.epilogue`) and come in ISA variants
(``depthwise_avx2``, ``depthwise_avx512``) built from the same source with wider vectors and
FMA; a variant applies only where the CPU supports it.  Both variants earn their place: on
MobileNetV2/V3's layers (2 threads) AVX2 ran 1.3-1.7x the baseline's speed and AVX-512 another
1.0-1.3x.  Kernels: ``kernels_pyx/depthwise.pyx``.
"""
from __future__ import annotations


import numpy as np

from .._kernels.buffers import aligned_array
from ..runtime import cpu
from ..ir.graph import NCHW, NHWC
from ..ir.ops.conv import residual_after_activation
from . import Routine
from .epilogue import encode

#: The largest kernel side taken (``depthwise.MAX_KERNEL``, a bound on scratch sizes).
MAX_KERNEL = 31


def _kernels(isa):
    return cpu.kernel_module("depthwise", isa)


def depthwise_applies(layer, specs):
    """Whether ``layer`` is a float32 depthwise Conv these kernels take (layout and ISA aside)."""
    a = layer.attrs
    x, w = specs[0], layer.const(1)
    if (layer.op != "Conv" or w is None or x is None or len(x.shape) != 4 or x.dtype != "float32"
            or w.dtype != np.float32 or layer.out_specs[0].dtype != "float32"):
        return False
    c = x.shape[1]
    if a["group"] != c or w.shape[:2] != (c, 1):
        return False  # a channel multiplier other than 1 is not depthwise here
    if not all(1 <= k <= MAX_KERNEL for k in a["kernel_shape"]) or list(a["dilations"]) != [1, 1]:
        return False
    if any(s not in (1, 2) for s in a["strides"]) or min(a["pads"]) < 0:
        return False
    if len(layer.inputs) > 2 and layer.inputs[2] and layer.const(2) is None:
        return False  # a bias computed at run time: not packed in prepare
    if residual_after_activation(layer):
        return False   # the kernels add a residual before the activation only
    if a.get("residual") and (len(specs) < 4 or specs[3] is None or specs[3].dtype != "float32"):
        return False
    return encode(layer, c, extended=True) is not None


class _Depthwise(Routine, register=False):
    uses_blas = False
    op = "Conv"
    algo = "depthwise"
    isa = None
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        return ((cls.isa is None or cpu.supports(cls.isa)) and _kernels(cls.isa) is not None
                and depthwise_applies(layer, specs))

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.const(1), np.float32)
        c, k = w.shape[0], (w.shape[2], w.shape[3])
        b = layer.const(2) if len(layer.inputs) > 2 else None
        ep = encode(layer, c, extended=True)
        return {
            "w": cls._pack(w.reshape(c, k[0] * k[1])),
            "bias": aligned_array(b if b is not None else np.zeros(c), np.float32),
            "ep": ep, "k": k,
        }

    @classmethod
    def _call(cls, layer, state, args, out, num_threads, *scratch):
        a, ep = layer.attrs, state["ep"]
        p = a["pads"]
        fn = getattr(_kernels(cls.isa), cls.layout)
        fn(args[0], state["w"], state["bias"], out, *scratch, state["k"], a["strides"],
           (p[0], p[1], p[2], p[3]), residual=args[3] if a.get("residual") else None,
           act=ep.code, p0=ep.p0, p1=ep.p1, slope=ep.slope, num_threads=num_threads)


class _DepthwiseNHWC(_Depthwise, register=False):
    layout = NHWC

    @staticmethod
    def _pack(w):
        return aligned_array(w.T)  # (K*K, C): channels innermost

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._call(layer, state, args, outs[0], num_threads)

    @classmethod
    def bind(cls, layer, state, args, outs):
        a, ep, p = layer.attrs, state["ep"], layer.attrs["pads"]
        return _kernels(cls.isa).Nhwc(args[0], state["w"], state["bias"], outs[0], state["k"], a["strides"],
                                      (p[0], p[1], p[2], p[3]), residual=args[3] if a.get("residual") else None,
                                      act=ep.code, p0=ep.p0, p1=ep.p1, slope=ep.slope)


class _DepthwiseNCHW(_Depthwise, register=False):
    layout = NCHW

    @staticmethod
    def _pack(w):
        return aligned_array(w)  # (C, K*K)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        # each thread's padded, phase-split input plane
        a, k = layer.attrs, tuple(layer.const(1).shape[2:])
        h, w = specs[0].shape[2:]
        return 4 * num_threads * _kernels(cls.isa).nchw_scratch_floats(k, a["strides"], a["pads"], h, w)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, a = args[0], layer.attrs
        need = num_threads * _kernels(cls.isa).nchw_scratch_floats(state["k"], a["strides"], a["pads"],
                                                                  x.shape[2], x.shape[3])
        ws = state.get("workspace")
        if ws is None:   # a run outside an executor
            ws = state["workspace"] = np.empty(4 * need, np.uint8)
        elif ws.nbytes < 4 * need:
            raise ValueError(f"{cls.descriptor}: a workspace of {ws.nbytes} bytes; this input needs {4 * need}")
        cls._call(layer, state, args, outs[0], num_threads, ws[:4 * need].view(np.float32))


def _variant(base, isa):
    suffix = f"_{isa}" if isa else ""
    name = f"Depthwise{base.layout.upper()}{suffix.upper()}"
    return type(name, (base,), {"algo": "depthwise" + suffix, "isa": isa, "__module__": __name__,
                                "priority": 10 + (2 if isa == "avx512" else 1 if isa else 0)})


for _base in (_DepthwiseNHWC, _DepthwiseNCHW):
    for _isa in (None, "avx2", "avx512"):
        globals()[f"Depthwise{_base.layout.upper()}{('_' + _isa.upper()) if _isa else ''}"] = _variant(_base, _isa)
