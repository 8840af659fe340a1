"""``cpu:float32:{nchw,nhwc}/direct``: MaxPool, AveragePool and the global pools, and
ReduceMean over the spatial axes of a 4-D tensor (a global average pool as exporters also write
it: PP-OCRv5/v6's squeeze-excite blocks), on the same kernels.

The window tables (``workbench._kernels.pool.Pool2d``) depend on the input's spatial size, which
:meth:`prepare` does not see (it gets the layer alone): they are built on the first run and kept
in the layer's state, keyed by the input shape.  NCHW runs one output row per job; NHWC one row
of pixels per job, vectorised over channels.  1-D pools (rank-3, always channels-first) run as
2-D ones of height 1.
"""
from ..ir.graph import NCHW, NHWC
from . import Routine
from .eltwise import all_float32, kernels, memo


def _as_2d(attrs):
    """Kernel, strides, dilations and (top, left, bottom, right) pads of a 1-D or 2-D pool."""
    k, s, d, p = attrs["kernel_shape"], attrs["strides"], attrs["dilations"], attrs["pads"]
    if len(k) == 1:
        return (1, k[0]), (1, s[0]), (1, d[0]), (0, p[0], 0, p[1])
    return tuple(k), tuple(s), tuple(d), tuple(p)


class _Window(Routine, register=False):
    uses_blas = False
    op = ("MaxPool", "AveragePool")
    algo = "direct"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        rank = len(specs[0].shape)
        return (rank in ((3, 4) if cls.layout == NCHW else (4,)) and len(layer.attrs["kernel_shape"]) == rank - 2
                and len(layer.outputs) == 1 and all_float32(specs, layer.out_specs))

    @classmethod
    def prepare(cls, layer):
        return {}

    @classmethod
    def _plan(cls, layer, in_hw, out_hw):
        """The window tables for a pool of ``in_hw`` into ``out_hw`` pixels."""
        kernel, strides, dilations, pads = _as_2d(layer.attrs)
        return kernels("pool").Pool2d(in_hw, out_hw, kernel, strides, dilations, pads, layer.op == "MaxPool",
                                      bool(layer.attrs.get("count_include_pad", 0)))

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        # the scratch rows of a separable window
        x, y = specs[0].shape, layer.out_specs[0].shape
        return cls._plan(layer, (1, *x[2:])[-2:], (1, *y[2:])[-2:]).scratch_bytes(x[0], x[1], cls.layout == NHWC,
                                                                                  num_threads)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        if x.ndim == 3:
            x, y = x[:, :, None, :], y[:, :, None, :]
        hw = (lambda a: a.shape[1:3]) if cls.layout == NHWC else (lambda a: a.shape[2:])
        plan = memo(state, x.shape, lambda: cls._plan(layer, hw(x), hw(y)))
        (plan.nchw if cls.layout == NCHW else plan.nhwc)(x, y, num_threads, state.get("workspace"))


class PoolNchw(_Window):
    layout = NCHW


class PoolNhwc(_Window):
    layout = NHWC
    strided_in = strided_out = True   # pixel strides of their own: SPPF's pools read and write Concat parts


class _Global(Routine, register=False):
    uses_blas = False
    op = ("GlobalAveragePool", "GlobalMaxPool")
    algo = "direct"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        rank = len(specs[0].shape)
        return (rank >= 3 if cls.layout == NCHW else rank == 4) and all_float32(specs, layer.out_specs)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        k = kernels("pool")
        (k.global_pool_nchw if cls.layout == NCHW else k.global_pool_nhwc)(
            args[0], outs[0], layer.op == "GlobalMaxPool", num_threads)


class GlobalPoolNchw(_Global):
    layout = NCHW


class GlobalPoolNhwc(_Global):
    layout = NHWC


class _SpatialMean(Routine, register=False):
    """ReduceMean over axes (2, 3) of a 4-D float32 tensor, keepdims or not: the global average
    pool's kernels (the NumPy reduction took 1.2 ms of PP-OCRv6 det's run, ORT 0.24)."""

    uses_blas = False
    op = "ReduceMean"
    algo = "direct"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        x = specs[0]
        axes = layer.attrs.get("axes")
        return (len(x.shape) == 4 and all_float32(specs[:1], layer.out_specs) and bool(axes)
                and sorted(int(a) % 4 for a in axes) == [2, 3] and len(set(int(a) % 4 for a in axes)) == 2
                and min(x.shape) > 0)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        k = kernels("pool")
        if cls.layout == NCHW:
            k.global_pool_nchw(x, y.reshape(x.shape[0], x.shape[1], 1, 1), False, num_threads)
        else:
            k.global_pool_nhwc(x, y.reshape(x.shape[0], 1, 1, x.shape[3]), False, num_threads)


class SpatialMeanNchw(_SpatialMean):
    layout = NCHW


class SpatialMeanNhwc(_SpatialMean):
    layout = NHWC
