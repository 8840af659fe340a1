# isa-variants: avx2, avx512
# cython: language_level=3
"""Cast adapts between float32 and bfloat16, alone or fused with the NCHW/NHWC transpose, and
that transpose on bfloat16 tensors.

bfloat16 is the upper half of a float32.  float32 -> bfloat16 rounds to nearest, ties to even
(what ``ml_dtypes`` and the AVX512-BF16 conversion instructions do), so a value past the largest
bfloat16 rounds to infinity; a NaN stays a NaN (quietened, its sign kept).  bfloat16 -> float32
is exact.  The element loops are plain integer arithmetic with no branches, which GCC vectorises
in every ISA build.  bfloat16 arrays are NumPy arrays of ``ml_dtypes.bfloat16`` (read and written
here as 16-bit words).  Work is split over the shared thread pool (``wb_pool.h``); shapes and
dtypes are checked before any ``nogil`` loop runs.
"""
import ml_dtypes
import numpy as np
from workbench._kernels.checks import conversion_pair as _pair
cimport numpy as cnp
from libc.stdint cimport uint16_t, uint32_t

from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()

BF16 = np.dtype(ml_dtypes.bfloat16)

cdef Py_ssize_t BLOCK = 16384   # elements per job of the flat casts
cdef Py_ssize_t TILE = 32       # the fused transposes' square tiles


cdef inline uint16_t _to_bf16(uint32_t u) noexcept nogil:
    cdef uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16
    cdef uint32_t quiet = (u >> 16) | 0x40u
    return <uint16_t> (quiet if (u & 0x7fffffffu) > 0x7f800000u else rounded)


cdef inline uint32_t _to_f32(uint16_t h) noexcept nogil:
    return (<uint32_t> h) << 16


cdef struct _FlatCtx:
    const void* src
    void* dst
    Py_ssize_t n, per


cdef void _down_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _FlatCtx* c = <_FlatCtx*> ctx
    cdef const uint32_t* s = <const uint32_t*> c.src
    cdef uint16_t* d = <uint16_t*> c.dst
    cdef Py_ssize_t i, i0 = chunk * c.per * BLOCK, i1 = min(i0 + c.per * BLOCK, c.n)
    for i in range(i0, i1):
        d[i] = _to_bf16(s[i])


cdef void _up_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _FlatCtx* c = <_FlatCtx*> ctx
    cdef const uint16_t* s = <const uint16_t*> c.src
    cdef uint32_t* d = <uint32_t*> c.dst
    cdef Py_ssize_t i, i0 = chunk * c.per * BLOCK, i1 = min(i0 + c.per * BLOCK, c.n)
    for i in range(i0, i1):
        d[i] = _to_f32(s[i])


cdef enum:
    DOWN = 0   # float32 -> bfloat16
    UP = 1     # bfloat16 -> float32
    SAME = 2   # bfloat16 -> bfloat16


cdef struct _TransposeCtx:
    const void* src
    void* dst
    Py_ssize_t rows, cols, row_tiles, col_tiles, jobs, per
    int kind


cdef void _t_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    """(batch, rows, cols) -> (batch, cols, rows), tile by tile, converting as ``kind`` says."""
    cdef _TransposeCtx* t = <_TransposeCtx*> ctx
    cdef Py_ssize_t job, b, r0, c0, r, c, r1, c1, rows = t.rows, cols = t.cols, at
    for job in range(chunk * t.per, min((chunk + 1) * t.per, t.jobs)):
        b = job // (t.row_tiles * t.col_tiles)
        r0 = (job // t.col_tiles) % t.row_tiles * TILE
        c0 = job % t.col_tiles * TILE
        r1, c1, at = min(r0 + TILE, rows), min(c0 + TILE, cols), b * rows * cols
        if t.kind == DOWN:
            for c in range(c0, c1):
                for r in range(r0, r1):
                    (<uint16_t*> t.dst)[at + c * rows + r] = _to_bf16((<const uint32_t*> t.src)[at + r * cols + c])
        elif t.kind == UP:
            for c in range(c0, c1):
                for r in range(r0, r1):
                    (<uint32_t*> t.dst)[at + c * rows + r] = _to_f32((<const uint16_t*> t.src)[at + r * cols + c])
        else:
            for c in range(c0, c1):
                for r in range(r0, r1):
                    (<uint16_t*> t.dst)[at + c * rows + r] = (<const uint16_t*> t.src)[at + r * cols + c]


cdef _flat(src, dst, bint down, int num_threads):
    cdef _FlatCtx c
    c.src = cnp.PyArray_DATA(<cnp.ndarray> src)
    c.dst = cnp.PyArray_DATA(<cnp.ndarray> dst)
    c.n = src.size
    cdef Py_ssize_t blocks = (c.n + BLOCK - 1) // BLOCK
    cdef int nt = max(num_threads, 1)
    if c.n == 0:
        return
    c.per = wb_jobs_per_chunk(blocks, BLOCK, nt)
    with nogil:
        wb_pool_run(_down_chunk if down else _up_chunk, &c, (blocks + c.per - 1) // c.per, nt)


cdef _transposed(src, dst, Py_ssize_t batch, Py_ssize_t rows, Py_ssize_t cols, int kind, int num_threads):
    cdef _TransposeCtx t
    t.src = cnp.PyArray_DATA(<cnp.ndarray> src)
    t.dst = cnp.PyArray_DATA(<cnp.ndarray> dst)
    t.rows, t.cols, t.kind = rows, cols, kind
    t.row_tiles, t.col_tiles = (rows + TILE - 1) // TILE, (cols + TILE - 1) // TILE
    t.jobs = batch * t.row_tiles * t.col_tiles
    cdef int nt = max(num_threads, 1)
    if t.jobs == 0 or src.size == 0:
        return
    t.per = wb_jobs_per_chunk(t.jobs, TILE * TILE, nt)
    with nogil:
        wb_pool_run(_t_chunk, &t, (t.jobs + t.per - 1) // t.per, nt)


def f32_to_bf16(src, dst, int num_threads=1):
    """``dst[...] = src`` rounded to bfloat16 (nearest, ties to even); any shape, both C-contiguous."""
    _pair(src, dst, np.float32, BF16, src.shape, "f32_to_bf16")
    _flat(src, dst, True, num_threads)
    return dst


def bf16_to_f32(src, dst, int num_threads=1):
    """``dst[...] = src`` widened to float32 (exact); any shape, both C-contiguous."""
    _pair(src, dst, BF16, np.float32, src.shape, "bf16_to_f32")
    _flat(src, dst, False, num_threads)
    return dst


def _transpose4(src, dst, src_dtype, dst_dtype, bint to_nhwc, int kind, who, int num_threads):
    """The checked NCHW <-> NHWC transpose of a 4-D ``src`` into ``dst``, converting as ``kind`` says."""
    if not isinstance(src, np.ndarray) or src.ndim != 4:
        raise ValueError(f"{who}: expected a 4-D source, got {getattr(src, 'shape', src)}")
    if to_nhwc:
        n, c, h, w = src.shape
        _pair(src, dst, src_dtype, dst_dtype, (n, h, w, c), who)
        _transposed(src, dst, n, c, h * w, kind, num_threads)
    else:
        n, h, w, c = src.shape
        _pair(src, dst, src_dtype, dst_dtype, (n, c, h, w), who)
        _transposed(src, dst, n, h * w, c, kind, num_threads)
    return dst


def nchw_f32_to_nhwc_bf16(src, dst, int num_threads=1):
    """A float32 NCHW tensor written as bfloat16 NHWC in one pass."""
    return _transpose4(src, dst, np.float32, BF16, True, DOWN, "nchw_f32_to_nhwc_bf16", num_threads)


def nhwc_bf16_to_nchw_f32(src, dst, int num_threads=1):
    """A bfloat16 NHWC tensor written as float32 NCHW in one pass."""
    return _transpose4(src, dst, BF16, np.float32, False, UP, "nhwc_bf16_to_nchw_f32", num_threads)


def nchw_bf16_to_nhwc_bf16(src, dst, int num_threads=1):
    """A bfloat16 NCHW tensor transposed to NHWC (the 16-bit words moved as they are)."""
    return _transpose4(src, dst, BF16, BF16, True, SAME, "nchw_bf16_to_nhwc_bf16", num_threads)


def nhwc_bf16_to_nchw_bf16(src, dst, int num_threads=1):
    """A bfloat16 NHWC tensor transposed to NCHW."""
    return _transpose4(src, dst, BF16, BF16, False, SAME, "nhwc_bf16_to_nchw_bf16", num_threads)
