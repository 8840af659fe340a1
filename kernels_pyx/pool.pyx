# isa-variants: avx2, avx512
# cython: language_level=3
"""Max and average pooling of float32 tensors (NCHW and NHWC) and the global pools.

The window geometry is turned into tables once (:class:`Pool2d`): for every output row and
column the range of kernel taps that land inside the input.  Windows are folded separably
(rows first, then columns of folded rows), and the inner loops run without bounds tests: over
output columns (NCHW) or over channels (NHWC), both vectorisable.  Taps in the padding are
skipped, which is what the reference's padding fill amounts to: the lowest float
for MaxPool (a window wholly in the padding gives it), zero for AveragePool, whose divisor
counts the taps exactly as the reference does (``count_include_pad``, never ceil_mode's extra).
The window kernels are in ``_pool_windows.pxd``, the global pools' in ``_pool_global.pxd``; this
module builds the tables, checks every shape and runs them on the shared thread pool.
"""
import numpy as np
cimport numpy as cnp
from _pool_global cimport _global_nhwc, _global_rows
from _pool_windows cimport _PoolCtx, _direct_chunk, _nchw_chunk, _nhwc_chunk, _nhwc_rows_chunk
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

from workbench._kernels.conv_gemm import pixel_rows

from workbench._kernels.checks import float32_array, scratch_array

cnp.import_array()
wb_pool_import()

cdef extern from "wb_pool512.h" nogil:
    int WB_POOL512_NATIVE


# Below this many elements of work handing chunks to other threads costs more than it saves:
# run on one thread.
cdef Py_ssize_t GRAIN = 32768


cdef inline int _threads(Py_ssize_t work, int num_threads) noexcept:
    return 1 if work < GRAIN else max(num_threads, 1)


# Parallel loops run on the shared pool (wb_pool.h) in chunks; small jobs (short output rows,
# small planes) are grouped, contiguous ones several to a chunk (wb_jobs_per_chunk).
def set_grain(Py_ssize_t elements):
    """Set the work size below which kernels run on one thread; returns the previous one.

    Tests set 1 so that small inputs take the parallel paths too.
    """
    global GRAIN
    old, GRAIN = GRAIN, max(elements, 0)
    return old


cdef enum:
    CBLOCK = 64   # NHWC channels per job: the scratch rows of a band stay in L2


cdef inline float* _f(cnp.ndarray a) noexcept:
    return <float*> cnp.PyArray_DATA(a)


cdef inline int* _i(cnp.ndarray a) noexcept:
    return <int*> cnp.PyArray_DATA(a)


def _check(x, y, expected_y, what):
    float32_array(x, "input", what)
    float32_array(y, "output", what, writeable=True)
    if tuple(y.shape) != tuple(expected_y):
        raise ValueError(f"{what}: input {x.shape} needs output {tuple(expected_y)}, got {y.shape}")


def _axis_tables(size, out, k, s, d, pb, pe, include_pad):
    """Per output: first/last+1 tap inside the input; per tap: first/last+1 output; 1/count."""
    pos = np.arange(out)[:, None] * s + np.arange(k)[None, :] * d - pb   # (out, k) input index
    inside = (pos >= 0) & (pos < size)
    any_o, any_k = inside.any(axis=1), inside.any(axis=0)
    t_lo = np.where(any_o, inside.argmax(axis=1), 0)
    t_hi = np.where(any_o, k - inside[:, ::-1].argmax(axis=1), 0)
    o_lo = np.where(any_k, inside.argmax(axis=0), 0)
    o_hi = np.where(any_k, out - inside[::-1, :].argmax(axis=0), 0)
    lo, hi = (-pb, size + pe) if include_pad else (0, size)
    count = ((pos >= lo) & (pos < hi)).sum(axis=1)
    inv = (1.0 / np.maximum(count, 1)).astype(np.float32)
    as32 = lambda a: np.ascontiguousarray(a, np.int32)
    return as32(t_lo), as32(t_hi), as32(o_lo), as32(o_hi), inv


cdef class Pool2d:
    """A 2-D pooling window over an (H, W) input giving (OH, OW), with its precomputed tables.

    Both layouts pool separably: each input row is first folded over the horizontal taps (a row
    of OW values, or OW pixels of a channel block), then output rows fold those rows over the
    vertical taps, so a KxK window costs about 2K operations per output instead of K^2 (what
    YOLO's 5x5/9x9/13x13 stride-1 pools need).  Jobs are (plane or channel block, band of output
    rows); each thread folds a job's input rows into its own slice of the scratch.

    Parameters
    ----------
    in_hw, out_hw : (int, int)
    kernel, strides, dilations : (int, int)
    pads : 4 ints, ONNX order (top, left, bottom, right)
    is_max : bool
        MaxPool, else AveragePool.
    count_include_pad : bool
        AveragePool's divisor counts the explicit padding.
    """

    cdef readonly int H, W, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl, o_a, o_b
    cdef readonly bint is_max
    cdef cnp.ndarray kh_lo, kh_hi, oh_lo, oh_hi, kw_lo, kw_hi, ow_lo, ow_hi, inv_h, inv_w

    def __init__(self, in_hw, out_hw, kernel, strides, dilations, pads, bint is_max, bint count_include_pad=False):
        self.H, self.W = in_hw
        self.OH, self.OW = out_hw
        self.KH, self.KW = kernel
        self.sh, self.sw = strides
        self.dh, self.dw = dilations
        self.pt, self.pl = pads[0], pads[1]
        self.is_max = is_max
        if min(self.H, self.W, self.OH, self.OW, self.KH, self.KW, self.sh, self.sw, self.dh, self.dw) < 1:
            raise ValueError(f"Pool2d: sizes, kernel, strides and dilations must be positive, got input "
                             f"{in_hw}, output {out_hw}, kernel {kernel}, strides {strides}, dilations {dilations}")
        self.kh_lo, self.kh_hi, self.oh_lo, self.oh_hi, self.inv_h = _axis_tables(
            self.H, self.OH, self.KH, self.sh, self.dh, pads[0], pads[2], count_include_pad)
        self.kw_lo, self.kw_hi, self.ow_lo, self.ow_hi, self.inv_w = _axis_tables(
            self.W, self.OW, self.KW, self.sw, self.dw, pads[1], pads[3], count_include_pad)
        full = np.flatnonzero((self.kw_lo == 0) & (self.kw_hi == self.KW))
        # Columns with every tap inside form one run (the window slides monotonically).
        self.o_a, self.o_b = (int(full[0]), int(full[-1]) + 1) if full.size else (0, 0)

    def _bands(self, Py_ssize_t jobs, int nt):
        """Output rows per band: enough bands that every thread gets several jobs."""
        cdef Py_ssize_t want = max(1, min(self.OH, (4 * nt + max(jobs, 1) - 1) // max(jobs, 1))) if nt > 1 else 1
        return (self.OH + want - 1) // want

    cdef Py_ssize_t _scratch_floats(self, Py_ssize_t n, Py_ssize_t c, bint nhwc, int nt):
        """Floats of scratch rows :meth:`nchw` / :meth:`nhwc` use for ``n`` images of ``c``
        channels on ``nt`` threads (0 where the window is folded without them)."""
        cdef Py_ssize_t cb
        if not nhwc:
            if self.sh > 1 or self.KH < 3:
                return 0
            return self._rows_in(self._bands(n * c, nt)) * self.OW * nt
        if WB_POOL512_NATIVE and self.KH * self.KW <= 2 * (self.KH + self.KW):
            return 0
        cb = min(c, CBLOCK)
        return self._rows_in(self._bands(n * ((c + cb - 1) // cb), nt)) * self.OW * cb * nt

    def scratch_bytes(self, Py_ssize_t n, Py_ssize_t c, bint nhwc, int num_threads=1):
        """Bytes of the ``scratch`` :meth:`nchw` (``nhwc`` False) or :meth:`nhwc` needs for ``n``
        images of ``c`` channels with up to ``num_threads`` threads."""
        return 4 * max(self._scratch_floats(n, c, nhwc, t) for t in range(1, max(num_threads, 1) + 1))

    cdef float* _scratch_of(self, scratch, Py_ssize_t n, list keep) except NULL:
        """``n`` floats of the caller's ``scratch``, or (None) of a new array kept in ``keep``."""
        buf = scratch_array(scratch, 4 * n, "Pool2d")
        keep.append(buf)
        return <float*> cnp.PyArray_DATA(<cnp.ndarray> buf)

    def _rows_in(self, Py_ssize_t band):
        return min(self.H, (band - 1) * self.sh + (self.KH - 1) * self.dh + 1)

    def nchw(self, x, y, int num_threads=1, scratch=None):
        """Pool ``x`` (N, C, H, W) into ``y`` (N, C, OH, OW); both float32, C-contiguous.
        ``scratch``: at least :meth:`scratch_bytes` (None: this call allocates what it needs)."""
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[2:] != (self.H, self.W):
            raise ValueError(f"Pool2d.nchw: expected input (N, C, {self.H}, {self.W}), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        _check(x, y, (x.shape[0], x.shape[1], self.OH, self.OW), "Pool2d.nchw")
        if not x.size:
            return y
        cdef int nt = _threads(x.size + y.size, num_threads)
        cdef Py_ssize_t planes = x.shape[0] * x.shape[1], band = self._bands(planes, nt)
        if self.sh > 1 or self.KH < 3:
            # Few overlapping rows: folding every tap straight into the output row costs no more
            # taps and skips the scratch rows (strided 2x2/3x3 pools run ~2x faster so).
            self._nchw_direct(_f(x), _f(y), planes, nt)
            return y
        cdef Py_ssize_t per = self._rows_in(band) * self.OW
        keep = []
        self._nchw(_f(x), _f(y), planes, band, self._scratch_of(scratch, per * nt, keep), per, nt)
        return y

    cdef void _ctx(self, _PoolCtx* c, const float* x, float* y, Py_ssize_t jobs, Py_ssize_t work,
                   int nt) noexcept:
        """Fill ``c`` with the tables and geometry, for ``jobs`` jobs of about ``work`` elements."""
        c.x, c.y = x, y
        c.kh_lo, c.kh_hi, c.kw_lo, c.kw_hi = _i(self.kh_lo), _i(self.kh_hi), _i(self.kw_lo), _i(self.kw_hi)
        c.ow_lo, c.ow_hi = _i(self.ow_lo), _i(self.ow_hi)
        c.inv_h, c.inv_w = _f(self.inv_h), _f(self.inv_w)
        c.H, c.W, c.OH, c.OW, c.KH, c.KW = self.H, self.W, self.OH, self.OW, self.KH, self.KW
        c.sh, c.sw, c.dh, c.dw, c.pt, c.pl = self.sh, self.sw, self.dh, self.dw, self.pt, self.pl
        c.o_a, c.o_b = self.o_a, self.o_b
        c.is_max = self.is_max
        c.jobs = jobs
        c.group = wb_jobs_per_chunk(jobs, work, nt)

    cdef void _nchw_direct(self, const float* x, float* y, Py_ssize_t planes, int nt) noexcept:
        cdef _PoolCtx c
        self._ctx(&c, x, y, planes * self.OH, self.OW * self.KH * self.KW, nt)
        with nogil:
            wb_pool_run(_direct_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)

    def nhwc(self, x, y, int num_threads=1, scratch=None):
        """Pool ``x`` (N, H, W, C) into ``y`` (N, OH, OW, C); both float32, C-contiguous or channel
        slices of wider NHWC buffers (a Concat's parts, a Split's views).  ``scratch`` as :meth:`nchw`."""
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1:3] != (self.H, self.W):
            raise ValueError(f"Pool2d.nhwc: expected input (N, {self.H}, {self.W}, C), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if not isinstance(y, np.ndarray) or y.dtype != np.float32 or x.dtype != np.float32:
            _check(x, y, (x.shape[0], self.OH, self.OW, x.shape[3]), "Pool2d.nhwc")   # the TypeError
        cdef Py_ssize_t ldx = pixel_rows(x, "Pool2d.nhwc: input")[1]
        cdef Py_ssize_t ldy = pixel_rows(y, "Pool2d.nhwc: output", writeable=True)[1]
        if tuple(y.shape) != (x.shape[0], self.OH, self.OW, x.shape[3]):
            raise ValueError(f"Pool2d.nhwc: input {x.shape} needs output {(x.shape[0], self.OH, self.OW, x.shape[3])}, "
                             f"got {y.shape}")
        if not x.size:
            return y
        cdef int nt = _threads(x.size + y.size, num_threads)
        cdef _PoolCtx r
        if WB_POOL512_NATIVE and self.KH * self.KW <= 2 * (self.KH + self.KW):
            # Small windows: each pixel's taps folded in registers (wb_pool512.h).  Large ones
            # (YOLO's 5x5 and up) stay separable: about 2K folds a pixel instead of K^2.
            self._ctx(&r, _f(x), _f(y), x.shape[0] * self.OH, self.OW * x.shape[3] * self.KH * self.KW, nt)
            r.C, r.ldx, r.ldy = x.shape[3], ldx, ldy
            with nogil:
                wb_pool_run(_nhwc_rows_chunk, &r, (r.jobs + r.group - 1) // r.group, nt)
            return y
        cdef Py_ssize_t C = x.shape[3], cb = min(C, CBLOCK), blocks = (C + cb - 1) // cb
        cdef Py_ssize_t band = self._bands(x.shape[0] * blocks, nt)
        cdef Py_ssize_t per = self._rows_in(band) * self.OW * cb
        keep = []
        self._nhwc(_f(x), _f(y), x.shape[0], C, ldx, ldy, cb, band, self._scratch_of(scratch, per * nt, keep), per, nt)
        return y

    cdef void _nchw(self, const float* x, float* y, Py_ssize_t planes, Py_ssize_t band, float* scratch,
                    Py_ssize_t per, int nt) noexcept:
        cdef _PoolCtx c
        cdef Py_ssize_t bands = (self.OH + band - 1) // band
        self._ctx(&c, x, y, planes * bands, band * self.OW * (self.KH + self.KW), nt)
        c.scratch, c.per, c.band, c.bands = scratch, per, band, bands
        with nogil:
            wb_pool_run(_nchw_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)

    cdef void _nhwc(self, const float* x, float* y, Py_ssize_t n, Py_ssize_t C, Py_ssize_t ldx, Py_ssize_t ldy,
                    Py_ssize_t cb, Py_ssize_t band, float* scratch, Py_ssize_t per, int nt) noexcept:
        cdef _PoolCtx c
        cdef Py_ssize_t blocks = (C + cb - 1) // cb, bands = (self.OH + band - 1) // band
        self._ctx(&c, x, y, n * blocks * bands, band * self.OW * cb * (self.KH + self.KW), nt)
        c.scratch, c.per, c.band, c.bands, c.C, c.cb, c.blocks = scratch, per, band, bands, C, cb, blocks
        c.ldx, c.ldy = ldx, ldy
        with nogil:
            wb_pool_run(_nhwc_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)


def global_pool_nchw(x, y, bint is_max, int num_threads=1):
    """Mean or max over every axis after the first two: ``x`` (N, C, ...) -> ``y`` (N, C, 1, ...)."""
    if not isinstance(x, np.ndarray) or x.ndim < 3:
        raise ValueError(f"global_pool_nchw: expected an input of rank >= 3, got {getattr(x, 'shape', type(x).__name__)}")
    _check(x, y, x.shape[:2] + (1,) * (x.ndim - 2), "global_pool_nchw")
    cdef Py_ssize_t rows = x.shape[0] * x.shape[1], cols = x.size // max(rows, 1)
    if x.size:
        _global_rows(_f(x), _f(y), rows, cols, is_max, _threads(x.size, num_threads))
    return y


def global_pool_nhwc(x, y, bint is_max, int num_threads=1):
    """Mean or max over H and W of ``x`` (N, H, W, C) into ``y`` (N, 1, 1, C)."""
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"global_pool_nhwc: expected a 4-D input, got {getattr(x, 'shape', type(x).__name__)}")
    _check(x, y, (x.shape[0], 1, 1, x.shape[3]), "global_pool_nhwc")
    if x.size:
        _global_nhwc(_f(x), _f(y), x.shape[0], x.shape[1] * x.shape[2], x.shape[3], is_max,
                     _threads(x.size, num_threads))
    return y
