# isa-variants: avx2, avx512
# cython: language_level=3
"""Pooling of qint8 (uint8) NHWC tensors: MaxPool, whose output keeps its input's scale and zero
point (a maximum of the integers is the integer of the maximum), and the global average pool,
whose exact int32 channel sums are requantized to the output's parameters or written as float32.

Plain loops over channels, vectorised by the compiler in each ISA build; shapes are checked
before any ``nogil`` code, and the work is split over the shared thread pool (``wb_pool.h``).
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport nearbyintf
from libc.stdint cimport int32_t, uint8_t
from libc.string cimport memset

from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()


cdef struct _MaxCtx:
    const uint8_t* x
    uint8_t* out
    Py_ssize_t H, W, C, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW, rows, per


cdef void _max_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _MaxCtx* p = <_MaxCtx*> ctx
    cdef Py_ssize_t r, n, oh, ow, i, j, ih, iw, c, C = p.C
    cdef uint8_t* dst
    cdef const uint8_t* src
    for r in range(chunk * p.per, min((chunk + 1) * p.per, p.rows)):
        n, oh = r // p.OH, r % p.OH
        for ow in range(p.OW):
            dst = p.out + (r * p.OW + ow) * C
            memset(dst, 0, C)   # taps in the padding are skipped; a window wholly in it gives 0
            for i in range(p.KH):
                ih = oh * p.SH - p.PT + i * p.DH
                if ih < 0 or ih >= p.H:
                    continue
                for j in range(p.KW):
                    iw = ow * p.SW - p.PL + j * p.DW
                    if iw < 0 or iw >= p.W:
                        continue
                    src = p.x + ((n * p.H + ih) * p.W + iw) * C
                    for c in range(C):
                        if src[c] > dst[c]:
                            dst[c] = src[c]


def _u8_nhwc(a, who, name):
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 4 or not a.flags.c_contiguous:
        raise ValueError(f"{who}: {name} must be a C-contiguous uint8 (N, H, W, C) array, got "
                         f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")


def maxpool(x, out, kernel, strides, dilations, pads, int num_threads=1):
    """MaxPool of uint8 NHWC ``x`` into uint8 NHWC ``out``; ``pads`` (top, left, bottom, right),
    ``out``'s spatial size as the caller computed it (ceil mode included) and checked here to
    keep every window's first tap inside the padded image."""
    _u8_nhwc(x, "pool_q8.maxpool", "x")
    _u8_nhwc(out, "pool_q8.maxpool", "out")
    cdef _MaxCtx p
    n, p.H, p.W, p.C = x.shape
    p.KH, p.KW = (int(v) for v in kernel)
    p.SH, p.SW = (int(v) for v in strides)
    p.DH, p.DW = (int(v) for v in dilations)
    p.PT, p.PL = int(pads[0]), int(pads[1])
    if min(p.KH, p.KW, p.SH, p.SW, p.DH, p.DW) < 1 or min(p.PT, p.PL) < 0 or min(x.shape) < 1:
        raise ValueError(f"pool_q8.maxpool: bad geometry kernel {kernel} strides {strides} pads {pads} for x {x.shape}")
    if (out.shape[0] != n or out.shape[3] != p.C or min(out.shape) < 1 or np.shares_memory(x, out)
            or (out.shape[1] - 1) * p.SH > p.H + p.PT + int(pads[2]) - 1 or (out.shape[2] - 1) * p.SW > p.W + p.PL + int(pads[3]) - 1):
        raise ValueError(f"pool_q8.maxpool: out {out.shape} does not fit x {x.shape} with kernel {kernel} "
                         f"strides {strides} pads {pads}")
    p.OH, p.OW = out.shape[1], out.shape[2]
    p.x = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x)
    p.out = <uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> out)
    p.rows = n * p.OH
    p.per = wb_jobs_per_chunk(p.rows, p.OW * p.C * p.KH * p.KW, num_threads)
    with nogil:
        wb_pool_run(_max_chunk, &p, (p.rows + p.per - 1) // p.per, num_threads)
    return out


cdef struct _AvgCtx:
    const uint8_t* x
    void* out
    Py_ssize_t HW, C, blocks, jobs, per
    int32_t offset
    float mult, zo
    bint out_u8


cdef enum:
    CBLOCK = 64


cdef void _avg_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    """(image, block of 64 channels) jobs: the channels' int32 sums over the pixels, requantized."""
    cdef _AvgCtx* p = <_AvgCtx*> ctx
    cdef int32_t acc[CBLOCK]
    cdef Py_ssize_t job, n, c0, cols, i, c
    cdef const uint8_t* src
    cdef float y
    for job in range(chunk * p.per, min((chunk + 1) * p.per, p.jobs)):
        n, c0 = job // p.blocks, (job % p.blocks) * CBLOCK
        cols = min(<Py_ssize_t> CBLOCK, p.C - c0)
        for c in range(cols):
            acc[c] = 0
        for i in range(p.HW):
            src = p.x + (n * p.HW + i) * p.C + c0
            for c in range(cols):
                acc[c] += src[c]
        for c in range(cols):
            y = <float> (acc[c] - p.offset) * p.mult
            if p.out_u8:
                y = nearbyintf(y) + p.zo
                y = y if y >= 0 else 0
                y = y if y <= 255 else 255
                (<uint8_t*> p.out)[n * p.C + c0 + c] = <uint8_t> y
            else:
                (<float*> p.out)[n * p.C + c0 + c] = y


def global_average(x, out, int zx, float mult, int zo=0, int num_threads=1):
    """GlobalAveragePool of uint8 NHWC ``x`` (N, H, W, C) into ``out`` (N, C) (any shape of N * C
    elements, C-contiguous): ``y = (sum(x) - H * W * zx) * mult`` per channel, ``mult`` the input's
    scale over H * W (and over the output's scale for uint8 ``out``, which gets
    ``clamp(round_even(y) + zo, 0, 255)``); float32 ``out`` gets ``y``."""
    _u8_nhwc(x, "pool_q8.global_average", "x")
    n, h, w, c = x.shape
    if min(x.shape) < 1 or h * w > (2 ** 31 - 1) // 255:
        raise ValueError(f"pool_q8.global_average: x {x.shape} is empty or its sums could overflow")
    if (not isinstance(out, np.ndarray) or out.dtype not in (np.uint8, np.float32) or out.size != n * c
            or not out.flags.c_contiguous or (out.ndim and out.shape[0] != n)):
        raise ValueError(f"pool_q8.global_average: out must be a C-contiguous uint8 or float32 array of ({n}, {c}) "
                         f"elements, got {getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if not (0 <= zx <= 255 and 0 <= zo <= 255):
        raise ValueError(f"pool_q8.global_average: zero points must lie in [0, 255], got {zx} and {zo}")
    cdef _AvgCtx p
    p.x = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x)
    p.out = cnp.PyArray_DATA(<cnp.ndarray> out)
    p.HW, p.C, p.offset, p.mult, p.zo = h * w, c, h * w * zx, mult, zo
    p.out_u8 = out.dtype == np.uint8
    p.blocks = (c + CBLOCK - 1) // CBLOCK
    p.jobs = n * p.blocks
    p.per = wb_jobs_per_chunk(p.jobs, h * w * CBLOCK, num_threads)
    with nogil:
        wb_pool_run(_avg_chunk, &p, (p.jobs + p.per - 1) // p.per, num_threads)
    return out
