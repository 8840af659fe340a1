# isa-variants: avx512vnni
# cython: language_level=3
"""qint8 GEMM (``wb_gemm_q8.h``): uint8 activations times per-channel int8 weights, exact int32
sums, and a requantizing epilogue writing float32 (a fused dequantize) or uint8.

Only the ``_avx512vnni`` build runs the VPDPBUSD micro-kernel (``available``); the baseline build
runs scalar loops on the same packing with the same arithmetic, so the packing and the epilogue
are tested on any CPU.  Work is split over the shared thread pool (``wb_pool.h``) in (row block,
column block) jobs.  Shapes, dtypes and the int32 range of the sums are checked here, before any
``nogil`` code.
"""
import numpy as np
from workbench._kernels.buffers import aligned_zeros
cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, uint8_t

from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()


cdef extern from "wb_gemm_q8.h" nogil:
    int WBQ_NATIVE
    int WBQ_MR
    ctypedef struct wbq_args:
        const uint8_t* a
        Py_ssize_t lda, K
        const int8_t* w
        Py_ssize_t groups, N
        const int32_t* comp
        const float* mult
        const float* bias
        void* out
        Py_ssize_t ldo
        int out_u8, relu, zo
    void wbq_job(const wbq_args* p, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t b0, Py_ssize_t b1)
    void wbq_pack(const int8_t* w, Py_ssize_t N, Py_ssize_t K, int8_t* dst)

available = bool(WBQ_NATIVE)

#: The longest depth whose sums stay inside int32 (255 * 128 per term).
MAX_DEPTH = (2 ** 31 - 1) // (255 * 128)


def pack(w):
    """int8 weights ``w`` (N, K) -> ``(packed, sums)``: the VPDPBUSD layout (int8, 64-byte aligned)
    and each column's weight sum (int32 (N,), for the activations' zero point)."""
    w = np.ascontiguousarray(w)
    if w.dtype != np.int8 or w.ndim != 2 or min(w.shape) < 1:
        raise ValueError(f"gemm_q8.pack: weights must be int8 (N, K) with N, K >= 1, got {w.dtype} {w.shape}")
    cdef Py_ssize_t n = w.shape[0], k = w.shape[1]
    if k > MAX_DEPTH:
        raise ValueError(f"gemm_q8.pack: depth {k} > {MAX_DEPTH}: the int32 sums could overflow")
    packed = aligned_zeros(((n + 15) // 16, (k + 3) // 4, 64), np.int8)
    cdef const int8_t[:, ::1] wv = w
    cdef int8_t[:, :, ::1] pv = packed
    with nogil:
        wbq_pack(&wv[0, 0], n, k, &pv[0, 0, 0])
    return packed, w.sum(axis=1, dtype=np.int32)


cdef enum:
    ROWS = 48     # rows a job: a multiple of the micro-tile's
    COLS = 8      # 16-column blocks a job


cdef struct _Ctx:
    wbq_args args
    Py_ssize_t M, blocks, row_blocks, col_blocks, per


cdef void _chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _Ctx* c = <_Ctx*> ctx
    cdef Py_ssize_t job, rb, cb
    cdef Py_ssize_t j0 = chunk * c.per, j1 = min(j0 + c.per, c.row_blocks * c.col_blocks)
    for job in range(j0, j1):
        rb, cb = job // c.col_blocks, job % c.col_blocks
        wbq_job(&c.args, rb * ROWS, min((rb + 1) * ROWS, c.M), cb * COLS, min((cb + 1) * COLS, c.blocks))


def gemm(a, packed, Py_ssize_t n, comp, mult, bias, out, int zo=0, bint relu=False, int num_threads=1):
    """``out = epilogue(a @ w.T - comp)`` for uint8 ``a`` (M, K) and ``packed`` from :func:`pack`
    of ``w`` (n, K): float32 ``out`` gets ``s * mult + bias`` (``relu``: max with 0), uint8 ``out``
    ``clamp(round_even(s * mult + bias) + zo, relu ? zo : 0, 255)``; ``comp``, int32 (n,), is
    usually the activations' zero point times the weight sums, ``mult`` and ``bias`` float32 (n,)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 2 or a.strides[1] != 1 or a.shape[0] < 1:
        raise ValueError(f"gemm_q8.gemm: a must be uint8 (M, K) with unit column stride, got "
                         f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1]
    if (not isinstance(packed, np.ndarray) or packed.dtype != np.int8 or packed.ndim != 3
            or packed.shape != ((n + 15) // 16, (k + 3) // 4, 64) or not packed.flags.c_contiguous
            or packed.ctypes.data % 64):
        raise ValueError(f"gemm_q8.gemm: packed weights for ({n}, {k}) must be int8 "
                         f"{((n + 15) // 16, (k + 3) // 4, 64)}, C-contiguous and 64-byte aligned (gemm_q8.pack), "
                         f"got {getattr(packed, 'shape', type(packed))}")
    for name, v, dt in (("comp", comp, np.int32), ("mult", mult, np.float32), ("bias", bias, np.float32)):
        if not isinstance(v, np.ndarray) or v.dtype != dt or v.shape != (n,) or not v.flags.c_contiguous:
            raise ValueError(f"gemm_q8.gemm: {name} must be {np.dtype(dt)} ({n},) contiguous, got "
                             f"{getattr(v, 'dtype', type(v))} {getattr(v, 'shape', '')}")
    if (not isinstance(out, np.ndarray) or out.dtype not in (np.float32, np.uint8) or out.shape != (m, n)
            or out.strides[1] != out.itemsize):
        raise ValueError(f"gemm_q8.gemm: out must be float32 or uint8 ({m}, {n}) with unit column stride, got "
                         f"{getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if out.dtype == np.uint8 and not 0 <= zo <= 255:
        raise ValueError(f"gemm_q8.gemm: a uint8 output's zero point must lie in [0, 255], got {zo}")
    if np.shares_memory(a, out):
        raise ValueError("gemm_q8.gemm: out overlaps a")
    cdef const uint8_t[:, :] av = a
    cdef const int8_t[:, :, ::1] pv = packed
    cdef const int32_t[::1] cv = comp
    cdef const float[::1] mv = mult
    cdef const float[::1] bv = bias
    cdef cnp.ndarray o = out
    cdef _Ctx c
    c.args.a = &av[0, 0]
    c.args.lda = a.strides[0]
    c.args.K = k
    c.args.w = &pv[0, 0, 0]
    c.args.groups = (k + 3) // 4
    c.args.N = n
    c.args.comp = &cv[0]
    c.args.mult = &mv[0]
    c.args.bias = &bv[0]
    c.args.out = <void*> cnp.PyArray_DATA(o)
    c.args.ldo = out.strides[0] // out.itemsize
    c.args.out_u8 = out.dtype == np.uint8
    c.args.relu = relu
    c.args.zo = zo
    c.M = m
    c.row_blocks = (m + ROWS - 1) // ROWS
    c.blocks = (n + 15) // 16
    c.col_blocks = (c.blocks + COLS - 1) // COLS
    c.per = wb_jobs_per_chunk(c.row_blocks * c.col_blocks, ROWS * COLS * 16 * k // 64 + 1, num_threads)
    with nogil:
        wb_pool_run(_chunk, &c, (c.row_blocks * c.col_blocks + c.per - 1) // c.per, num_threads)
    return out


cdef extern from "wb_dw_q8.h" nogil:
    ctypedef struct wbd_args:
        const uint8_t* x
        Py_ssize_t H, W, C
        const int32_t* w
        Py_ssize_t Cp, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW
        int zx
        wbq_args epi
    void wbd_row(const wbd_args* p, Py_ssize_t n, Py_ssize_t oh)


def pack_depthwise(w):
    """Depthwise int8 weights ``w`` (C, 1, KH, KW) -> int32 (ceil(KH * KW / 2), C rounded up to
    16), 64-byte aligned: per pair of taps (in row, column order) and channel, the two weights as
    int16, the first in the low half (zero past C and past the last tap)."""
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 4 or w.shape[1] != 1 or min(w.shape) < 1:
        raise ValueError(f"gemm_q8.pack_depthwise: weights must be int8 (C, 1, KH, KW), got {w.dtype} {w.shape}")
    c, _, kh, kw = w.shape
    taps = np.zeros(((kh * kw + 1) // 2 * 2, c), np.int16)
    taps[:kh * kw] = w[:, 0].reshape(c, kh * kw).T
    out = aligned_zeros((taps.shape[0] // 2, (c + 15) // 16 * 16), np.int32)
    out[:, :c] = taps.reshape(-1, 2, c).transpose(0, 2, 1).copy().view(np.int32)[..., 0]
    return out


cdef struct _DwCtx:
    wbd_args args
    Py_ssize_t rows, per


cdef void _dw_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _DwCtx* c = <_DwCtx*> ctx
    cdef Py_ssize_t r
    for r in range(chunk * c.per, min((chunk + 1) * c.per, c.rows)):
        wbd_row(&c.args, r // c.args.OH, r % c.args.OH)


def depthwise(x, wp, kernel, strides, dilations, pads, int zx, mult, bias, out, int zo=0, bint relu=False,
              int num_threads=1):
    """qint8 depthwise convolution of uint8 NHWC ``x`` (N, H, W, C) with ``wp`` from
    :func:`pack_depthwise`: ``sum (x - zx) * w`` over each window, then :func:`gemm`'s epilogue
    per channel into float32 or uint8 ``out`` (N, OH, OW, C); ``pads`` (top, left, bottom, right)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or not x.flags.c_contiguous:
        raise ValueError(f"gemm_q8.depthwise: x must be a C-contiguous uint8 (N, H, W, C) array, got "
                         f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
    cdef Py_ssize_t n = x.shape[0], h = x.shape[1], w = x.shape[2], c = x.shape[3]
    kh, kw = (int(v) for v in kernel)
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilations)
    pt, pl, pb, pr = (int(v) for v in pads)
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0 or min(n, h, w, c) < 1:
        raise ValueError(f"gemm_q8.depthwise: bad geometry kernel {kernel} strides {strides} dilations {dilations} "
                         f"pads {pads} for x {x.shape}")
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"gemm_q8.depthwise: the output of x {x.shape} with kernel {kernel} is empty")
    cp = (c + 15) // 16 * 16
    if (not isinstance(wp, np.ndarray) or wp.dtype != np.int32 or wp.shape != ((kh * kw + 1) // 2, cp)
            or not wp.flags.c_contiguous or wp.ctypes.data % 64):
        raise ValueError(f"gemm_q8.depthwise: packed weights must be int32 ({(kh * kw + 1) // 2}, {cp}), C-contiguous and "
                         f"64-byte aligned (pack_depthwise), got {getattr(wp, 'shape', type(wp))}")
    if not 0 <= zx <= 255:
        raise ValueError(f"gemm_q8.depthwise: the image's zero point must lie in [0, 255], got {zx}")
    for name, v in (("mult", mult), ("bias", bias)):
        if not isinstance(v, np.ndarray) or v.dtype != np.float32 or v.shape != (c,) or not v.flags.c_contiguous:
            raise ValueError(f"gemm_q8.depthwise: {name} must be float32 ({c},) contiguous")
    if (not isinstance(out, np.ndarray) or out.dtype not in (np.float32, np.uint8) or out.shape != (n, oh, ow, c)
            or not out.flags.c_contiguous or np.shares_memory(x, out)):
        raise ValueError(f"gemm_q8.depthwise: out must be a C-contiguous float32 or uint8 ({n}, {oh}, {ow}, {c}) "
                         f"array apart from x, got {getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if out.dtype == np.uint8 and not 0 <= zo <= 255:
        raise ValueError(f"gemm_q8.depthwise: a uint8 output's zero point must lie in [0, 255], got {zo}")
    cdef const uint8_t[:, :, :, ::1] xv = x
    cdef const int32_t[:, ::1] wv = wp
    cdef const float[::1] mv = mult
    cdef const float[::1] bv = bias
    cdef cnp.ndarray o = out
    cdef _DwCtx d
    d.args.x, d.args.H, d.args.W, d.args.C = &xv[0, 0, 0, 0], h, w, c
    d.args.w, d.args.Cp, d.args.KH, d.args.KW = &wv[0, 0], cp, kh, kw
    d.args.SH, d.args.SW, d.args.DH, d.args.DW, d.args.PT, d.args.PL = sh, sw, dh, dw, pt, pl
    d.args.OH, d.args.OW, d.args.zx = oh, ow, zx
    d.args.epi.comp, d.args.epi.mult, d.args.epi.bias = NULL, &mv[0], &bv[0]
    d.args.epi.out = <void*> cnp.PyArray_DATA(o)
    d.args.epi.ldo, d.args.epi.N = c, c
    d.args.epi.out_u8, d.args.epi.relu, d.args.epi.zo = out.dtype == np.uint8, relu, zo
    d.rows = n * oh
    d.per = wb_jobs_per_chunk(d.rows, ow * c * kh * kw, num_threads)
    with nogil:
        wb_pool_run(_dw_chunk, &d, (d.rows + d.per - 1) // d.per, num_threads)
    return out
