# cython: language_level=3
"""Gemm and (batched) MatMul on float32: SGEMM through ``_gemm.gemm_rm``, then the fused epilogue.

A product with one row or one column (the batch-1 classifier) goes to SGEMV instead: OpenBLAS's
SGEMM packs the whole weight matrix on every call, which makes it ~10x slower than SGEMV there.
BLAS does the multiply (threaded by the BLAS pool, which the executor limits to the run's thread
count); the epilogue (bias per column, a full (M, N) addend, activation) is one more pass over the
output rows, parallel over row blocks.  Parallel loops run on the shared thread pool (``wb_pool.h``).
"""
import numpy as np
cimport numpy as cnp

from _gemm cimport gemm_rm
from scipy.linalg.cython_blas cimport sgemv
from _epilogue cimport epilogue_rows
from wb_pool cimport wb_pool_import, wb_pool_run

from workbench._kernels.checks import float32_array as _check

cnp.import_array()
wb_pool_import()


# Below this many elements of work a parallel region costs more than it saves (and on a busy
# machine a second thread may wait a whole scheduler slice): run on one thread.
cdef Py_ssize_t GRAIN = 32768


cdef inline int _threads(Py_ssize_t work, int num_threads) noexcept:
    return 1 if work < GRAIN else max(num_threads, 1)


def set_grain(Py_ssize_t elements):
    """Set the work size below which kernels run on one thread; returns the previous one.

    Tests set 1 so that small inputs take the parallel paths too.
    """
    global GRAIN
    old, GRAIN = GRAIN, max(elements, 0)
    return old


cdef inline float* _p(a) noexcept:
    return <float*> cnp.PyArray_DATA(<cnp.ndarray> a) if a is not None else NULL


def _check_epilogue(what, bias, residual, slope, int act, Py_ssize_t m, Py_ssize_t n):
    if bias is not None:
        _check(bias, "bias", what, size=n)
    if residual is not None:
        _check(residual, "residual", what, size=m * n)
    if (act == 7) != (slope is not None) or not 0 <= act <= 8:
        raise ValueError(f"{what}: activation code {act} with slope {'given' if slope is not None else 'None'}")
    if slope is not None:
        _check(slope, "slope", what, size=n)


cdef inline void _product(bint trans_a, bint trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                         const float* b, int ldb, float* c, int ldc) noexcept nogil:
    """Row-major ``c (m, n) = alpha * op(a) @ op(b)`` (row stride ldc), by SGEMV when m or n is 1."""
    cdef char t
    cdef int one = 1, rows, cols, ld
    cdef float zero = 0
    if m == 1:
        # c = op(b)^T a: b's memory read column-major is (n, k) with ld n, or its transpose.
        t = b'T' if trans_b else b'N'
        rows, cols, ld = (k, n, ldb) if trans_b else (n, k, ldb)
        sgemv(&t, &rows, &cols, &alpha, <float*> b, &ld, <float*> a, &one, &zero, c, &one)
    elif n == 1:
        t = b'N' if trans_a else b'T'
        rows, cols, ld = (m, k, lda) if trans_a else (k, m, lda)
        sgemv(&t, &rows, &cols, &alpha, <float*> a, &ld, <float*> b, &one, &zero, c, &one)
    else:
        gemm_rm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, 0, c, ldc)


cdef struct _ProductCtx:
    # Column block i of c (width columns of n) is op(a) @ columns [i * width, ...) of op(b).
    bint trans_a, trans_b
    int m, n, k, lda, ldb, width
    float alpha
    const float* a
    const float* b
    float* c


cdef void _product_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _ProductCtx* p = <_ProductCtx*> ctx
    cdef int n0 = <int> i * p.width
    cdef int w = min(p.width, p.n - n0)
    if w > 0:
        # op(b)'s columns n0.. are rows n0.. of b when transposed, else columns n0.. of b.
        _product(p.trans_a, p.trans_b, p.m, w, p.k, p.alpha, p.a, p.lda,
                 p.b + (n0 * p.ldb if p.trans_b else n0), p.ldb, p.c + n0, p.n)


cdef void _parallel_product(bint trans_a, bint trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                            const float* b, int ldb, float* c, int nt) noexcept nogil:
    """:func:`_product` split over column blocks of ``c``, one per thread.

    The executor keeps BLAS single-threaded (OpenBLAS's idle workers spin and steal cores from
    our pool's kernels), so the classifier GEMMs/GEMVs get their parallelism here.
    """
    cdef int chunks = nt if n >= 64 * nt and m != 0 else 1
    cdef _ProductCtx p
    if chunks == 1 or n == 1:
        _product(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, c, n)
        return
    p.trans_a, p.trans_b, p.m, p.n, p.k, p.lda, p.ldb, p.alpha, p.a, p.b, p.c = (
        trans_a, trans_b, m, n, k, lda, ldb, alpha, a, b, c)
    p.width = (n + chunks - 1) // chunks
    wb_pool_run(_product_chunk, &p, chunks, chunks)


cdef struct _EpilogueCtx:
    # Chunk i is rows [i * block, (i + 1) * block) of the (m, n) output.
    float* out
    const float* bias
    const float* residual
    const float* slope
    float p0, p1
    int act
    Py_ssize_t m, n, block


cdef void _epilogue_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _EpilogueCtx* e = <_EpilogueCtx*> ctx
    cdef Py_ssize_t r0 = i * e.block, n = e.n
    epilogue_rows(e.out + r0 * n, min(e.block, e.m - r0), n, n, False, e.bias,
                  e.residual + r0 * n if e.residual != NULL else NULL, n, e.act, e.p0, e.p1, e.slope)


cdef void _epilogue(float* out, Py_ssize_t m, Py_ssize_t n, const float* bias, const float* residual, int act,
                    float p0, float p1, const float* slope, int nt) noexcept nogil:
    cdef _EpilogueCtx e
    if bias == NULL and residual == NULL and act == 0 or m == 0 or n == 0:
        return
    e.out, e.bias, e.residual, e.slope, e.act, e.p0, e.p1, e.m, e.n = out, bias, residual, slope, act, p0, p1, m, n
    # Blocks of 16 rows, more where rows are narrow (up to about 4096 floats per chunk, so that
    # handing out a chunk costs little next to it) while that leaves two chunks per thread.
    e.block = max(16, min((4096 + n - 1) // n, m // (2 * max(nt, 1))))
    wb_pool_run(_epilogue_chunk, &e, (m + e.block - 1) // e.block, nt)


def gemm(a, b, out, bint trans_a, bint trans_b, float alpha=1, bias=None, residual=None, int act=0,
         float p0=0, float p1=0, slope=None, int num_threads=1):
    """``out = act(alpha * op(a) @ op(b) + bias[col] + residual)``.

    Parameters
    ----------
    a : ndarray, float32, (M, K), or (K, M) with ``trans_a``
    b : ndarray, float32, (K, N), or (N, K) with ``trans_b``
    out : ndarray, float32, (M, N), C-contiguous
    bias : ndarray, float32, N elements, optional
    residual : ndarray, float32, M * N elements, optional
    act, p0, p1, slope : fused activation (``_epilogue.pxd`` codes; ``slope`` per column for PRelu)
    """
    what = "gemm"
    for name, arr in (("a", a), ("b", b)):
        _check(arr, name, what)
        if arr.ndim != 2:
            raise ValueError(f"{what}: {name} must be 2-D, got shape {arr.shape}")
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t kb = b.shape[1] if trans_b else b.shape[0]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1]
    if k != kb:
        raise ValueError(f"{what}: inner dimensions differ: a {a.shape} (trans_a={trans_a}), b {b.shape} (trans_b={trans_b})")
    _check(out, "out", what, shape=(m, n), writeable=True)
    _check_epilogue(what, bias, residual, slope, act, m, n)
    if max(m, n, k) > 2**31 - 1:
        raise ValueError(f"{what}: dimensions ({m}, {n}, {k}) exceed BLAS's 32-bit range")
    cdef float* pa = _p(a)
    cdef float* pb = _p(b)
    cdef float* po = _p(out)
    cdef float* pbias = _p(bias)
    cdef float* pres = _p(residual)
    cdef float* pslope = _p(slope)
    cdef int lda = a.shape[1], ldb = b.shape[1], nt = _threads(m * n, num_threads)
    cdef Py_ssize_t i
    with nogil:
        if k == 0:
            for i in range(m * n):
                po[i] = 0
        else:
            _parallel_product(trans_a, trans_b, m, n, k, alpha, pa, lda, pb, ldb, po, max(num_threads, 1))
        _epilogue(po, m, n, pbias, pres, act, p0, p1, pslope, nt)
    return out


cdef struct _BatchCtx:
    const float* a
    const float* b
    float* out
    const long long* ao
    const long long* bo
    int m, n, k


cdef void _batch_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _BatchCtx* c = <_BatchCtx*> ctx
    _product(False, False, c.m, c.n, c.k, 1, c.a + c.ao[i], c.k, c.b + c.bo[i], c.n, c.out + i * c.m * c.n, c.n)


def batched_matmul(a, b, out, a_offsets, b_offsets, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, int act=0,
                   float p0=0, float p1=0, slope=None, int num_threads=1):
    """``out[i] = act(A_i @ B_i)`` for row-major A_i (m, k) at ``a_offsets[i]`` elements into ``a``
    and B_i (k, n) at ``b_offsets[i]`` into ``b`` (broadcast batches repeat an offset).

    Parameters
    ----------
    a, b : ndarray, float32, C-contiguous
    out : ndarray, float32, C-contiguous, ``len(a_offsets) * m * n`` elements
    a_offsets, b_offsets : ndarray, int64, one per batch
    """
    what = "batched_matmul"
    _check(a, "a", what)
    _check(b, "b", what)
    if m < 1 or n < 1 or k < 1 or max(m, n, k) > 2**31 - 1:
        raise ValueError(f"{what}: m, n, k = {m}, {n}, {k} must be positive (and within BLAS's 32-bit range)")
    for name, off, arr, span in (("a_offsets", a_offsets, a, m * k), ("b_offsets", b_offsets, b, k * n)):
        if not isinstance(off, np.ndarray) or off.dtype != np.int64 or off.ndim != 1 or not off.flags.c_contiguous:
            raise TypeError(f"{what}: {name} must be a contiguous 1-D int64 array")
        if off.size and (off.min() < 0 or off.max() + span > arr.size):
            raise ValueError(f"{what}: {name} reach outside the {arr.size} elements of its operand")
    if a_offsets.size != b_offsets.size:
        raise ValueError(f"{what}: {a_offsets.size} a_offsets but {b_offsets.size} b_offsets")
    cdef Py_ssize_t batches = a_offsets.size, i
    _check(out, "out", what, size=batches * m * n, writeable=True)
    _check_epilogue(what, None, None, slope, act, batches * m, n)
    cdef const long long* ao = <const long long*> cnp.PyArray_DATA(<cnp.ndarray> a_offsets)
    cdef const long long* bo = <const long long*> cnp.PyArray_DATA(<cnp.ndarray> b_offsets)
    cdef float* pa = _p(a)
    cdef float* pb = _p(b)
    cdef float* po = _p(out)
    cdef float* pslope = _p(slope)
    cdef int nt = _threads(out.size * k, num_threads), nt_epi = _threads(out.size, num_threads)
    cdef _BatchCtx c
    c.a, c.b, c.out, c.ao, c.bo, c.m, c.n, c.k = pa, pb, po, ao, bo, m, n, k
    with nogil:
        if batches >= nt:
            # Attention's (B, H) batches: one whole product per chunk.
            wb_pool_run(_batch_chunk, &c, batches, nt)
        else:
            for i in range(batches):
                _parallel_product(False, False, m, n, k, 1, pa + ao[i], k, pb + bo[i], n, po + i * m * n, nt)
        _epilogue(po, batches * m, n, NULL, NULL, act, p0, p1, pslope, nt_epi)
    return out
