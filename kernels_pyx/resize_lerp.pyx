# cython: language_level=3
"""The bilinear Resize lerp, NCHW and NHWC: ``out = lerp over rows of lerps over columns``, with
the row and column tables (low index, high index, weight) that ``workbench.routines.tensor_ops``
computes once with the reference's own functions.  Every table entry is checked against the
arrays before the ``nogil`` loop; the loops run on the shared pool (``wb_pool.h``), output rows
several to a chunk."""
import numpy as np
cimport numpy as cnp
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

from workbench._kernels.tensor_ops import _array

cnp.import_array()
wb_pool_import()

# Below this many elements of work handing chunks to other threads costs more than it saves.
cdef Py_ssize_t GRAIN = 32768


cdef inline int _threads(Py_ssize_t work, int num_threads) noexcept:
    return 1 if work < GRAIN else max(num_threads, 1)


def set_grain(Py_ssize_t elements):
    """Set the work size below which the lerp runs on one thread; returns the previous one."""
    global GRAIN
    old, GRAIN = GRAIN, max(elements, 0)
    return old


cdef inline char* _data(a) noexcept:
    return <char*> cnp.PyArray_DATA(<cnp.ndarray> a)


# -- bilinear resize -----------------------------------------------------------------------------------
cdef struct _LerpCtx:
    const float* x
    float* out
    const int* hl
    const int* hh
    const float* hw
    const int* wl
    const int* wh
    const float* ww
    Py_ssize_t H, W, C, OH, OW
    Py_ssize_t jobs, group   # output rows in all; rows per chunk


cdef void _lerp_nchw(const float* x, float* out, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                     Py_ssize_t OW, const int* hl, const int* hh, const float* hw, const int* wl, const int* wh,
                     const float* ww, int nt) noexcept nogil:
    cdef _LerpCtx c
    c.x, c.out, c.hl, c.hh, c.hw, c.wl, c.wh, c.ww = x, out, hl, hh, hw, wl, wh, ww
    c.H, c.W, c.C, c.OH, c.OW = H, W, 1, OH, OW
    c.jobs = planes * OH
    c.group = wb_jobs_per_chunk(c.jobs, OW * 4, nt)
    wb_pool_run(_lerp_nchw_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)


cdef void _lerp_nchw_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """Output rows (plane, oh) i * group ... of an NCHW bilinear resize."""
    cdef const _LerpCtx* c = <const _LerpCtx*> ctx
    cdef const float* x = c.x
    cdef float* out = c.out
    cdef const int* hl = c.hl
    cdef const int* hh = c.hh
    cdef const float* hw = c.hw
    cdef const int* wl = c.wl
    cdef const int* wh = c.wh
    cdef const float* ww = c.ww
    cdef Py_ssize_t H = c.H, W = c.W, OH = c.OH, OW = c.OW, j0 = i * c.group, j1 = min(j0 + c.group, c.jobs)
    cdef Py_ssize_t job, p, oh, ow
    cdef const float* r0
    cdef const float* r1
    cdef float* o
    cdef float a, b, u, v
    for job in range(j0, j1):
        p = job // OH
        oh = job % OH
        r0 = x + (p * H + hl[oh]) * W
        r1 = x + (p * H + hh[oh]) * W
        u = hw[oh]
        o = out + job * OW
        for ow in range(OW):
            # The reference's order: along H first (rows r0, r1), then along W.
            a = r0[wl[ow]] * (1 - u) + r1[wl[ow]] * u
            b = r0[wh[ow]] * (1 - u) + r1[wh[ow]] * u
            v = ww[ow]
            o[ow] = a * (1 - v) + b * v


cdef void _lerp_nhwc(const float* x, float* out, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                     Py_ssize_t OH, Py_ssize_t OW, const int* hl, const int* hh, const float* hw, const int* wl,
                     const int* wh, const float* ww, int nt) noexcept nogil:
    cdef _LerpCtx c
    c.x, c.out, c.hl, c.hh, c.hw, c.wl, c.wh, c.ww = x, out, hl, hh, hw, wl, wh, ww
    c.H, c.W, c.C, c.OH, c.OW = H, W, C, OH, OW
    c.jobs = N * OH
    c.group = wb_jobs_per_chunk(c.jobs, OW * C * 4, nt)
    wb_pool_run(_lerp_nhwc_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)


cdef void _lerp_nhwc_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """Output rows (image, oh) i * group ... of an NHWC bilinear resize."""
    cdef const _LerpCtx* cx = <const _LerpCtx*> ctx
    cdef const float* x = cx.x
    cdef float* out = cx.out
    cdef const int* hl = cx.hl
    cdef const int* hh = cx.hh
    cdef const float* hw = cx.hw
    cdef const int* wl = cx.wl
    cdef const int* wh = cx.wh
    cdef const float* ww = cx.ww
    cdef Py_ssize_t H = cx.H, W = cx.W, C = cx.C, OH = cx.OH, OW = cx.OW
    cdef Py_ssize_t j0 = i * cx.group, j1 = min(j0 + cx.group, cx.jobs)
    cdef Py_ssize_t job, n, oh, ow, c
    cdef const float* r0
    cdef const float* r1
    cdef float* o
    cdef float u, v, a, b
    for job in range(j0, j1):
        n = job // OH
        oh = job % OH
        r0 = x + (n * H + hl[oh]) * W * C
        r1 = x + (n * H + hh[oh]) * W * C
        u = hw[oh]
        for ow in range(OW):
            o = out + (job * OW + ow) * C
            v = ww[ow]
            for c in range(C):
                a = r0[wl[ow] * C + c] * (1 - u) + r1[wl[ow] * C + c] * u
                b = r0[wh[ow] * C + c] * (1 - u) + r1[wh[ow] * C + c] * u
                o[c] = a * (1 - v) + b * v


def lerp2d(x, out, bint nhwc, h_tables, w_tables, int num_threads=1):
    """Bilinear resampling of the spatial axes of a 4-D float32 tensor.

    Parameters
    ----------
    x, out : ndarray, float32, C-contiguous, (N, C, H, W) / (N, C, OH, OW), or NHWC with ``nhwc``
    h_tables, w_tables : (lo int32, hi int32, weight float32), one entry per output row / column:
        ``out = x[lo] * (1 - weight) + x[hi] * weight`` along each axis, H first.
    """
    what = "lerp2d"
    _array(x, "x", what, np.float32)
    _array(out, "out", what, np.float32, writeable=True)
    if x.ndim != 4 or out.ndim != 4:
        raise ValueError(f"{what}: needs 4-D x and out, got {x.shape} and {out.shape}")
    n, c, h, w = (x.shape[0], x.shape[3], x.shape[1], x.shape[2]) if nhwc else x.shape
    on, oc, oh, ow = (out.shape[0], out.shape[3], out.shape[1], out.shape[2]) if nhwc else out.shape
    if (on, oc) != (n, c):
        raise ValueError(f"{what}: x {x.shape} and out {out.shape} differ in batch or channels")
    for name, tabs, size, length in (("h_tables", h_tables, h, oh), ("w_tables", w_tables, w, ow)):
        if len(tabs) != 3:
            raise ValueError(f"{what}: {name} must be (lo, hi, weight)")
        for t, dt in zip(tabs, (np.int32, np.int32, np.float32)):
            _array(t, name, what, dt)
            if t.ndim != 1 or t.size != length:
                raise ValueError(f"{what}: {name} entries {t.size}, out has {length} on that axis")
        if length and min(tabs[0].min(), tabs[1].min()) < 0 or length and max(tabs[0].max(), tabs[1].max()) >= size:
            raise ValueError(f"{what}: {name} index outside [0, {size})")
    if out.size == 0:
        return out
    cdef int nt = _threads(out.size * 4, num_threads)
    cdef const int* hl = <const int*> _data(h_tables[0])
    cdef const int* hh = <const int*> _data(h_tables[1])
    cdef const float* hw = <const float*> _data(h_tables[2])
    cdef const int* wl = <const int*> _data(w_tables[0])
    cdef const int* wh = <const int*> _data(w_tables[1])
    cdef const float* ww = <const float*> _data(w_tables[2])
    cdef const float* px = <const float*> _data(x)
    cdef float* po = <float*> _data(out)
    cdef Py_ssize_t N = n, C = c, H = h, W = w, OH = oh, OW = ow
    with nogil:
        if nhwc:
            _lerp_nhwc(px, po, N, H, W, C, OH, OW, hl, hh, hw, wl, wh, ww, nt)
        else:
            _lerp_nchw(px, po, N * C, H, W, OH, OW, hl, hh, hw, wl, wh, ww, nt)
    return out
