# isa-variants: avx2, avx512
# cython: language_level=3
"""Softmax and LogSoftmax of float32 tensors over one axis, viewed as (outer, length, inner).

- ``inner == 1`` (the reduced axis is contiguous, e.g. the last one): per row one pass for the
  maximum, one for ``exp(x - max)`` and its sum, one to scale (or ``x - max - log(sum)``).
- ``inner > 1``: the same three passes run across the inner axis, a block of up to 256 lanes at
  a time with per-lane maxima and sums, so every load is contiguous.
- :func:`softmax_dot`: the softmax's weighted sum over the axis, ``sum_a softmax(x)_a * w[a]``
  (a detector's distribution-to-distance decode), without writing the softmax out.
exp is the polynomial of ``wb_vexp.h`` (no libm call per element).  Jobs (rows, or (outer, lane
block) pairs) are shared among the threads of the shared pool (``wb_pool.h``), short ones several
to a chunk.
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport logf
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

from workbench._kernels.checks import float32_array

cnp.import_array()
wb_pool_import()

cdef extern from "wb_vexp.h" nogil:
    float wb_row_max(const float* x, Py_ssize_t n)
    float wb_exp_shift_sum(const float* x, float shift, float* out, Py_ssize_t n)
    void wb_exp_shiftv_acc(const float* x, const float* shift, float* out, float* acc, Py_ssize_t n)
    float wb_expf(float x)


# Below this many elements of work handing chunks to other threads costs more than it saves:
# run on one thread.
cdef Py_ssize_t GRAIN = 32768

cdef enum:
    LANES = 256


cdef inline int _threads(Py_ssize_t work, int num_threads) noexcept:
    return 1 if work < GRAIN else max(num_threads, 1)


def set_grain(Py_ssize_t elements):
    """Set the work size below which kernels run on one thread; returns the previous one.

    Tests set 1 so that small inputs take the parallel paths too.
    """
    global GRAIN
    old, GRAIN = GRAIN, max(elements, 0)
    return old


cdef inline void _row(const float* x, float* o, Py_ssize_t n, bint log_out) noexcept nogil:
    cdef float mx = wb_row_max(x, n), shift, inv
    cdef Py_ssize_t j
    cdef float total = wb_exp_shift_sum(x, mx, o, n)
    if log_out:
        shift = logf(total)
        for j in range(n):
            o[j] = (x[j] - mx) - shift
    else:
        inv = 1.0 / total
        for j in range(n):
            o[j] = o[j] * inv


cdef inline void _lane_max(const float* x, float* mx, Py_ssize_t length, Py_ssize_t inner, Py_ssize_t w) noexcept nogil:
    """``mx[l]``: the maximum of lane ``l`` along stride ``inner`` (a NaN in the first row stays,
    later ones are passed over: exp(NaN - max) makes the result NaN either way)."""
    cdef Py_ssize_t a, l
    cdef const float* xr
    cdef float v
    for l in range(w):
        mx[l] = x[l]
    for a in range(1, length):
        xr = x + a * inner
        for l in range(w):
            v = xr[l]
            mx[l] = v if v > mx[l] else mx[l]


cdef inline void _lanes(const float* x, float* o, Py_ssize_t length, Py_ssize_t inner, Py_ssize_t w,
                        bint log_out) noexcept nogil:
    """Softmax along stride ``inner`` for ``w`` (<= LANES) adjacent lanes starting at x."""
    cdef float mx[LANES]
    cdef float total[LANES]
    cdef Py_ssize_t a, l
    cdef const float* xr
    cdef float* orow
    _lane_max(x, mx, length, inner, w)
    for l in range(w):
        total[l] = 0
    for a in range(length):
        wb_exp_shiftv_acc(x + a * inner, mx, o + a * inner, total, w)
    if log_out:
        for l in range(w):
            total[l] = logf(total[l])
        for a in range(length):
            xr = x + a * inner
            orow = o + a * inner
            for l in range(w):
                orow[l] = (xr[l] - mx[l]) - total[l]
    else:
        for l in range(w):
            total[l] = 1.0 / total[l]
        for a in range(length):
            orow = o + a * inner
            for l in range(w):
                orow[l] = orow[l] * total[l]


cdef struct _SoftmaxCtx:
    const float* x
    float* out
    Py_ssize_t length, inner, blocks
    Py_ssize_t jobs, group   # jobs in all; jobs per chunk (chunk i: jobs i * group ...)
    bint log_out


cdef void _rows_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """Rows i * group ... (``inner == 1``)."""
    cdef const _SoftmaxCtx* c = <const _SoftmaxCtx*> ctx
    cdef Py_ssize_t job, length = c.length, j0 = i * c.group, j1 = min(j0 + c.group, c.jobs)
    for job in range(j0, j1):
        _row(c.x + job * length, c.out + job * length, length, c.log_out)


cdef void _lanes_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """(outer, lane block) jobs i * group ... (``inner > 1``)."""
    cdef const _SoftmaxCtx* c = <const _SoftmaxCtx*> ctx
    cdef Py_ssize_t job, b, l0, length = c.length, inner = c.inner, blocks = c.blocks
    cdef Py_ssize_t j0 = i * c.group, j1 = min(j0 + c.group, c.jobs)
    for job in range(j0, j1):
        b = job // blocks
        l0 = (job % blocks) * LANES
        _lanes(c.x + b * length * inner + l0, c.out + b * length * inner + l0, length, inner,
               min(LANES, inner - l0), c.log_out)


cdef void _softmax(const float* x, float* out, Py_ssize_t outer, Py_ssize_t length, Py_ssize_t inner,
                   bint log_out, int nt) noexcept nogil:
    cdef _SoftmaxCtx c
    c.x, c.out, c.length, c.inner, c.log_out = x, out, length, inner, log_out
    c.blocks = (inner + LANES - 1) // LANES
    if inner == 1:
        c.jobs, c.group = outer, wb_jobs_per_chunk(outer, length, nt)
        wb_pool_run(_rows_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)
        return
    c.jobs = outer * c.blocks
    c.group = wb_jobs_per_chunk(c.jobs, length * min(LANES, inner), nt)
    wb_pool_run(_lanes_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)


def _check(what, arrays, Py_ssize_t outer, Py_ssize_t length, Py_ssize_t inner):
    """Each ``(name, array, elements)`` a C-contiguous float32 array of that many elements, the
    last one (the output) writable; before any ``nogil`` code runs."""
    for name, a, n in arrays:
        float32_array(a, name, what)
        if outer < 0 or length < 0 or inner < 0 or a.size != n:
            raise ValueError(f"{what}: {name} has {a.size} elements, (outer, length, inner) = "
                             f"({outer}, {length}, {inner}) needs {n}")
    name, a, n = arrays[len(arrays) - 1]   # no negative indices: the kernels build without wraparound
    if not a.flags.writeable:
        raise ValueError(f"{what}: {name} is read-only")


def softmax(x, out, Py_ssize_t outer, Py_ssize_t length, Py_ssize_t inner, bint log_out=False, int num_threads=1):
    """Softmax (or LogSoftmax with ``log_out``) of ``x`` viewed as (outer, length, inner) over
    its middle axis, into ``out``.

    Parameters
    ----------
    x, out : ndarray, float32, C-contiguous, ``outer * length * inner`` elements each
    """
    _check("softmax", (("x", x, outer * length * inner), ("out", out, outer * length * inner)), outer, length, inner)
    if out.size == 0:
        return out
    cdef int nt = _threads(out.size, num_threads)
    cdef const float* px = <const float*> cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef float* po = <float*> cnp.PyArray_DATA(<cnp.ndarray> out)
    with nogil:
        _softmax(px, po, outer, length, inner, log_out, nt)
    return out


cdef inline void _dot_lanes(const float* x, const float* wt, float bias, float* o, Py_ssize_t length,
                            Py_ssize_t inner, Py_ssize_t w) noexcept nogil:
    """``o[l] = sum_a softmax_a(x[a * inner + l]) * wt[a] + bias`` for ``w`` (<= LANES) lanes."""
    cdef float mx[LANES]
    cdef float total[LANES]
    cdef float acc[LANES]
    cdef float e[LANES]
    cdef Py_ssize_t a, l
    cdef float wa
    _lane_max(x, mx, length, inner, w)
    for l in range(w):
        total[l] = 0
        acc[l] = 0
    for a in range(length):
        wb_exp_shiftv_acc(x + a * inner, mx, e, total, w)
        wa = wt[a]
        for l in range(w):
            acc[l] = acc[l] + e[l] * wa
    for l in range(w):
        o[l] = acc[l] / total[l] + bias


cdef struct _DotCtx:
    const float* x
    const float* w
    float* out
    float bias
    Py_ssize_t length, inner, blocks, jobs, group


cdef void _dot_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """(outer, lane block) jobs i * group ..."""
    cdef const _DotCtx* c = <const _DotCtx*> ctx
    cdef Py_ssize_t job, b, l0, j0 = i * c.group, j1 = min(j0 + c.group, c.jobs)
    for job in range(j0, j1):
        b = job // c.blocks
        l0 = (job % c.blocks) * LANES
        _dot_lanes(c.x + b * c.length * c.inner + l0, c.w, c.bias, c.out + b * c.inner + l0, c.length, c.inner,
                   min(LANES, c.inner - l0))


def softmax_dot(x, w, float bias, out, Py_ssize_t outer, Py_ssize_t length, Py_ssize_t inner, int num_threads=1):
    """``out[o, l] = sum_a softmax(x[o, :, l])_a * w[a] + bias``: ``x`` viewed as (outer, length,
    inner), the softmax over its middle axis, then its weighted sum over that axis.

    Parameters
    ----------
    x : ndarray, float32, C-contiguous, ``outer * length * inner`` elements
    w : ndarray, float32, C-contiguous, ``length`` elements
    out : ndarray, float32, C-contiguous, ``outer * inner`` elements
    """
    _check("softmax_dot", (("x", x, outer * length * inner), ("w", w, length), ("out", out, outer * inner)),
           outer, length, inner)
    if out.size == 0:
        return out
    if length == 0:
        raise ValueError("softmax_dot: the softmax axis is empty")
    cdef _DotCtx c
    c.x = <const float*> cnp.PyArray_DATA(<cnp.ndarray> x)
    c.w = <const float*> cnp.PyArray_DATA(<cnp.ndarray> w)
    c.out = <float*> cnp.PyArray_DATA(<cnp.ndarray> out)
    c.bias, c.length, c.inner = bias, length, inner
    c.blocks = (inner + LANES - 1) // LANES
    c.jobs = outer * c.blocks
    cdef int nt = _threads(outer * length * inner, num_threads)
    c.group = wb_jobs_per_chunk(c.jobs, length * min(LANES, inner), nt)
    with nogil:
        wb_pool_run(_dot_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)
    return out


def softmax_rows(x, out, Py_ssize_t rows, Py_ssize_t cols, bint log_out=False, int num_threads=1):
    """Softmax (or LogSoftmax) of each row of ``x`` viewed as (rows, cols): :func:`softmax` with inner 1."""
    return softmax(x, out, rows, cols, 1, log_out, num_threads)


def exp(x, out):
    """``out = exp(x)`` elementwise by the kernels' polynomial (for tests of its accuracy)."""
    if not (isinstance(x, np.ndarray) and isinstance(out, np.ndarray) and x.dtype == out.dtype == np.float32
            and x.flags.c_contiguous and out.flags.c_contiguous and x.size == out.size and out.flags.writeable):
        raise ValueError("exp: x and out must be writable C-contiguous float32 arrays of one size")
    cdef const float* px = <const float*> cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef float* po = <float*> cnp.PyArray_DATA(<cnp.ndarray> out)
    cdef Py_ssize_t n = x.size
    if n:
        with nogil:
            wb_exp_shift_sum(px, 0, po, n)
    return out
