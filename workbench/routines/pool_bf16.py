"""``cpu:bfloat16:nhwc/direct``: MaxPool, AveragePool, the global pools and the spatial ReduceMean
on bfloat16 NHWC images (``kernels_pyx/pool_bf16.pyx``), so that a network's pools keep it in
bfloat16 between convolutions instead of casting out and back.  The window tables are the float32
pools' (:mod:`.pool`); values widen to float32 in registers and round once, on store (a maximum
is exact).  Offered where the CPU has AVX512-BF16, to a tuning that allows bfloat16.
"""
from ..ir.graph import NHWC
from ..runtime import cpu
from . import Routine
from . import conv_bf16
from .eltwise import all_float32, memo
from .pool import _as_2d


def _kernels():
    # offered where the bfloat16 GEMM is (conv_bf16 says whether this machine has bfloat16 at all)
    if conv_bf16._kernels() is None:
        return None
    mod = cpu.kernel_module("pool_bf16", "avx512bf16")
    return mod if mod is not None and mod.available else None


class _PoolBf16(Routine, register=False):
    dtype = "bfloat16"
    layout = NHWC
    uses_blas = False
    requires = conv_bf16.REQUIRES
    algo = "direct"
    priority = 10

    @classmethod
    def available(cls):
        return _kernels() is not None

    @classmethod
    def _image(cls, layer, specs):
        return (_kernels() is not None and len(specs[0].shape) == 4 and len(layer.outputs) == 1
                and all_float32(specs[:1], layer.out_specs))


class PoolNhwcBf16(_PoolBf16):
    op = ("MaxPool", "AveragePool")

    @classmethod
    def applies(cls, layer, specs):
        return cls._image(layer, specs) and len(layer.attrs["kernel_shape"]) == 2

    @classmethod
    def prepare(cls, layer):
        return {}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]

        def plan():
            kernel, strides, dilations, pads = _as_2d(layer.attrs)
            return _kernels().Pool2dBf16(x.shape[1:3], y.shape[1:3], kernel, strides, dilations, pads,
                                         layer.op == "MaxPool", bool(layer.attrs.get("count_include_pad", 0)))
        memo(state, x.shape, plan).nhwc(x, y, num_threads)


class GlobalPoolNhwcBf16(_PoolBf16):
    op = ("GlobalAveragePool", "GlobalMaxPool")

    @classmethod
    def applies(cls, layer, specs):
        return cls._image(layer, specs)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        _kernels().global_pool_nhwc(args[0], outs[0], layer.op == "GlobalMaxPool", num_threads)


class SpatialMeanNhwcBf16(_PoolBf16):
    """ReduceMean over axes (2, 3), keepdims or not (a (N, C) result is not an image: it keeps
    its native order)."""

    op = "ReduceMean"

    @classmethod
    def applies(cls, layer, specs):
        axes = layer.attrs.get("axes")
        return (cls._image(layer, specs) and bool(axes) and sorted(int(a) % 4 for a in axes) == [2, 3]
                and len(set(int(a) % 4 for a in axes)) == 2 and min(specs[0].shape) > 0)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x = args[0]
        _kernels().global_pool_nhwc(x, outs[0].reshape(x.shape[0], 1, 1, x.shape[3]), False, num_threads)
