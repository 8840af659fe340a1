"""GEMM-based float32 2-D convolutions in both layouts: ``im2col`` and ``gemm1x1``.

``cpu:float32:nchw/im2col`` gathers im2col columns ``(C/g*KH*KW, pixels)`` into its workspace
(:meth:`Routine.workspace`) and multiplies ``W(M/g, C/g*KH*KW)`` by them; ``cpu:float32:nhwc/im2col`` gathers
rows ``(pixels, KH*KW*C/g)`` and multiplies them by weights packed ``(KH*KW*C/g, M/g)`` per group.
The ``gemm1x1`` routines take 1x1 unpadded convolutions as a plain GEMM on the input itself
(stride 1) or on the strided pixels gathered first.  Bias, residual and activation are applied
to each GEMM block right after it is written (``kernels_pyx/conv_gemm.pyx``).

All parallelism is the kernels' thread pool's: pixel tiles run in parallel when there are enough
of them, otherwise the GEMM of each tile is split over output channels.  The BLAS itself is kept
single-threaded during the call, so its threads never compete with ours.
"""
from __future__ import annotations

import numpy as np

from ..runtime import cpu
from ..runtime.blas import SerialBlas
from ..runtime.compiled import default_threads
from ..ir.graph import NCHW, NHWC
from ..ir.ops.conv import residual_after_activation
from . import Routine
from .conv_depthwise import depthwise_applies
from .epilogue import encode

# Column-tile bytes per thread: up to this, larger tiles still gained a few percent on VGG-16
# (fewer BLAS calls, each packing the weights); it also bounds the shared scratch.
TILE_BYTES = 8 << 20
# Below this many output pixels per thread, split each GEMM over output channels instead.  NHWC
# splits sooner: its split GEMM runs transposed, pixels on the BLAS's short side, which pays off
# up to ResNet-50's 14x14 layers.
MIN_PIXELS = {NCHW: 64, NHWC: 128}

def _kernels():
    return cpu.kernel_module("conv_gemm")


def geometry(layer):
    """``(kernel, strides, dilations, pads as (top, left, bottom, right), group)`` of a 2-D Conv."""
    a = layer.attrs
    p = a["pads"]
    return (tuple(a["kernel_shape"]), tuple(a["strides"]), tuple(a["dilations"]), (p[0], p[1], p[2], p[3]),
            a["group"])


def schedule(pixels, images, groups, kg, mg, num_threads, nhwc, direct=False):
    """``(tile, parallel_tiles)``: output pixels per job and whether whole jobs run in parallel.

    ``pixels`` are the pixels one job may span (an image's for NCHW, the whole batch's for NHWC)
    and ``images`` how many such spans there are.  Measured on ResNet-50's and VGG-16's layers
    with 2 threads: one job per thread is best wherever there are enough pixels, tiles capped at
    :data:`TILE_BYTES` of columns.  Small images are faster with each GEMM split over output
    channels, all threads sharing one column tile; so are NCHW layers with at least half as many
    output channels as GEMM depth (the weights outweigh the columns), unless that depth is tiny
    (VGG's first layer, 27, runs faster in tiles).
    """
    cap = pixels if direct else max(16, TILE_BYTES // (4 * kg))
    if num_threads <= 1:
        return min(pixels, cap), False
    few_pixels = pixels * images * groups < MIN_PIXELS[NHWC if nhwc else NCHW] * num_threads
    if few_pixels or (not nhwc and 2 * mg >= kg >= 64):
        return min(pixels, cap), False
    tiles = -(-pixels // cap)
    while (images * groups * tiles) % num_threads and tiles < pixels:
        tiles += 1
    return -(-pixels // tiles), True


class _ConvGemm(Routine, register=False):
    op = "Conv"
    priority = 10
    #: 1x1 unpadded kernels only, GEMM without im2col where the stride allows.
    one_by_one = False
    #: Whether the kernels apply a fused post-activation affine (``encode``'s ``post_affine``).
    post_affine = False

    @classmethod
    def applies(cls, layer, specs):
        if _kernels() is None or len(specs) < 2 or specs[0] is None:
            return False
        x, w, out = specs[0], layer.consts.get(1), layer.out_specs[0]
        if len(x.shape) != 4 or x.dtype != "float32" or out.dtype != "float32" or w is None:
            return False
        if w.ndim != 4 or w.dtype != np.float32:
            return False
        (kh, kw), _, _, pads, group = geometry(layer)
        if group > 1 and x.shape[1] // group == 1 and depthwise_applies(layer, specs):
            return False  # depthwise: a GEMM per channel; the direct kernels do better where they apply
        if len(specs) > 2 and specs[2] is not None and specs[2].dtype != "float32":
            return False
        if layer.attrs.get("residual") and (len(specs) < 4 or specs[3] is None or specs[3].shape != out.shape
                                            or specs[3].dtype != "float32"):
            return False
        if cls.one_by_one and ((kh, kw) != (1, 1) or any(pads)):
            return False
        return encode(layer, out.shape[1], extended=True, post_affine=cls.post_affine) is not None

    @classmethod
    def _direct(cls, layer):
        return cls.one_by_one and tuple(layer.attrs["strides"]) == (1, 1)

    @classmethod
    def _pack(cls, w, group, split):
        """The weights as the kernel wants them for a schedule (``split``: GEMM split over channels)."""
        raise NotImplementedError

    @classmethod
    def prepare(cls, layer):
        w = np.asarray(layer.consts[1], np.float32)
        m, cg, kh, kw = w.shape
        group = layer.attrs["group"]
        n, _, oh, ow = layer.out_specs[0].shape
        epi = encode(layer, m, extended=True)
        bias = layer.consts.get(2)
        state = {
            "w": w,
            "packed": {},
            "bias": None if bias is None else np.ascontiguousarray(bias, np.float32),
            "epi": epi,
            "geometry": geometry(layer),
            "direct": cls._direct(layer),
            "kg": cg * kh * kw,
            "mg": m // group,
            "spans": (n * oh * ow, 1) if cls.layout == NHWC else (oh * ow, n),
            "plans": {},
        }
        cls._plan(state, group, default_threads())
        return state

    @classmethod
    def _schedule(cls, layer, num_threads):
        """``(tile, parallel_tiles, scratch floats)`` of ``layer`` run with ``num_threads``."""
        w = layer.consts[1]
        m, cg, kh, kw = w.shape
        group = layer.attrs["group"]
        n, _, oh, ow = layer.out_specs[0].shape
        pixels, images = (n * oh * ow, 1) if cls.layout == NHWC else (oh * ow, n)
        nhwc, kg, mg, direct = cls.layout == NHWC, cg * kh * kw, m // group, cls._direct(layer)
        tile, par = schedule(pixels, images, group, kg, mg, num_threads, nhwc, direct)
        return tile, par, _kernels().scratch_floats(nhwc, kg, mg, tile, par, direct, num_threads)

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        # the im2col columns, tile by tile: run with any thread count up to num_threads
        return 4 * max(cls._schedule(layer, t)[2] for t in range(1, num_threads + 1))

    @classmethod
    def _plan(cls, state, groups, num_threads):
        """``(tile, parallel_tiles, scratch floats, packed weights)`` for ``num_threads``, cached;
        packs the weights for the schedule if not done yet."""
        plan = state["plans"].get(num_threads)
        if plan is None:
            pixels, images = state["spans"]
            nhwc = cls.layout == NHWC
            tile, par = schedule(pixels, images, groups, state["kg"], state["mg"], num_threads, nhwc,
                                 state["direct"])
            need = _kernels().scratch_floats(nhwc, state["kg"], state["mg"], tile, par, state["direct"], num_threads)
            split = num_threads > 1 and not par
            if split not in state["packed"]:
                state["packed"][split] = cls._pack(state["w"], groups, split)
            plan = state["plans"][num_threads] = (tile, par, need, state["packed"][split])
        return plan

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        kernel, strides, dilations, pads, group = state["geometry"]
        tile, par, need, w = cls._plan(state, group, num_threads)
        bias = state["bias"]
        if bias is None and len(args) > 2 and args[2] is not None:
            bias = np.ascontiguousarray(args[2], np.float32)
        residual = args[3] if layer.attrs.get("residual") else None
        epi = state["epi"]
        fn = _kernels().conv2d_nhwc if cls.layout == NHWC else _kernels().conv2d_nchw
        with SerialBlas():
            fn(args[0], w, bias, residual, outs[0], _floats(state, need) if need else None, kernel, strides,
               dilations, pads, group, epi.code, epi.p0, epi.p1, epi.slope, tile, par, state["direct"], num_threads,
               residual_after_activation(layer))


def _floats(state, need):
    """``need`` float32s of the workspace (a new array where the state has none attached)."""
    ws = state.get("workspace")
    if ws is None:
        return np.empty(need, np.float32)
    return ws[:4 * need].view(np.float32)


class _Nchw(_ConvGemm, register=False):
    layout = NCHW

    @classmethod
    def _pack(cls, w, group, split):
        return np.ascontiguousarray(w.reshape(w.shape[0], -1))


class _Nhwc(_ConvGemm, register=False):
    layout = NHWC

    @classmethod
    def _pack(cls, w, group, split):
        # GEMM depth in the order the NHWC gather writes it, (ki, kj, channel): (M, K) for a GEMM
        # split over channels, else (g, K, M/g), so each group's block multiplies its rows.
        m, cg, kh, kw = w.shape
        if split:
            return np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(m, kh * kw * cg))
        return np.ascontiguousarray(w.reshape(group, m // group, cg, kh, kw).transpose(0, 3, 4, 2, 1)
                                    .reshape(group, kh * kw * cg, m // group))


class NchwIm2col(_Nchw):
    algo = "im2col"


class NhwcIm2col(_Nhwc):
    algo = "im2col"


class NchwGemm1x1(_Nchw):
    algo = "gemm1x1"
    priority = 11
    one_by_one = True


class NhwcGemm1x1(_Nhwc):
    algo = "gemm1x1"
    priority = 11
    one_by_one = True
