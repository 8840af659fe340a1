# isa-variants: avx2, avx512
# cython: language_level=3
"""Elementwise float32 kernels: broadcasting binary arithmetic and per-channel affine/activation.

:func:`binary` walks up to four coalesced loop dimensions with an element stride per operand
(0 where it broadcasts), so one kernel serves same-shape, scalar, per-channel and per-(n, c)
operands in either memory layout: the caller (``workbench.routines.eltwise``) turns logical
broadcasting into strides.  The innermost loop is specialised, per op at compile time through a
fused type, for the three stride pairs that vectorise: (1, 1), (1, 0) and (0, 1).

:func:`channel_rows` is ``act(x * scale[c] + shift[c])`` over a (rows, cols) matrix whose channel
is the row (NCHW, modulo C) or the column (NHWC); with no scale/shift it is a plain activation.
Both run the fused activation on each block while it is still in cache.

:func:`unary` maps exp, erf, tanh, sigmoid, SiLU or GELU over an array with the branch-free
polynomials of ``wb_vmath.h`` (vectorised per ISA variant, no libm call per element); the same
functions serve as activation codes 6, 8-13 here.  Codes 9-13 exist only in this module: the
convolution kernels share ``_epilogue.pxd``'s codes 0-8.
"""
import numpy as np
cimport numpy as cnp

from _epilogue cimport activate, ACT_PRELU
from _eltwise_rows cimport AddT, SubT, MulT, DivT, ACT_LAST, _act_row, _row, wbm_map
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()

UNARY = {"Sigmoid": 6, "Tanh": 8, "Silu": 9, "Gelu": 10, "GeluTanh": 11, "Erf": 12, "Exp": 13}


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


OPS = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3}


cdef struct _Bin:
    float* out
    const float* a
    const float* b
    const Py_ssize_t* d
    const Py_ssize_t* sa
    const Py_ssize_t* sb
    const Py_ssize_t* so   # the output's strides (its last 1)
    Py_ssize_t chunk, chunks, jobs, group
    int code, act
    float p0, p1


cdef void _binary_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _Bin* c = <_Bin*> ctx
    cdef Py_ssize_t job
    for job in range(i * c.group, min(c.jobs, (i + 1) * c.group)):
        _binary_job(c, job)


cdef inline void _binary_job(const _Bin* c, Py_ssize_t job) noexcept nogil:
    """Job ``job`` of the loop nest: ``chunk`` elements of one innermost row."""
    cdef const Py_ssize_t* d = c.d
    cdef Py_ssize_t r0 = (job % c.chunks) * c.chunk, rest = job // c.chunks
    cdef Py_ssize_t i2 = rest % d[2], i1, i0, n = min(c.chunk, d[3] - r0)
    rest = rest // d[2]
    i1 = rest % d[1]
    i0 = rest // d[1]
    cdef const float* pa = c.a + i0 * c.sa[0] + i1 * c.sa[1] + i2 * c.sa[2] + r0 * c.sa[3]
    cdef const float* pb = c.b + i0 * c.sb[0] + i1 * c.sb[1] + i2 * c.sb[2] + r0 * c.sb[3]
    cdef float* po = c.out + i0 * c.so[0] + i1 * c.so[1] + i2 * c.so[2] + r0
    if c.code == 0:
        _row(<AddT*> NULL, po, pa, c.sa[3], pb, c.sb[3], n)
    elif c.code == 1:
        _row(<SubT*> NULL, po, pa, c.sa[3], pb, c.sb[3], n)
    elif c.code == 2:
        _row(<MulT*> NULL, po, pa, c.sa[3], pb, c.sb[3], n)
    else:
        _row(<DivT*> NULL, po, pa, c.sa[3], pb, c.sb[3], n)
    _act_row(po, n, c.act, c.p0, c.p1, 0)


def _float32_array(a, name, what, writeable=False, contiguous=True):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what}: {name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{what}: {name} must be float32, got {a.dtype}")
    if contiguous and not a.flags.c_contiguous:
        raise ValueError(f"{what}: {name} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{what}: {name} is read-only")


def _rows_array(a, name, what, writeable=False):
    """A float32 array C-contiguous or with a contiguous last axis (a channel slice of a wider
    NHWC buffer): the operands and outputs of the strided loop nests here and in eltwise_chain."""
    _float32_array(a, name, what, writeable=writeable, contiguous=False)
    if not a.flags.c_contiguous and (a.ndim == 0 or a.strides[a.ndim - 1] != 4 or min(a.strides) < 0):
        raise ValueError(f"{what}: {name} must be C-contiguous or a view with a contiguous last axis "
                         f"(a channel slice), got strides {a.strides}")


def _chunk(Py_ssize_t outer, Py_ssize_t inner, int nt):
    """Split the inner loop only when the outer ones give too few jobs to share out."""
    want = 8 * nt if nt > 1 else 1
    if outer >= want:
        return max(inner, 1)
    return max(min(inner, max(1024, -(-inner * outer // want))), 1)


def binary(a, b, out, dims, a_strides, b_strides, str op, int act=0, float p0=0, float p1=0,
           int num_threads=1):
    """``out = act(a <op> b)`` over a loop nest of up to 4 dims with per-operand element strides.

    Parameters
    ----------
    a, b : ndarray, float32, C-contiguous or views with a contiguous last axis (a Concat's part)
        Operands, read at ``sum(i_k * strides[k])`` elements from their start (0 strides broadcast).
    out : ndarray, float32, ``prod(dims)`` elements, written in loop order: C-contiguous, or of
        shape ``dims`` with its last axis contiguous (a channel slice, written where it lies)
    dims, a_strides, b_strides : sequences of 4 ints (outermost first)
    op : {"Add", "Sub", "Mul", "Div"}
    act, p0, p1 : fused activation code and parameters (see ``_epilogue.pxd``; not PRelu)
    num_threads : int
    """
    cdef Py_ssize_t d[4]
    cdef Py_ssize_t sa[4]
    cdef Py_ssize_t sb[4]
    cdef Py_ssize_t so[4]
    cdef _Bin job
    _binary_init(&job, d, sa, sb, so, a, b, out, dims, a_strides, b_strides, op, act, p0, p1)
    _binary_go(&job, num_threads)
    return out


def _extent(a):
    """Elements from ``a``'s first to just past its last (its size when contiguous)."""
    return 1 + sum((n - 1) * st // a.itemsize for n, st in zip(a.shape, a.strides)) if a.size else 0


cdef int _binary_init(_Bin* job, Py_ssize_t* d, Py_ssize_t* sa, Py_ssize_t* sb, Py_ssize_t* so, a, b, out, dims,
                      a_strides, b_strides, str op, int act, float p0, float p1) except -1:
    """Check a :func:`binary` call and fill ``job`` (its loop nest in ``d``, ``sa``, ``sb``,
    ``so``), all but the split between threads (:func:`_binary_go`)."""
    what = "binary"
    for name, arr, w in (("a", a, False), ("b", b, False), ("out", out, True)):
        _rows_array(arr, name, what, writeable=w)
    if op not in OPS:
        raise ValueError(f"{what}: unknown op {op!r}; expected one of {sorted(OPS)}")
    if act == ACT_PRELU or not 0 <= act <= ACT_LAST:
        raise ValueError(f"{what}: activation code {act} is not supported here")
    if not (len(dims) == len(a_strides) == len(b_strides) == 4):
        raise ValueError(f"{what}: dims and strides need 4 values each, got {dims}, {a_strides}, {b_strides}")
    size = 1
    for k in range(4):
        d[k], sa[k], sb[k] = dims[k], a_strides[k], b_strides[k]
        if d[k] < 1 or sa[k] < 0 or sb[k] < 0:
            raise ValueError(f"{what}: dims {tuple(dims)} must be positive and strides non-negative")
        size *= d[k]
    if out.size != size:
        raise ValueError(f"{what}: out has {out.size} elements, the loop nest {tuple(dims)} writes {size}")
    if out.flags.c_contiguous:
        so[0], so[1], so[2], so[3] = d[1] * d[2] * d[3], d[2] * d[3], d[3], 1
    elif out.ndim == 4 and tuple(out.shape) == tuple(dims) and (out.strides[3] == 4 or d[3] == 1):
        for k in range(4):
            so[k] = out.strides[k] // 4 if d[k] > 1 else 0
        so[3] = 1
    else:
        raise ValueError(f"{what}: out must be C-contiguous, or of the loop nest's shape {tuple(dims)} with its "
                         f"last axis contiguous; got shape {out.shape}, strides {out.strides}")
    for name, arr, st in (("a", a, a_strides), ("b", b, b_strides)):
        last = sum((dd - 1) * x for dd, x in zip(dims, st))
        if last >= _extent(arr):
            raise ValueError(f"{what}: {name} spans {_extent(arr)} elements; dims {tuple(dims)} with strides "
                             f"{tuple(st)} read up to element {last}")
    job.out = <float*> cnp.PyArray_DATA(<cnp.ndarray> out)
    job.a = <const float*> cnp.PyArray_DATA(<cnp.ndarray> a)
    job.b = <const float*> cnp.PyArray_DATA(<cnp.ndarray> b)
    job.d, job.sa, job.sb, job.so = d, sa, sb, so
    job.code, job.act, job.p0, job.p1 = OPS[op], act, p0, p1
    return 0


cdef void _binary_go(_Bin* job, int num_threads):
    """Split ``job`` for ``num_threads`` threads and run it."""
    cdef const Py_ssize_t* d = job.d
    cdef int nt = _threads(d[0] * d[1] * d[2] * d[3], num_threads)
    cdef Py_ssize_t chunk = _chunk(d[0] * d[1] * d[2], d[3], nt)
    job.chunk, job.chunks = chunk, (d[3] + chunk - 1) // chunk
    job.jobs = d[0] * d[1] * d[2] * job.chunks
    job.group = wb_jobs_per_chunk(job.jobs, chunk, nt)
    with nogil:
        wb_pool_run(_binary_chunk, job, (job.jobs + job.group - 1) // job.group, nt)


cdef class Binary:
    """:func:`binary` on fixed arrays, checked once when made; each call ``(num_threads)`` runs it
    (an executor's step on its own buffers)."""
    cdef _Bin job
    cdef Py_ssize_t d[4]
    cdef Py_ssize_t sa[4]
    cdef Py_ssize_t sb[4]
    cdef Py_ssize_t so[4]
    cdef tuple keep

    def __init__(self, a, b, out, dims, a_strides, b_strides, str op, int act=0, float p0=0, float p1=0):
        _binary_init(&self.job, self.d, self.sa, self.sb, self.so, a, b, out, dims, a_strides, b_strides, op, act,
                     p0, p1)
        self.keep = (a, b, out)

    def __call__(self, int num_threads):
        cdef _Bin job = self.job   # the split is per call
        _binary_go(&job, num_threads)


cdef struct _Rows:
    const float* x
    float* out
    const float* scale
    const float* shift
    const float* slope
    Py_ssize_t cols, C, chunk, chunks, jobs, group
    bint channel_is_row
    int act
    float p0, p1


cdef void _channel_rows_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _Rows* c = <_Rows*> ctx
    cdef Py_ssize_t job
    for job in range(i * c.group, min(c.jobs, (i + 1) * c.group)):
        _channel_rows_job(c, job)


cdef inline void _channel_rows_job(const _Rows* c, Py_ssize_t job) noexcept nogil:
    cdef const float* scale = c.scale
    cdef const float* shift = c.shift
    cdef const float* slope = c.slope
    cdef int act = c.act
    cdef float p0 = c.p0, p1 = c.p1
    cdef Py_ssize_t r = job // c.chunks, j, ch
    cdef Py_ssize_t j0 = (job % c.chunks) * c.chunk, j1 = min(j0 + c.chunk, c.cols)
    cdef const float* xr = c.x + r * c.cols
    cdef float* o = c.out + r * c.cols
    cdef float sc, sh, sl
    if c.channel_is_row:
        ch = r % c.C
        sc = scale[ch] if scale != NULL else 1
        sh = shift[ch] if shift != NULL else 0
        sl = slope[ch] if slope != NULL else 0
        if scale != NULL or shift != NULL:
            for j in range(j0, j1):
                o[j] = xr[j] * sc + sh
        elif o != xr:
            for j in range(j0, j1):
                o[j] = xr[j]
        _act_row(o + j0, j1 - j0, act, p0, p1, sl)
    else:
        if scale != NULL and shift != NULL:
            for j in range(j0, j1):
                o[j] = xr[j] * scale[j] + shift[j]
        elif o != xr:
            for j in range(j0, j1):
                o[j] = xr[j]
        if slope != NULL:
            for j in range(j0, j1):
                o[j] = activate(o[j], act, p0, p1, slope[j])
        else:
            _act_row(o + j0, j1 - j0, act, p0, p1, 0)


def channel_rows(x, out, Py_ssize_t rows, Py_ssize_t cols, bint channel_is_row, scale=None, shift=None,
                 int act=0, float p0=0, float p1=0, slope=None, int num_threads=1):
    """``out = act(x * scale[c] + shift[c])`` on a (rows, cols) float32 matrix.

    Parameters
    ----------
    x, out : ndarray, float32, C-contiguous, ``rows * cols`` elements (``out`` may be ``x``)
    channel_is_row : bool
        The channel of row r is ``r % C`` (channels-first data), else the channel is the column
        (channels-last data, C == cols).
    scale, shift : ndarray, float32, (C,), optional
        Both or neither (then the data passes through to the activation).
    act, p0, p1 : fused activation (see ``_epilogue.pxd``)
    slope : ndarray, float32, (C,), optional
        Per-channel PRelu slope (``act`` == 7).
    """
    cdef _Rows job
    _rows_init(&job, x, out, rows, cols, channel_is_row, scale, shift, act, p0, p1, slope)
    _rows_go(&job, rows, num_threads)
    return out


cdef int _rows_init(_Rows* job, x, out, Py_ssize_t rows, Py_ssize_t cols, bint channel_is_row, scale, shift,
                    int act, float p0, float p1, slope) except -1:
    """Check a :func:`channel_rows` call and fill ``job``, all but its split (:func:`_rows_go`)."""
    what = "channel_rows"
    _float32_array(x, "x", what)
    _float32_array(out, "out", what, writeable=True)
    if rows < 0 or cols < 0 or x.size != rows * cols or out.size != rows * cols:
        raise ValueError(f"{what}: x ({x.size}) and out ({out.size}) must both have rows * cols = "
                         f"{rows} * {cols} elements")
    if (scale is None) != (shift is None):
        raise ValueError(f"{what}: give both scale and shift, or neither")
    if not 0 <= act <= ACT_LAST or (act == ACT_PRELU) != (slope is not None):
        raise ValueError(f"{what}: activation code {act} with slope {'given' if slope is not None else 'None'}")
    vectors = [v for v in (scale, shift, slope) if v is not None]
    cdef Py_ssize_t C = vectors[0].size if vectors else 1
    for name, v in (("scale", scale), ("shift", shift), ("slope", slope)):
        if v is not None:
            _float32_array(v, name, what)
            if v.ndim != 1 or v.size != C or C == 0:
                raise ValueError(f"{what}: {name} has shape {v.shape}; scale, shift and slope need one "
                                 f"equal non-zero length C")
    if vectors and not channel_is_row and C != cols:
        raise ValueError(f"{what}: channels-last data needs C == cols, got C={C}, cols={cols}")
    job.scale = job.shift = job.slope = NULL
    if scale is not None:
        job.scale = <const float*> cnp.PyArray_DATA(<cnp.ndarray> scale)
        job.shift = <const float*> cnp.PyArray_DATA(<cnp.ndarray> shift)
    if slope is not None:
        job.slope = <const float*> cnp.PyArray_DATA(<cnp.ndarray> slope)
    job.x, job.out = <const float*> cnp.PyArray_DATA(<cnp.ndarray> x), <float*> cnp.PyArray_DATA(<cnp.ndarray> out)
    job.cols, job.C = cols, C
    job.channel_is_row, job.act, job.p0, job.p1 = channel_is_row, act, p0, p1
    return 0


cdef void _rows_go(_Rows* job, Py_ssize_t rows, int num_threads):
    """Split ``job`` (``rows`` rows) for ``num_threads`` threads and run it."""
    if rows * job.cols == 0:
        return
    cdef int nt = _threads(rows * job.cols, num_threads)
    cdef Py_ssize_t chunk = _chunk(rows, job.cols, nt)
    job.chunk, job.chunks = chunk, (job.cols + chunk - 1) // chunk
    job.jobs = rows * job.chunks
    job.group = wb_jobs_per_chunk(job.jobs, chunk, nt)
    with nogil:
        wb_pool_run(_channel_rows_chunk, job, (job.jobs + job.group - 1) // job.group, nt)


cdef class ChannelRows:
    """:func:`channel_rows` on fixed arrays, checked once when made; each call ``(num_threads)``
    runs it (an executor's step on its own buffers)."""
    cdef _Rows job
    cdef Py_ssize_t rows
    cdef tuple keep

    def __init__(self, x, out, Py_ssize_t rows, Py_ssize_t cols, bint channel_is_row, scale=None, shift=None,
                 int act=0, float p0=0, float p1=0, slope=None):
        _rows_init(&self.job, x, out, rows, cols, channel_is_row, scale, shift, act, p0, p1, slope)
        self.rows, self.keep = rows, (x, out, scale, shift, slope)

    def __call__(self, int num_threads):
        cdef _Rows job = self.job
        _rows_go(&job, self.rows, num_threads)


cdef struct _Map:
    const float* x
    float* out
    Py_ssize_t n, chunk
    int code


cdef void _unary_chunk(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    cdef _Map* c = <_Map*> ctx
    cdef Py_ssize_t j0 = job * c.chunk
    wbm_map(c.code, c.x + j0, c.out + j0, min(c.chunk, c.n - j0))


def unary(x, out, str fn, int num_threads=1):
    """``out = fn(x)`` elementwise, for ``fn`` in :data:`UNARY` (x and out float32, C-contiguous,
    the same size; ``out`` may be ``x``)."""
    what = "unary"
    _float32_array(x, "x", what)
    _float32_array(out, "out", what, writeable=True)
    if fn not in UNARY:
        raise ValueError(f"{what}: unknown function {fn!r}; expected one of {sorted(UNARY)}")
    if x.size != out.size:
        raise ValueError(f"{what}: x has {x.size} elements, out {out.size}")
    cdef Py_ssize_t n = x.size
    if n == 0:
        return out
    cdef int nt = _threads(n, num_threads), code = UNARY[fn]
    cdef Py_ssize_t chunk = _chunk(1, n, nt)
    cdef _Map job
    job.x, job.out = <const float*> cnp.PyArray_DATA(<cnp.ndarray> x), <float*> cnp.PyArray_DATA(<cnp.ndarray> out)
    job.n, job.chunk, job.code = n, chunk, code
    with nogil:
        wb_pool_run(_unary_chunk, &job, (n + chunk - 1) // chunk, nt)
    return out
