"""``cpu:float32:{nchw,nhwc}/direct[_avx2|_avx512]``: Softmax and LogSoftmax over any axis.

The tensor is viewed in its *physical* order as (outer, length, inner) around the reduced axis
(``workbench._kernels.softmax``): the last axis (and NHWC's channels) reduce along contiguous
rows, any other axis across contiguous lanes.  Before opset 13 the input is coerced to 2-D at
``axis``: the reduced set is then the flattened tail, contiguous in NCHW at any axis and in
NHWC only at axes 0 and 1 (the whole image, or all of one image).

The kernel module is built three times (baseline, AVX2, AVX-512, see ``setup.py``); each build
is its own routine, offered only where this CPU runs it, so the profiler picks among them.
"""
import numpy as np

from ..runtime import cpu
from ..ir.graph import NCHW, NHWC
from . import Routine
from .eltwise import all_float32

#: Logical (NCHW) axis -> physical axis of a 4-D NHWC array.
NHWC_AXIS = (0, 3, 1, 2)


def softmax_geometry(layer, shape, layout):
    """(outer, length, inner) of the reduction over the physical array, or None."""
    rank = len(shape)
    size = int(np.prod(shape, dtype=np.int64))
    if rank == 0:
        return 1, 1, 1
    axis = layer.attrs["axis"] % rank
    nhwc = layout == NHWC and rank == 4
    if layer.attrs["coerce_2d"]:
        if nhwc and axis > 1:
            return None
        outer = 1 if axis == 0 else shape[0] if nhwc else int(np.prod(shape[:axis], dtype=np.int64))
        return outer, size // max(outer, 1), 1
    physical = (shape[0], shape[2], shape[3], shape[1]) if nhwc else tuple(shape)
    p = NHWC_AXIS[axis] if nhwc else axis
    return (int(np.prod(physical[:p], dtype=np.int64)), physical[p],
            int(np.prod(physical[p + 1:], dtype=np.int64)))


class _Softmax(Routine, register=False):
    uses_blas = False
    op = ("Softmax", "LogSoftmax")
    algo = "direct"
    isa = None
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        shape = specs[0].shape
        if cls.isa is not None and not cpu.supports(cls.isa) or cpu.kernel_module("softmax", cls.isa) is None:
            return False
        return (all_float32(specs, layer.out_specs) and specs[0].size > 0
                and (cls.layout == NCHW or len(shape) == 4)
                and softmax_geometry(layer, shape, cls.layout) is not None)

    @classmethod
    def prepare(cls, layer):
        return softmax_geometry(layer, layer.out_specs[0].shape, cls.layout)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        outer, length, inner = state
        cpu.kernel_module("softmax", cls.isa).softmax(args[0], outs[0], outer, length, inner,
                                                      layer.op == "LogSoftmax", num_threads)


def _variant(layout, isa):
    suffix = f"_{isa}" if isa else ""
    name = f"Softmax{layout.upper()}{suffix.upper()}"
    return type(name, (_Softmax,), {"layout": layout, "algo": "direct" + suffix, "isa": isa, "__module__": __name__,
                                    "priority": 10 + (2 if isa == "avx512" else 1 if isa else 0)})


for _layout in (NCHW, NHWC):
    for _isa in (None, "avx2", "avx512"):
        _cls = _variant(_layout, _isa)
        globals()[_cls.__name__] = _cls


class _SoftmaxDot(Routine, register=False):
    """``cpu:float32:nchw/direct[_avx2|_avx512]``: :class:`~workbench.ir.ops.linalg.SoftmaxDot` in one
    pass (``softmax_dot`` of the softmax kernel module), the input read as (outer, length, inner)
    around its axis, in its logical order."""
    uses_blas = False
    op = "SoftmaxDot"
    layout = NCHW
    algo = "direct"
    isa = None
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        if cls.isa is not None and not cpu.supports(cls.isa) or cpu.kernel_module("softmax", cls.isa) is None:
            return False
        return all_float32(specs[:1], layer.out_specs) and specs[0].size > 0

    @classmethod
    def prepare(cls, layer):
        w = np.ascontiguousarray(layer.consts[1], np.float32).reshape(-1)
        return w, float(np.asarray(layer.consts[2]).reshape(-1)[0]) if 2 in layer.consts else 0.0

    @classmethod
    def _call(cls, layer, state, x, out):
        shape, axis = x.shape, layer.attrs["axis"]
        outer, inner = int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis + 1:], dtype=np.int64))
        kernel, (w, bias) = cpu.kernel_module("softmax", cls.isa).softmax_dot, state
        return lambda num_threads: kernel(x, w, bias, out, outer, shape[axis], inner, num_threads)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._call(layer, state, args[0], outs[0])(num_threads)

    @classmethod
    def bind(cls, layer, state, args, outs):
        return cls._call(layer, state, args[0], outs[0])


def _dot_variant(isa):
    suffix = f"_{isa}" if isa else ""
    return type(f"SoftmaxDotNCHW{suffix.upper()}", (_SoftmaxDot,),
                {"algo": "direct" + suffix, "isa": isa, "__module__": __name__,
                 "priority": 10 + (2 if isa == "avx512" else 1 if isa else 0)})


for _isa in (None, "avx2", "avx512"):
    _cls = _dot_variant(_isa)
    globals()[_cls.__name__] = _cls
