# cython: language_level=3
"""LayerNormalization of float32 rows: ``y = (x - mean) / sqrt(var + eps) * scale + bias`` over
each row of ``cols`` elements (the normalized axes, flattened).

Per row: one pass for the mean and one for the variance of the centred values, both summed in
double, then one pass to write.  Rows are shared out on the pool (``wb_pool.h``), several to a
chunk.  NaN and Inf propagate as in ONNX Runtime (an Inf makes its row's variance NaN).
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport sqrt
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()

# Below this many elements handing chunks to other threads costs more than it saves.
cdef Py_ssize_t GRAIN = 32768


def set_grain(Py_ssize_t elements):
    """Set the work size below which the kernel runs on one thread; returns the previous one."""
    global GRAIN
    old, GRAIN = GRAIN, max(elements, 0)
    return old


cdef struct _LN:
    const float* x
    float* y
    const float* scale
    const float* bias
    Py_ssize_t rows, cols, group
    double eps


cdef inline void _row(const float* x, float* y, const float* s, const float* b, Py_ssize_t n,
                      double eps) noexcept nogil:
    cdef Py_ssize_t j
    cdef double total = 0, var = 0, d
    for j in range(n):
        total += x[j]
    cdef double mean = total / n
    for j in range(n):
        d = x[j] - mean
        var += d * d
    cdef float m = <float>mean, inv = <float>(1.0 / sqrt(var / n + eps))
    if b != NULL:
        for j in range(n):
            y[j] = (x[j] - m) * inv * s[j] + b[j]
    else:
        for j in range(n):
            y[j] = (x[j] - m) * inv * s[j]


cdef void _chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _LN* c = <_LN*> ctx
    cdef Py_ssize_t r
    for r in range(i * c.group, min(c.rows, (i + 1) * c.group)):
        _row(c.x + r * c.cols, c.y + r * c.cols, c.scale, c.bias, c.cols, c.eps)


def _f32(a, what, size=None, writeable=False):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        raise TypeError(f"layernorm: {what} must be a float32 NumPy array, got "
                        f"{getattr(a, 'dtype', type(a).__name__)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"layernorm: {what} must be C-contiguous")
    if size is not None and a.size != size:
        raise ValueError(f"layernorm: {what} has {a.size} elements, expected {size}")
    if writeable and not a.flags.writeable:
        raise ValueError(f"layernorm: {what} is read-only")


cdef int _init(_LN* c, x, y, Py_ssize_t rows, Py_ssize_t cols, scale, bias, double epsilon) except -1:
    if rows < 0 or cols < 1:
        raise ValueError(f"layernorm: {rows} rows of {cols} elements")
    _f32(x, "x", rows * cols)
    _f32(y, "y", rows * cols, writeable=True)
    _f32(scale, "scale", cols)
    if bias is not None:
        _f32(bias, "bias", cols)
    if not epsilon >= 0:
        raise ValueError(f"layernorm: epsilon must be >= 0, got {epsilon}")
    c.x, c.y = <const float*> cnp.PyArray_DATA(<cnp.ndarray> x), <float*> cnp.PyArray_DATA(<cnp.ndarray> y)
    c.scale = <const float*> cnp.PyArray_DATA(<cnp.ndarray> scale)
    c.bias = NULL
    if bias is not None:
        c.bias = <const float*> cnp.PyArray_DATA(<cnp.ndarray> bias)
    c.rows, c.cols, c.eps = rows, cols, epsilon
    return 0


cdef int _go(_LN* c, int num_threads) except -1:
    if num_threads < 1:
        raise ValueError(f"layernorm: num_threads must be >= 1, got {num_threads}")
    cdef int nt = 1 if c.rows * c.cols < GRAIN else num_threads
    c.group = wb_jobs_per_chunk(c.rows, c.cols, nt)
    with nogil:
        wb_pool_run(_chunk, c, (c.rows + c.group - 1) // c.group, nt)
    return 0


def layernorm(x, y, Py_ssize_t rows, Py_ssize_t cols, scale, bias=None, double epsilon=1e-5, int num_threads=1):
    """``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` per row of a (rows, cols) float32
    matrix (``y`` may be ``x``); ``scale`` and ``bias`` (or None) of ``cols`` elements."""
    cdef _LN c
    _init(&c, x, y, rows, cols, scale, bias, epsilon)
    _go(&c, num_threads)
    return y


cdef class LayerNorm:
    """:func:`layernorm` on fixed arrays, checked once when made; each call ``(num_threads)`` runs
    it (an executor's step on its own buffers)."""
    cdef _LN c
    cdef tuple keep

    def __init__(self, x, y, Py_ssize_t rows, Py_ssize_t cols, scale, bias=None, double epsilon=1e-5):
        _init(&self.c, x, y, rows, cols, scale, bias, epsilon)
        self.keep = (x, y, scale, bias)

    def __call__(self, int num_threads):
        cdef _LN c = self.c
        _go(&c, num_threads)
