# cython: language_level=3
"""Softmax and LogSoftmax over the rows of a float32 matrix (the reduced axis made contiguous).

Per row: the maximum, ``e = exp(x - max)`` and its sum (float64, as the reference's pairwise
float32 sum is closer to exact than a running float32 one), then ``e / sum`` or
``x - max - log(sum)``; rows are shared among the threads.
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport expf, log

cnp.import_array()


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


cdef void _softmax_rows(const float* x, float* out, Py_ssize_t rows, Py_ssize_t cols, bint log_out,
                        int nt) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef const float* xr
    cdef float* o
    cdef float mx, inv, shift
    cdef double total
    for r in prange(rows, schedule="static", num_threads=nt):
        xr = x + r * cols
        o = out + r * cols
        mx = xr[0]
        for j in range(1, cols):
            mx = xr[j] if xr[j] > mx else mx
        total = 0
        for j in range(cols):
            o[j] = expf(xr[j] - mx)
            total = total + o[j]
        if log_out:
            shift = <float> log(total)
            for j in range(cols):
                o[j] = (xr[j] - mx) - shift
        else:
            inv = <float> (1.0 / total)
            for j in range(cols):
                o[j] = o[j] * inv


def softmax_rows(x, out, Py_ssize_t rows, Py_ssize_t cols, bint log_out=False, int num_threads=1):
    """Softmax (or LogSoftmax with ``log_out``) of each row of ``x`` viewed as (rows, cols), into ``out``.

    Parameters
    ----------
    x, out : ndarray, float32, C-contiguous, ``rows * cols`` elements each
    """
    for name, a in (("x", x), ("out", out)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"softmax_rows: {name} must be a NumPy array, got {type(a).__name__}")
        if a.dtype != np.float32:
            raise TypeError(f"softmax_rows: {name} must be float32, got {a.dtype}")
        if not a.flags.c_contiguous:
            raise ValueError(f"softmax_rows: {name} must be C-contiguous")
        if a.size != rows * cols or rows < 0 or cols < 0:
            raise ValueError(f"softmax_rows: {name} has {a.size} elements, rows * cols = {rows} * {cols}")
    if not out.flags.writeable:
        raise ValueError("softmax_rows: out is read-only")
    if rows * cols == 0:
        return out
    cdef int nt = _threads(rows * cols, num_threads)
    cdef const float* px = <const float*> cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef float* po = <float*> cnp.PyArray_DATA(<cnp.ndarray> out)
    with nogil:
        _softmax_rows(px, po, rows, cols, log_out, nt)
    return out
