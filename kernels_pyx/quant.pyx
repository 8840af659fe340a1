# isa-variants: avx2, avx512
# cython: language_level=3
"""QuantizeLinear and DequantizeLinear for uint8 activations with one scale and zero point: the
quantize and dequantize adapts, flat or fused with the NCHW <-> NHWC transpose.

``q = saturate(round_half_even(x / scale) + zero_point)`` to [0, 255] (ONNX QuantizeLinear; a NaN
becomes 0, as ONNX Runtime writes it; +-inf saturate) and ``x = (q - zero_point) *
scale``.  The division is kept (not a multiply by 1/scale), so every quotient rounds as the spec's
does.  Work is split over the shared thread pool (``wb_pool.h``); shapes and dtypes are checked
before any ``nogil`` loop runs.
"""
import numpy as np
from workbench._kernels.checks import conversion_pair as _pair
cimport numpy as cnp
from libc.stdint cimport uint8_t

from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()

cdef Py_ssize_t BLOCK = 16384
cdef Py_ssize_t TILE = 32


cdef extern from "wb_quant.h" nogil:
    uint8_t _q "wbq8_one"(float x, float scale, float zp)
    void wbq8_quantize(const float* x, uint8_t* q, Py_ssize_t n, float scale, float zp)


cdef struct _Ctx:
    const void* src
    void* dst
    Py_ssize_t n, per, rows, cols, row_tiles, col_tiles, jobs
    float scale, zp
    bint down


cdef void _flat_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _Ctx* c = <_Ctx*> ctx
    cdef Py_ssize_t i, i0 = chunk * c.per * BLOCK, i1 = min(i0 + c.per * BLOCK, c.n)
    cdef const float* fs = <const float*> c.src
    cdef uint8_t* qd = <uint8_t*> c.dst
    cdef const uint8_t* qs = <const uint8_t*> c.src
    cdef float* fd = <float*> c.dst
    cdef float scale = c.scale, zp = c.zp
    if c.down:
        wbq8_quantize(fs + i0, qd + i0, i1 - i0, scale, zp)
    else:
        for i in range(i0, i1):
            fd[i] = (<float> qs[i] - zp) * scale


cdef void _t_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    """(batch, rows, cols) -> (batch, cols, rows), tile by tile, converting on the way."""
    cdef _Ctx* c = <_Ctx*> ctx
    cdef Py_ssize_t job, b, r0, c0, r, k, r1, c1, at
    cdef Py_ssize_t rows = c.rows, cols = c.cols, per_b = c.row_tiles * c.col_tiles
    cdef float scale = c.scale, zp = c.zp
    for job in range(chunk * c.per, min((chunk + 1) * c.per, c.jobs)):
        b = job // per_b
        r0 = (job % per_b) // c.col_tiles * TILE
        c0 = (job % c.col_tiles) * TILE
        r1, c1 = min(r0 + TILE, rows), min(c0 + TILE, cols)
        at = b * rows * cols
        if c.down:
            for k in range(c0, c1):
                for r in range(r0, r1):
                    (<uint8_t*> c.dst)[at + k * rows + r] = _q((<const float*> c.src)[at + r * cols + k], scale, zp)
        else:
            for k in range(c0, c1):
                for r in range(r0, r1):
                    (<float*> c.dst)[at + k * rows + r] = (<float> (<const uint8_t*> c.src)[at + r * cols + k] - zp) * scale


def _params(scale, zero_point):
    s = float(scale)
    if not (s > 0 and np.isfinite(s)):
        raise ValueError(f"quant: the scale must be positive and finite, got {scale!r}")
    z = int(zero_point)
    if not 0 <= z <= 255:
        raise ValueError(f"quant: a uint8 zero point must lie in [0, 255], got {zero_point!r}")
    return s, z


cdef _run(src, dst, float scale, float zp, bint down, int transpose, int num_threads):
    """transpose: 0 none, 1 NCHW -> NHWC, 2 NHWC -> NCHW (4-D)."""
    cdef _Ctx c
    cdef int nt = max(num_threads, 1)
    cdef Py_ssize_t blocks, n
    c.src, c.dst = cnp.PyArray_DATA(<cnp.ndarray> src), cnp.PyArray_DATA(<cnp.ndarray> dst)
    c.scale, c.zp, c.down, c.n = scale, zp, down, src.size
    if c.n == 0:
        return
    if transpose == 0:
        blocks = (c.n + BLOCK - 1) // BLOCK
        c.per = wb_jobs_per_chunk(blocks, BLOCK, nt)
        with nogil:
            wb_pool_run(_flat_chunk, &c, (blocks + c.per - 1) // c.per, nt)
        return
    n = src.shape[0]
    if transpose == 1:
        c.rows, c.cols = src.shape[1], src.shape[2] * src.shape[3]
    else:
        c.rows, c.cols = src.shape[1] * src.shape[2], src.shape[3]
    c.row_tiles, c.col_tiles = (c.rows + TILE - 1) // TILE, (c.cols + TILE - 1) // TILE
    c.jobs = n * c.row_tiles * c.col_tiles
    c.per = wb_jobs_per_chunk(c.jobs, TILE * TILE, nt)
    with nogil:
        wb_pool_run(_t_chunk, &c, (c.jobs + c.per - 1) // c.per, nt)


def _shape(src, transpose, who):
    if transpose == 0:
        return src.shape
    if not isinstance(src, np.ndarray) or src.ndim != 4:
        raise ValueError(f"{who}: a fused transpose needs a 4-D source, got {getattr(src, 'shape', src)}")
    n, a, b, c = src.shape
    return (n, b, c, a) if transpose == 1 else (n, c, a, b)


def quantize(src, dst, scale, zero_point, int transpose=0, int num_threads=1):
    """float32 ``src`` -> uint8 ``dst`` (QuantizeLinear); ``transpose`` 1: NCHW -> NHWC, 2: NHWC -> NCHW."""
    s, z = _params(scale, zero_point)
    _pair(src, dst, np.float32, np.uint8, _shape(src, transpose, "quantize"), "quantize")
    _run(src, dst, s, z, True, transpose, num_threads)
    return dst


def dequantize(src, dst, scale, zero_point, int transpose=0, int num_threads=1):
    """uint8 ``src`` -> float32 ``dst`` (DequantizeLinear); ``transpose`` as :func:`quantize`."""
    s, z = _params(scale, zero_point)
    _pair(src, dst, np.uint8, np.float32, _shape(src, transpose, "dequantize"), "dequantize")
    _run(src, dst, s, z, False, transpose, num_threads)
    return dst
