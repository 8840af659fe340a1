# isa-variants: avx2, avx512
# cython: language_level=3
"""Layout adapts between channels-first (NCHW) and channels-last (NHWC) float32 tensors.

Both directions are a batched 2-D transpose of a (C, H*W) matrix, done in square tiles so that
reads and writes both stay inside a few cache lines, parallel over (image, tile row) with OpenMP.
Shapes are checked in Python-visible code before any ``nogil`` loop runs.
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange

cnp.import_array()

cdef Py_ssize_t TILE = 32
cdef Py_ssize_t BLOCK = 256    # columns per job (a multiple of TILE)


cdef void _transpose_tiles(const float* src, float* dst, Py_ssize_t batch, Py_ssize_t rows,
                           Py_ssize_t cols, int num_threads) noexcept nogil:
    """dst[b, c, r] = src[b, r, c] for a batch of (rows, cols) row-major matrices.  Jobs are
    (image, block of BLOCK columns, tile row), so that an image with few channels (an RGB input,
    3 rows) still splits between threads, each writing one contiguous stretch of pixels."""
    cdef Py_ssize_t row_tiles = (rows + TILE - 1) // TILE, col_blocks = (cols + BLOCK - 1) // BLOCK
    cdef Py_ssize_t job, b, r0, c0, r, c, r_end, c_end, c1
    cdef const float* s
    cdef float* d
    for job in prange(batch * col_blocks * row_tiles, nogil=True, schedule="static", num_threads=num_threads):
        b = job // (col_blocks * row_tiles)
        c0 = (job // row_tiles) % col_blocks * BLOCK
        r0 = (job % row_tiles) * TILE
        r_end = min(r0 + TILE, rows)
        c1 = min(c0 + BLOCK, cols)
        s = src + b * rows * cols
        d = dst + b * rows * cols
        while c0 < c1:
            c_end = min(c0 + TILE, c1)
            for r in range(r0, r_end):
                for c in range(c0, c_end):
                    d[c * rows + r] = s[r * cols + c]
            c0 = c0 + TILE


def _checked(src, dst, expected_dst_shape, what):
    if not isinstance(dst, np.ndarray):
        raise TypeError(f"{what}: destination must be a NumPy array, got {type(dst).__name__}")
    if src.dtype != np.float32 or dst.dtype != np.float32:
        raise TypeError(f"{what}: expected float32 arrays, got {src.dtype} -> {dst.dtype}")
    if src.ndim != 4:
        raise ValueError(f"{what}: expected a 4-D source, got shape {src.shape}")
    if tuple(dst.shape) != tuple(expected_dst_shape):
        raise ValueError(f"{what}: source {src.shape} needs destination {tuple(expected_dst_shape)}, "
                         f"got {dst.shape}")
    if not (src.flags.c_contiguous and dst.flags.c_contiguous):
        raise ValueError(f"{what}: source and destination must be C-contiguous")
    if dst.flags.writeable is False:
        raise ValueError(f"{what}: destination is read-only")


def nchw_to_nhwc(src, dst=None, int num_threads=0):
    """Copy an NCHW float32 tensor into NHWC order.

    Parameters
    ----------
    src : ndarray, float32, shape (N, C, H, W), C-contiguous
    dst : ndarray, float32, shape (N, H, W, C), optional
        Output buffer; allocated when omitted.
    num_threads : int
        OpenMP threads; 0 uses the OpenMP default.

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
        _transpose_tiles(<const float*> cnp.PyArray_DATA(<cnp.ndarray> src),
                         <float*> cnp.PyArray_DATA(<cnp.ndarray> dst),
                         n, c, h * w, num_threads if num_threads > 0 else _default_threads())
    return dst


def nhwc_to_nchw(src, dst=None, int num_threads=0):
    """Copy an NHWC float32 tensor into NCHW order (see :func:`nchw_to_nhwc`)."""
    if not isinstance(src, np.ndarray) or src.ndim != 4:
        raise ValueError(f"nhwc_to_nchw: expected a 4-D source, got shape {src.shape}")
    n, h, w, c = src.shape[0], src.shape[1], src.shape[2], src.shape[3]
    if dst is None:
        dst = np.empty((n, c, h, w), dtype=np.float32)
    _checked(src, dst, (n, c, h, w), "nhwc_to_nchw")
    if src.size:
        _transpose_tiles(<const float*> cnp.PyArray_DATA(<cnp.ndarray> src),
                         <float*> cnp.PyArray_DATA(<cnp.ndarray> dst),
                         n, h * w, c, num_threads if num_threads > 0 else _default_threads())
    return dst


cdef extern from "omp.h":
    int omp_get_max_threads() nogil


cdef int _default_threads() noexcept:
    return omp_get_max_threads()


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
