"""Winograd Conv routines on our own AVX-512 SGEMM: ``cpu:float32:{nchw,nhwc}/winograd{2,4}_avx512``.

The same transforms and numerics as ``winograd2``/``winograd4`` (``conv_winograd.py``, whose
:data:`~.conv_winograd.RTOL` bounds hold here too); the (m+2)^2 transform-domain GEMMs run on
``kernels_pyx/winograd512.pyx`` (``sgemm_avx512.h``) instead of OpenBLAS, which the environment
caps at its Haswell kernels, with the transformed weights packed once in :meth:`prepare`.
Offered only where the CPU has AVX-512 and ``winograd512_avx512`` is built; never calls the
BLAS, so needs no BLAS limit.
"""
from __future__ import annotations

from ..runtime import cpu
from ..ir.graph import NCHW, NHWC
from .conv_winograd import _Winograd


def _kernels():
    mod = cpu.kernel_module("winograd512", "avx512")
    return mod if mod is not None and mod.available else None


#: Tiles a thread needs before NHWC layers run in mode 1 (see :func:`plan`).
NHWC_LOCAL_TILES = 24


def plan(m, n, c, h, w, mo, num_threads, nhwc=False):
    """(tile rows per block, parallel mode) for a layer with output ``h`` x ``w``.

    Measured on ResNet-50's and VGG-16's 3x3 layers (2 threads): the whole layer at once in
    mode 0 while V and Mo stay under ~16 MB (up to VGG's 56x56x256); beyond that (VGG's 224x224
    and 112x112 layers) blocks of ~2 MB of V and Mo per thread in mode 1, which measured as fast
    as mode 0 on an idle machine and 2-4x faster than it under load (no waits between the stages).
    NHWC with threads and at least NHWC_LOCAL_TILES tiles a thread: mode 1, each thread its own
    tile rows in blocks of up to ~1 MB of V and Mo (its L2), so that nothing crosses cores
    (measured in the model: ResNet-50's 56x56x64 layers 0.50 -> 0.31-0.43 ms); with fewer
    tiles the 12-row micro-kernel runs part-empty, and with few tile rows that do not divide
    among the threads (28x28: 7 rows, 3 + 4) one thread waits for the other, so mode 0.
    """
    tw, th = -(-w // m), -(-h // m)
    per_row = (m + 2) ** 2 * (c + mo) * 4 * tw      # bytes of V and Mo per tile row
    rows = n * th
    if (nhwc and num_threads > 1 and rows * tw >= NHWC_LOCAL_TILES * num_threads
            and (rows % num_threads == 0 or rows >= 8 * num_threads)):
        return max(1, min((1 << 20) // per_row, -(-n * th // num_threads))), 1
    if per_row * n * th <= 16 << 20:
        return n * th, 0
    return max(1, min((2 << 20) // per_row, -(-n * th // num_threads))), 1


class _Winograd512(_Winograd, register=False):
    uses_blas = False
    #: Preference where measured faster than the BLAS Winograd routines (``winograd4``: 12),
    #: ``im2col_avx512`` (11.5) and each other: 3x3 stride-1 layers with ``min_pixels`` <= output
    #: pixels < ``max_pixels`` and at least ``min_channels`` inputs; ``slow_priority`` elsewhere.
    fast_priority, slow_priority = None, 5
    min_pixels, max_pixels, min_channels = 0, float("inf"), 1

    @classmethod
    def preference(cls, layer, specs):
        out = layer.out_specs[0].shape
        fast = (cls.fast_priority is not None and cls.min_pixels <= out[2] * out[3] < cls.max_pixels
                and specs[0].shape[1] >= cls.min_channels)
        return cls.fast_priority if fast else cls.slow_priority

    @classmethod
    def kernels(cls):
        return _kernels()

    @classmethod
    def pack(cls, k, u):
        return k.pack_u(u, cls.layout == NHWC)   # per frequency, once

    @classmethod
    def tile_plan(cls, n, c, h, w, mo, num_threads):
        return plan(cls.m, n, c, h, w, mo, num_threads, cls.layout == NHWC)

    @classmethod
    def call(cls, kernel, *args, **kwargs):
        kernel(*args, **kwargs)   # our own SGEMM: no BLAS to limit


class Winograd2Avx512(_Winograd512):
    algo, m, layout = "winograd2_avx512", 2, NCHW
    # ResNet-50's 14x14 and 7x7 layers: 1.3x / 1.1x faster than winograd4_avx512 / im2col_avx512.
    fast_priority, max_pixels = 12.6, 28 * 28


class Winograd4Avx512(_Winograd512):
    algo, m, layout = "winograd4_avx512", 4, NCHW
    # 7x7 outputs: slower than winograd4 and im2col_avx512 (an image's 4 tiles, the GEMM's
    # columns, fill an eighth of a 32-wide panel).
    fast_priority, slow_priority, min_pixels = 12.5, 10.4, 14 * 14


class Winograd2NhwcAvx512(_Winograd512):
    algo, m, layout = "winograd2_avx512", 2, NHWC
    strided_out = True   # the output transform writes each pixel's channels where told
    # ResNet-50's 14x14 and 7x7 layers: faster than winograd4_avx512 and im2col_avx512.
    fast_priority, max_pixels = 12.6, 28 * 28


class Winograd4NhwcAvx512(_Winograd512):
    algo, m, layout = "winograd4_avx512", 4, NHWC
    strided_out = True   # the output transform writes each pixel's channels where told
    # 7x7 outputs: tied with im2col_avx512; VGG's first layer (3 input channels): im2col_avx512
    # measured 1.3x faster.
    fast_priority, slow_priority, min_pixels, min_channels = 12.5, 11, 14 * 14, 16
