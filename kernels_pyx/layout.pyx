# isa-variants: avx2, avx512
# cython: language_level=3
"""Layout adapts between channels-first (NCHW) and channels-last (NHWC) float32 tensors.

Both directions are a batched 2-D transpose of a (C, H*W) matrix, done in square tiles so that
reads and writes both stay inside a few cache lines, parallel over (image, column block, tile row)
jobs on the shared thread pool (``wb_pool.h``).
NHWC to NCHW may write an NCHW tensor whose channel planes lie apart (each plane contiguous): a
slice of a larger buffer along its flattened spatial axis, where a detector head's Concat of
per-scale outputs wants it (:mod:`workbench.runtime.slices`).
Shapes are checked in Python-visible code before any ``nogil`` loop runs.
"""
import os

import numpy as np
cimport numpy as cnp

from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()

cdef Py_ssize_t TILE = 32
cdef Py_ssize_t BLOCK = 256    # columns per job (a multiple of TILE)


cdef struct _TransposeCtx:
    const float* src
    float* dst
    Py_ssize_t rows, cols, row_tiles, col_blocks, jobs, per
    Py_ssize_t ldd, dimg   # floats between the destination's rows, and between its images


cdef inline void _interleave3(const float* s0, const float* s1, const float* s2, float* d, Py_ssize_t c0,
                              Py_ssize_t c1) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(c0, c1):
        d[3 * c] = s0[c]
        d[3 * c + 1] = s1[c]
        d[3 * c + 2] = s2[c]


cdef inline void _transpose_job(const _TransposeCtx* t, Py_ssize_t job) noexcept nogil:
    """Rows [r0, r0 + TILE) x columns [c0, c0 + BLOCK) of one image, TILE columns at a time."""
    cdef Py_ssize_t rows = t.rows, cols = t.cols, r, c, c_end
    cdef Py_ssize_t b = job // (t.col_blocks * t.row_tiles)
    cdef Py_ssize_t c0 = (job // t.row_tiles) % t.col_blocks * BLOCK
    cdef Py_ssize_t r0 = (job % t.row_tiles) * TILE
    cdef Py_ssize_t r_end = min(r0 + TILE, rows), c1 = min(c0 + BLOCK, cols)
    cdef const float* s = t.src + b * rows * cols
    cdef float* d = t.dst + b * t.dimg
    cdef Py_ssize_t ldd = t.ldd
    if rows == 3 and ldd == 3:   # an RGB input to NHWC: interleaving three planes vectorises, tiles do not
        _interleave3(s, s + cols, s + 2 * cols, d, c0, c1)
        return
    while c0 < c1:
        c_end = min(c0 + TILE, c1)
        for r in range(r0, r_end):
            for c in range(c0, c_end):
                d[c * ldd + r] = s[r * cols + c]
        c0 = c0 + TILE


cdef void _transpose_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _TransposeCtx* t = <_TransposeCtx*> ctx
    cdef Py_ssize_t job
    for job in range(chunk * t.per, min((chunk + 1) * t.per, t.jobs)):
        _transpose_job(t, job)


cdef void _transpose_tiles(const float* src, float* dst, Py_ssize_t batch, Py_ssize_t rows,
                           Py_ssize_t cols, Py_ssize_t ldd, Py_ssize_t dimg, int num_threads) noexcept nogil:
    """dst[b * dimg + c * ldd + r] = src[b, r, c] for a batch of (rows, cols) row-major matrices.  Jobs are
    (image, block of BLOCK columns, tile row), so that an image with few channels (an RGB input,
    3 rows) still splits between threads, each starting on one contiguous stretch of pixels."""
    cdef _TransposeCtx t
    cdef Py_ssize_t job_floats = min(rows, TILE) * min(cols, BLOCK)
    t.src, t.dst, t.rows, t.cols, t.ldd, t.dimg = src, dst, rows, cols, ldd, dimg
    t.row_tiles, t.col_blocks = (rows + TILE - 1) // TILE, (cols + BLOCK - 1) // BLOCK
    t.jobs = batch * t.col_blocks * t.row_tiles
    t.per = wb_jobs_per_chunk(t.jobs, job_floats, num_threads)   # neighbouring tile rows
    wb_pool_run(_transpose_chunk, &t, (t.jobs + t.per - 1) // t.per, num_threads)


def _checked(src, dst, expected_dst_shape, what, planes=False):
    if not isinstance(dst, np.ndarray):
        raise TypeError(f"{what}: destination must be a NumPy array, got {type(dst).__name__}")
    if src.dtype != np.float32 or dst.dtype != np.float32:
        raise TypeError(f"{what}: expected float32 arrays, got {src.dtype} -> {dst.dtype}")
    if src.ndim != 4:
        raise ValueError(f"{what}: expected a 4-D source, got shape {src.shape}")
    if tuple(dst.shape) != tuple(expected_dst_shape):
        raise ValueError(f"{what}: source {src.shape} needs destination {tuple(expected_dst_shape)}, "
                         f"got {dst.shape}")
    if not src.flags.c_contiguous:
        raise ValueError(f"{what}: the source must be C-contiguous")
    if not (dst.flags.c_contiguous or planes and _plane_strides(dst) is not None):
        raise ValueError(f"{what}: the destination must be C-contiguous"
                         + (" or hold each (H, W) plane contiguous, planes and images apart" if planes else ""))
    if dst.flags.writeable is False:
        raise ValueError(f"{what}: destination is read-only")


def _plane_strides(dst):
    """(floats between channel planes, between images) of an NCHW ``dst`` whose (H, W) planes are
    each contiguous, planes not overlapping and images not overlapping; else None."""
    n, c, h, w = dst.shape
    s = [st // 4 for st in dst.strides]
    if any(st % 4 for st in dst.strides) or (w > 1 and s[3] != 1) or (h > 1 and s[2] != w):
        return None
    plane = s[1] if c > 1 else h * w
    image = s[0] if n > 1 else plane * c
    if plane < h * w or image < plane * (c - 1) + h * w:
        return None
    return plane, image


def nchw_to_nhwc(src, dst=None, int num_threads=0):
    """Copy an NCHW float32 tensor into NHWC order.

    Parameters
    ----------
    src : ndarray, float32, shape (N, C, H, W), C-contiguous
    dst : ndarray, float32, shape (N, H, W, C), optional
        Output buffer; allocated when omitted.
    num_threads : int
        Threads; 0 uses one per CPU this process may run on.

    Returns
    -------
    ndarray
        ``dst``.
    """
    if not isinstance(src, np.ndarray) or src.ndim != 4:
        raise ValueError(f"nchw_to_nhwc: expected a 4-D source, got shape {src.shape}")
    n, c, h, w = src.shape[0], src.shape[1], src.shape[2], src.shape[3]
    if dst is None:
        dst = np.empty((n, h, w, c), dtype=np.float32)
    _checked(src, dst, (n, h, w, c), "nchw_to_nhwc")
    if src.size:
        _transpose(src, dst, n, c, h * w, c, c * h * w, num_threads)
    return dst


def nhwc_to_nchw(src, dst=None, int num_threads=0):
    """Copy an NHWC float32 tensor into NCHW order (see :func:`nchw_to_nhwc`).  ``dst`` may be a
    view whose (H, W) planes are each contiguous but lie apart (a slice of a larger buffer along
    its flattened spatial axis)."""
    if not isinstance(src, np.ndarray) or src.ndim != 4:
        raise ValueError(f"nhwc_to_nchw: expected a 4-D source, got shape {src.shape}")
    n, h, w, c = src.shape[0], src.shape[1], src.shape[2], src.shape[3]
    if dst is None:
        dst = np.empty((n, c, h, w), dtype=np.float32)
    _checked(src, dst, (n, c, h, w), "nhwc_to_nchw", planes=True)
    if src.size:
        plane, image = (h * w, c * h * w) if dst.flags.c_contiguous else _plane_strides(dst)
        _transpose(src, dst, n, h * w, c, plane, image, num_threads)
    return dst


cdef _transpose(src, dst, Py_ssize_t batch, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ldd, Py_ssize_t dimg,
                int num_threads):
    cdef const float* s = <const float*> cnp.PyArray_DATA(<cnp.ndarray> src)
    cdef float* d = <float*> cnp.PyArray_DATA(<cnp.ndarray> dst)
    cdef int nt = num_threads if num_threads > 0 else _default_threads()
    with nogil:
        _transpose_tiles(s, d, batch, rows, cols, ldd, dimg, nt)


cdef int _default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


cdef bint _all_finite(const unsigned int* u, Py_ssize_t n) noexcept nogil:
    # Adding one to an all-ones exponent (NaN, +-Inf) carries into the sign bit; no other float
    # reaches it.  An OR of integers needs no ordering, so GCC vectorises the loop.
    cdef unsigned int acc = 0
    cdef Py_ssize_t i
    for i in range(n):
        acc = acc | ((u[i] & 0x7f800000u) + 0x00800000u)
    return (acc & 0x80000000u) == 0


def all_finite(x):
    """Whether the float32 array ``x`` (C-contiguous, any shape) holds no NaN and no infinity:
    one pass over its bits, no allocation (NumPy's ``isfinite(x).all()`` allocates a mask)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or not x.flags.c_contiguous:
        raise TypeError(f"all_finite: expected a C-contiguous float32 array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    cdef const unsigned int* u = <const unsigned int*> cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef Py_ssize_t n = x.size
    cdef bint ok
    with nogil:
        ok = _all_finite(u, n)
    return ok
