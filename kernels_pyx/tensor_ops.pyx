# cython: language_level=3
"""Data movement: block copies (Concat, Split, reshape-like copies) and index-table gathers (Pad,
Slice, nearest Resize), for NCHW and NHWC tensors (the bilinear Resize lerp: ``resize_lerp.pyx``).

The routines (``workbench.routines.tensor_ops``) compute every index and weight table once, with
the reference's own functions; these kernels only move data.  Each ``def`` checks shapes, dtypes,
contiguity and every table entry against the arrays before the ``nogil`` loop runs.  The loops run
on the shared thread pool (``wb_pool.h``), short rows several to a chunk.
"""
import numpy as np
cimport numpy as cnp
from libc.string cimport memcpy
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

from workbench._kernels.conv_gemm import pixel_rows

cnp.import_array()
wb_pool_import()


# Below this many elements of work handing chunks to other threads costs more than it saves:
# run on one thread.
cdef Py_ssize_t GRAIN = 32768


cdef inline int _threads(Py_ssize_t work, int num_threads) noexcept:
    return 1 if work < GRAIN else max(num_threads, 1)


# A pool chunk costs a claim and a completion count on cache lines every thread touches: short
# jobs (an NHWC pixel's channels, a narrow row) are grouped, contiguous ones, up to about this many
# elements of work.
def set_grain(Py_ssize_t elements):
    """Set the work size below which kernels run on one thread; returns the previous one.

    Tests set 1 so that small inputs take the parallel paths too.
    """
    global GRAIN
    old, GRAIN = GRAIN, max(elements, 0)
    return old


def _array(a, name, what, dtype=None, writeable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what}: {name} must be a NumPy array, got {type(a).__name__}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{what}: {name} must be {np.dtype(dtype)}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what}: {name} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{what}: {name} is read-only")


cdef inline char* _data(a) noexcept:
    return <char*> cnp.PyArray_DATA(<cnp.ndarray> a)


# -- block copies -----------------------------------------------------------------------------------
cdef struct _CopyCtx:
    const char* src
    char* dst
    Py_ssize_t width, src_ld, dst_ld, chunk, chunks   # bytes
    Py_ssize_t jobs, group   # (row, piece) jobs in all; jobs per pool chunk


cdef void _copy_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef const _CopyCtx* c = <const _CopyCtx*> ctx
    cdef Py_ssize_t job, o, j0, chunks = c.chunks, chunk = c.chunk, j1 = min((i + 1) * c.group, c.jobs)
    for job in range(i * c.group, j1):
        o = job // chunks
        j0 = (job % chunks) * chunk
        memcpy(c.dst + o * c.dst_ld + j0, c.src + o * c.src_ld + j0, min(chunk, c.width - j0))


cdef void _copy_blocks(const char* src, char* dst, Py_ssize_t outer, Py_ssize_t width, Py_ssize_t src_ld,
                       Py_ssize_t dst_ld, Py_ssize_t chunk, int nt) noexcept nogil:
    cdef _CopyCtx c
    c.src, c.dst, c.width, c.src_ld, c.dst_ld, c.chunk = src, dst, width, src_ld, dst_ld, chunk
    c.chunks = (width + chunk - 1) // chunk
    c.jobs = outer * c.chunks
    c.group = wb_jobs_per_chunk(c.jobs, chunk // 4, nt)   # work in floats' worth of bytes, as _threads counts it
    wb_pool_run(_copy_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)


def copy_blocks(src, dst, Py_ssize_t outer, Py_ssize_t width, Py_ssize_t src_ld, Py_ssize_t src_offset,
                Py_ssize_t dst_ld, Py_ssize_t dst_offset, int num_threads=1):
    """Copy ``outer`` rows of ``width`` elements: row o from ``src[o * src_ld + src_offset:]`` to
    ``dst[o * dst_ld + dst_offset:]`` (flat element indices; any dtype, the same in both).

    Concat is one call per input (``dst_ld`` the concatenated row), Split one per output, and a
    plain copy ``outer=1``.  Rows are split into chunks when there are fewer rows than threads.
    """
    what = "copy_blocks"
    _array(src, "src", what)
    _array(dst, "dst", what, writeable=True)
    if src.dtype != dst.dtype:
        raise TypeError(f"{what}: src is {src.dtype}, dst is {dst.dtype}")
    if min(outer, width, src_ld, dst_ld, src_offset, dst_offset) < 0:
        raise ValueError(f"{what}: negative sizes or offsets")
    for name, arr, ld, off in (("src", src, src_ld, src_offset), ("dst", dst, dst_ld, dst_offset)):
        if outer and width and (off + width > ld and outer > 1 or (outer - 1) * ld + off + width > arr.size):
            raise ValueError(f"{what}: {outer} rows of {width} at offset {off}, stride {ld} overrun {name} "
                             f"({arr.size} elements)")
    if outer == 0 or width == 0:
        return dst
    cdef Py_ssize_t item = src.itemsize, nt = _threads(outer * width * item // 4, num_threads)
    # Split a row only when the rows alone cannot feed the threads, and never below 64 KiB.
    cdef Py_ssize_t chunk = width * item
    if outer < 4 * nt and nt > 1:
        chunk = max(65536, -(-width * item * outer // (4 * nt)))
    cdef const char* s = _data(src) + src_offset * item
    cdef char* d = _data(dst) + dst_offset * item
    with nogil:
        _copy_blocks(s, d, outer, width * item, src_ld * item, dst_ld * item, min(chunk, width * item), nt)
    return dst


# -- interleaved concat / split ------------------------------------------------------------------
# An NHWC channel concat copies a few dozen bytes per input per pixel: one copy_blocks call per
# input made a memcpy call of 64 bytes per pixel and input, and that call cost more than the bytes.
# Here each row (pixel) is filled from every part in turn, in one pass over the output, with the
# short copies inlined.
cdef enum:
    MAX_PARTS = 64

cdef struct _PartsCtx:
    char* whole
    Py_ssize_t ld            # bytes per row of the whole
    int n
    char* part[MAX_PARTS]
    Py_ssize_t width[MAX_PARTS]   # bytes per row of each part
    Py_ssize_t offset[MAX_PARTS]  # its bytes' offset in a row of the whole
    Py_ssize_t rows, group
    bint split


cdef inline void _move(char* d, const char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    if n > 256 or n % 4:
        memcpy(d, s, n)
        return
    for j in range(n // 4):
        (<float*> d)[j] = (<const float*> s)[j]


cdef void _parts_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef const _PartsCtx* c = <const _PartsCtx*> ctx
    cdef Py_ssize_t r, p, w
    cdef char* row
    for r in range(i * c.group, min(c.rows, (i + 1) * c.group)):
        row = c.whole + r * c.ld
        for p in range(c.n):
            w = c.width[p]
            if c.split:
                _move(c.part[p] + r * w, row + c.offset[p], w)
            else:
                _move(row + c.offset[p], c.part[p] + r * w, w)


def interleave(parts, whole, Py_ssize_t rows, widths, bint split=False, int num_threads=1):
    """Concat (``split`` False: ``whole[r] = part0[r] ++ part1[r] ++ ...``) or Split (the other
    way) of ``rows`` rows, part ``i`` holding ``widths[i]`` elements per row and ``whole`` their
    sum; any dtype, the same in all.  For many short rows (an NHWC channel concat); see
    :func:`copy_blocks` for few long ones."""
    what = "interleave"
    cdef _PartsCtx c
    if len(parts) != len(widths) or not 0 < len(parts) <= MAX_PARTS:
        raise ValueError(f"{what}: {len(parts)} parts and {len(widths)} widths (1 to {MAX_PARTS} parts)")
    _array(whole, "whole", what, writeable=not split)
    if rows < 0 or min(widths) < 0:
        raise ValueError(f"{what}: negative sizes")
    cdef Py_ssize_t item = whole.itemsize, total = sum(widths), off = 0
    if whole.size != rows * total:
        raise ValueError(f"{what}: whole has {whole.size} elements, expected {rows} rows of {total}")
    for i, (a, w) in enumerate(zip(parts, widths)):
        _array(a, f"part {i}", what, dtype=whole.dtype, writeable=split)
        if a.size != rows * w:
            raise ValueError(f"{what}: part {i} has {a.size} elements, expected {rows} rows of {w}")
        c.part[i], c.width[i], c.offset[i] = _data(a), w * item, off * item
        off += w
    c.whole, c.ld, c.n, c.rows, c.split = _data(whole), total * item, len(parts), rows, split
    cdef int nt = _threads(rows * total * item // 4, num_threads)
    c.group = wb_jobs_per_chunk(rows, max(1, total * item // 4), nt)
    with nogil:
        wb_pool_run(_parts_chunk, &c, (rows + c.group - 1) // c.group, nt)
    return whole


# -- index-table gather -------------------------------------------------------------------------------
cdef struct _GatherCtx:
    const float* x
    float* out
    Py_ssize_t xld, old   # floats from one row (along the last axis) to the next
    const Py_ssize_t* xs
    const Py_ssize_t* os
    const int* t0
    const int* t1
    const int* t2
    const int* t3
    bint t3_run
    float fill
    Py_ssize_t jobs, group   # output rows in all; rows per chunk


cdef void _gather_go(_GatherCtx c, int nt) noexcept nogil:
    """Run a checked gather (``c`` copied: the split between threads is per call)."""
    c.jobs = c.os[0] * c.os[1] * c.os[2]
    if c.jobs == 0 or c.os[3] == 0:
        return
    c.group = wb_jobs_per_chunk(c.jobs, c.os[3], nt)
    # Whole lines, several a chunk where there are lines enough to share (four chunks a thread),
    # so that a chunk can copy the lines that repeat the one before.
    if c.group >= c.os[2]:
        c.group = c.group // c.os[2] * c.os[2]
    elif c.jobs // c.os[2] >= 4 * nt:
        c.group = c.os[2] * (c.jobs // c.os[2] // (4 * nt))
    wb_pool_run(_gather_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)


cdef void _gather_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """Output rows (along the last axis) i * group ... of :func:`gather4`, walked a line (the
    rows of one (i0, i1)) at a time.  A line whose source line is the previous line's (nearest
    upsampling repeats each one) is copied from that line where the chunk computed it and the lines
    are contiguous: one long copy instead of a gather per pixel."""
    cdef const _GatherCtx* c = <const _GatherCtx*> ctx
    cdef const float* x = c.x
    cdef float* out = c.out
    cdef const Py_ssize_t* xs = c.xs
    cdef const Py_ssize_t* os = c.os
    cdef const int* t0 = c.t0
    cdef const int* t1 = c.t1
    cdef const int* t2 = c.t2
    cdef const int* t3 = c.t3
    cdef bint t3_run = c.t3_run
    cdef float fill = c.fill
    cdef Py_ssize_t W = os[2], L = os[3], line_len = W * c.old
    cdef Py_ssize_t job, i0, i1, i2, l, end, rest, p0, p1, j0 = i * c.group, j1 = min(j0 + c.group, c.jobs)
    cdef const float* base
    cdef const float* src
    cdef float* o
    job = j0
    while job < j1:
        i2 = job % W
        rest = job // W
        i1 = rest % os[1]
        i0 = rest // os[1]
        end = min(j1, job + W - i2)
        o = out + job * c.old
        if i2 == 0 and end - job == W and job - W >= j0 and c.old == L:
            p1 = i1 - 1 if i1 > 0 else os[1] - 1
            p0 = i0 if i1 > 0 else i0 - 1
            if t0[p0] == t0[i0] and t1[p1] == t1[i1]:
                memcpy(o, o - line_len, line_len * sizeof(float))
                job = end
                continue
        base = x + (t0[i0] * xs[1] + t1[i1]) * xs[2] * c.xld
        while job < end:
            if t0[i0] < 0 or t1[i1] < 0 or t2[i2] < 0:
                for l in range(L):
                    o[l] = fill
            else:
                src = base + t2[i2] * c.xld
                if t3_run:
                    _move(<char*> o, <const char*> (src + t3[0]), L * sizeof(float))
                else:
                    for l in range(L):
                        o[l] = src[t3[l]] if t3[l] >= 0 else fill
            job += 1
            i2 += 1
            o += c.old


def gather4(x, out, tables, float fill=0, int num_threads=1):
    """``out[i, j, k, l] = x[t0[i], t1[j], t2[k], t3[l]]``, or ``fill`` where any index is -1.

    Parameters
    ----------
    x, out : ndarray, float32, 4-D (physical order, whatever the layout), C-contiguous or a slice
        along the last axis of a larger such array (evenly spaced rows: a Concat's part)
    tables : 4 ndarrays, int32, one per axis of ``out``, entries in ``[-1, x.shape[axis])``
    """
    cdef _GatherCtx c
    cdef Py_ssize_t xs[4]
    cdef Py_ssize_t os[4]
    _gather_init(&c, xs, os, x, out, tables, fill)
    cdef int nt = _threads(out.size, num_threads)
    with nogil:
        _gather_go(c, nt)
    return out


cdef class Gather4:
    """:func:`gather4` on fixed arrays and tables, checked once when made; each call
    ``(num_threads)`` runs it (an executor's step: the checks cost more than a small gather)."""
    cdef _GatherCtx c
    cdef Py_ssize_t xs[4]
    cdef Py_ssize_t os[4]
    cdef Py_ssize_t size
    cdef tuple keep

    def __init__(self, x, out, tables, float fill=0):
        _gather_init(&self.c, self.xs, self.os, x, out, tables, fill)
        self.size, self.keep = out.size, (x, out, tuple(tables))

    def __call__(self, int num_threads):
        cdef int nt = _threads(self.size, num_threads)
        with nogil:
            _gather_go(self.c, nt)


cdef int _gather_init(_GatherCtx* c, Py_ssize_t* xs, Py_ssize_t* os, x, out, tables, float fill) except -1:
    """Check a :func:`gather4` call and fill ``c`` (the shapes in ``xs`` and ``os``, which it
    points at), all but the split between threads."""
    what = "gather4"
    if not (isinstance(x, np.ndarray) and isinstance(out, np.ndarray) and x.ndim == 4 and out.ndim == 4
            and len(tables) == 4):
        raise ValueError(f"{what}: needs 4-D x and out and 4 tables, got {getattr(x, 'shape', x)}, "
                         f"{getattr(out, 'shape', out)}, {len(tables)} tables")
    c.xld = pixel_rows(x, f"{what}: x")[1]
    c.old = pixel_rows(out, f"{what}: out", writeable=True)[1]
    for axis, t in enumerate(tables):
        _array(t, f"table {axis}", what, np.int32)
        if t.ndim != 1 or t.size != out.shape[axis]:
            raise ValueError(f"{what}: table {axis} has {t.size} entries, out has {out.shape[axis]} on that axis")
        if t.size and (t.min() < -1 or t.max() >= x.shape[axis]):
            raise ValueError(f"{what}: table {axis} indexes outside [-1, {x.shape[axis]})")
    if x.size == 0 and out.size and not all((t < 0).any() or t.size == 0 for t in tables):
        raise ValueError(f"{what}: x is empty but the tables read from it")
    for axis in range(4):
        xs[axis], os[axis] = x.shape[axis], out.shape[axis]
    t3 = tables[3]
    c.t3_run = out.size and bool(t3[0] >= 0 and np.array_equal(t3, np.arange(t3[0], t3[0] + t3.size, dtype=np.int32)))
    c.x, c.out, c.xs, c.os, c.fill = <const float*> _data(x), <float*> _data(out), xs, os, fill
    c.t0, c.t1 = <const int*> _data(tables[0]), <const int*> _data(tables[1])
    c.t2, c.t3 = <const int*> _data(tables[2]), <const int*> _data(t3)
    return 0
