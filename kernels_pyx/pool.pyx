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
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange, threadid

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


cdef float LOWEST = -3.4028234663852886e38

cdef enum:
    CBLOCK = 64   # NHWC channels per job: the scratch rows of a band stay in L2


cdef inline float* _f(cnp.ndarray a) noexcept:
    return <float*> cnp.PyArray_DATA(a)


cdef inline int* _i(cnp.ndarray a) noexcept:
    return <int*> cnp.PyArray_DATA(a)


def _check(x, y, expected_y, what):
    for name, a in (("input", x), ("output", y)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what}: {name} must be a NumPy array, got {type(a).__name__}")
        if a.dtype != np.float32:
            raise TypeError(f"{what}: {name} must be float32, got {a.dtype}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{what}: {name} must be C-contiguous")
    if not y.flags.writeable:
        raise ValueError(f"{what}: output is read-only")
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


cdef inline float _max(float u, float v) noexcept nogil:
    # NaN wins from either side, as in the reference (np.max).  ONNX Runtime's MaxPool folds with
    # MAXPS alone, so a NaN survives there only where its vector kernels fold it last; every NaN
    # it gives is one of ours, and windows without NaN agree exactly.
    return u if ((u > v) | (u != u)) else v


cdef inline float _fold(float acc, float v, bint is_max) noexcept nogil:
    return _max(acc, v) if is_max else acc + v


cdef inline void _fold_row(float* y, const float* a, Py_ssize_t n, Py_ssize_t step, bint first,
                           bint is_max) noexcept nogil:
    """y[o] = fold(y[o], a[o * step]) (or a copy when ``first``): one loop per case, without a
    branch inside, so that each vectorises."""
    cdef Py_ssize_t o
    if first:
        if step == 1:
            for o in range(n):
                y[o] = a[o]
        else:
            for o in range(n):
                y[o] = a[o * step]
    elif is_max:
        if step == 1:
            for o in range(n):
                y[o] = _max(y[o], a[o])
        elif step == 2:
            for o in range(n):
                y[o] = _max(y[o], a[2 * o])
        else:
            for o in range(n):
                y[o] = _max(y[o], a[o * step])
    else:
        if step == 1:
            for o in range(n):
                y[o] = y[o] + a[o]
        elif step == 2:
            for o in range(n):
                y[o] = y[o] + a[2 * o]
        else:
            for o in range(n):
                y[o] = y[o] + a[o * step]


cdef inline void _hrow(const float* xr, float* h, Py_ssize_t OW, Py_ssize_t KW, Py_ssize_t sw, Py_ssize_t dw,
                       Py_ssize_t pl, const int* kw_lo, const int* kw_hi, Py_ssize_t o_a, Py_ssize_t o_b,
                       bint is_max) noexcept nogil:
    """h[o] = fold of input row ``xr`` over the horizontal taps of output column o.

    Columns whose taps all fall inside ([o_a, o_b)) run tap by tap over the whole range, which
    the compiler vectorises; the few border columns run tap by tap each."""
    cdef Py_ssize_t o, kw
    cdef float acc
    for o in range(OW):
        if o_a <= o < o_b:
            continue
        acc = LOWEST if is_max else 0
        for kw in range(kw_lo[o], kw_hi[o]):
            acc = _fold(acc, xr[o * sw + kw * dw - pl], is_max)
        h[o] = acc
    if o_b <= o_a:
        return
    for kw in range(KW):
        _fold_row(h + o_a, xr + o_a * sw + kw * dw - pl, o_b - o_a, sw, kw == 0, is_max)


cdef inline void _fill(float* y, Py_ssize_t n, float v) noexcept nogil:
    cdef Py_ssize_t o
    for o in range(n):
        y[o] = v


cdef class Pool2d:
    """A 2-D pooling window over an (H, W) input giving (OH, OW), with its precomputed tables.

    Both layouts pool separably: each input row is first folded over the horizontal taps (a row
    of OW values, or OW pixels of a channel block), then output rows fold those rows over the
    vertical taps, so a KxK window costs about 2K operations per output instead of K^2 (what
    YOLO's 5x5/9x9/13x13 stride-1 pools need).  Jobs are (plane or channel block, band of output
    rows); each job keeps the folded input rows of its band in its own scratch.

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
    cdef object _scratch   # kept between calls: the executor allocates nothing per inference

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

    def _scratch_of(self, Py_ssize_t n):
        """A float32 work array of at least ``n`` floats, reused from call to call (each executor
        has its own Pool2d in its prepared state, so concurrent runs never share it)."""
        if self._scratch is None or self._scratch.size < n:
            self._scratch = np.empty(n, np.float32)
        return self._scratch

    def _rows_in(self, Py_ssize_t band):
        return min(self.H, (band - 1) * self.sh + (self.KH - 1) * self.dh + 1)

    def nchw(self, x, y, int num_threads=1):
        """Pool ``x`` (N, C, H, W) into ``y`` (N, C, OH, OW); both float32, C-contiguous."""
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
        scratch = self._scratch_of(per * nt)
        self._nchw(_f(x), _f(y), planes, band, _f(scratch), per, nt)
        return y

    cdef void _nchw_direct(self, const float* x, float* y, Py_ssize_t planes, int nt) noexcept:
        cdef int* kh_lo = _i(self.kh_lo)
        cdef int* kh_hi = _i(self.kh_hi)
        cdef int* ow_lo = _i(self.ow_lo)
        cdef int* ow_hi = _i(self.ow_hi)
        cdef float* inv_h = _f(self.inv_h)
        cdef float* inv_w = _f(self.inv_w)
        cdef Py_ssize_t job, p, oh, ow, kh, kw, lo, hi, H = self.H, W = self.W, OH = self.OH, OW = self.OW
        cdef Py_ssize_t KW = self.KW, sh = self.sh, sw = self.sw, dh = self.dh, dw = self.dw, pt = self.pt, pl = self.pl
        cdef bint is_max = self.is_max
        cdef const float* xr
        cdef float* yr
        cdef float s
        for job in prange(planes * OH, nogil=True, schedule="static", num_threads=nt):
            p = job // OH
            oh = job % OH
            yr = y + job * OW
            _fill(yr, OW, LOWEST if is_max else 0)
            for kh in range(kh_lo[oh], kh_hi[oh]):
                xr = x + p * H * W + (oh * sh + kh * dh - pt) * W
                for kw in range(KW):
                    lo = ow_lo[kw]
                    hi = ow_hi[kw]
                    if hi > lo:
                        _fold_row(yr + lo, xr + kw * dw - pl + lo * sw, hi - lo, sw, False, is_max)
            if not is_max:
                s = inv_h[oh]
                for ow in range(OW):
                    yr[ow] = yr[ow] * (s * inv_w[ow])

    def nhwc(self, x, y, int num_threads=1):
        """Pool ``x`` (N, H, W, C) into ``y`` (N, OH, OW, C); both float32, C-contiguous."""
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1:3] != (self.H, self.W):
            raise ValueError(f"Pool2d.nhwc: expected input (N, {self.H}, {self.W}, C), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        _check(x, y, (x.shape[0], self.OH, self.OW, x.shape[3]), "Pool2d.nhwc")
        if not x.size:
            return y
        cdef int nt = _threads(x.size + y.size, num_threads)
        cdef Py_ssize_t C = x.shape[3], cb = min(C, CBLOCK), blocks = (C + cb - 1) // cb
        cdef Py_ssize_t band = self._bands(x.shape[0] * blocks, nt)
        cdef Py_ssize_t per = self._rows_in(band) * self.OW * cb
        scratch = self._scratch_of(per * nt)
        self._nhwc(_f(x), _f(y), x.shape[0], C, cb, band, _f(scratch), per, nt)
        return y

    cdef void _nchw(self, const float* x, float* y, Py_ssize_t planes, Py_ssize_t band, float* scratch,
                    Py_ssize_t per, int nt) noexcept:
        cdef int* kh_lo = _i(self.kh_lo)
        cdef int* kh_hi = _i(self.kh_hi)
        cdef int* kw_lo = _i(self.kw_lo)
        cdef int* kw_hi = _i(self.kw_hi)
        cdef float* inv_h = _f(self.inv_h)
        cdef float* inv_w = _f(self.inv_w)
        cdef Py_ssize_t H = self.H, W = self.W, OH = self.OH, OW = self.OW, KW = self.KW, KH = self.KH
        cdef Py_ssize_t sh = self.sh, sw = self.sw, dh = self.dh, dw = self.dw, pt = self.pt, pl = self.pl
        cdef Py_ssize_t o_a = self.o_a, o_b = self.o_b, bands = (OH + band - 1) // band
        cdef Py_ssize_t job, p, oh, oh0, oh1, r0, r1, ih, kh, ow
        cdef bint is_max = self.is_max
        cdef float* h
        cdef float* yr
        cdef float s
        for job in prange(planes * bands, nogil=True, schedule="static", num_threads=nt):
            p = job // bands
            oh0 = (job % bands) * band
            oh1 = min(oh0 + band, OH)
            h = scratch + threadid() * per
            r0 = max(oh0 * sh - pt, 0)
            r1 = min((oh1 - 1) * sh - pt + (KH - 1) * dh + 1, H)
            for ih in range(r0, r1):
                _hrow(x + (p * H + ih) * W, h + (ih - r0) * OW, OW, KW, sw, dw, pl, kw_lo, kw_hi, o_a, o_b, is_max)
            for oh in range(oh0, oh1):
                yr = y + (p * OH + oh) * OW
                if kh_hi[oh] <= kh_lo[oh]:
                    _fill(yr, OW, LOWEST if is_max else 0)
                for kh in range(kh_lo[oh], kh_hi[oh]):
                    _fold_row(yr, h + (oh * sh + kh * dh - pt - r0) * OW, OW, 1, kh == kh_lo[oh], is_max)
                if not is_max:
                    s = inv_h[oh]
                    for ow in range(OW):
                        yr[ow] = yr[ow] * (s * inv_w[ow])

    cdef void _nhwc(self, const float* x, float* y, Py_ssize_t n, Py_ssize_t C, Py_ssize_t cb, Py_ssize_t band,
                    float* scratch, Py_ssize_t per, int nt) noexcept:
        cdef int* kh_lo = _i(self.kh_lo)
        cdef int* kh_hi = _i(self.kh_hi)
        cdef int* kw_lo = _i(self.kw_lo)
        cdef int* kw_hi = _i(self.kw_hi)
        cdef float* inv_h = _f(self.inv_h)
        cdef float* inv_w = _f(self.inv_w)
        cdef Py_ssize_t H = self.H, W = self.W, OH = self.OH, OW = self.OW, KH = self.KH
        cdef Py_ssize_t sh = self.sh, sw = self.sw, dh = self.dh, dw = self.dw, pt = self.pt, pl = self.pl
        cdef Py_ssize_t blocks = (C + cb - 1) // cb, bands = (OH + band - 1) // band
        cdef Py_ssize_t job, b, c0, w, oh0, oh1, r0, r1, ih, oh, ow, kh, kw, c, rest
        cdef bint is_max = self.is_max
        cdef float* h
        cdef float* hv
        cdef float* yv
        cdef const float* xv
        cdef float s
        for job in prange(n * blocks * bands, nogil=True, schedule="static", num_threads=nt):
            oh0 = (job % bands) * band
            rest = job // bands
            c0 = (rest % blocks) * cb
            b = rest // blocks
            w = min(cb, C - c0)
            oh1 = min(oh0 + band, OH)
            h = scratch + threadid() * per
            r0 = max(oh0 * sh - pt, 0)
            r1 = min((oh1 - 1) * sh - pt + (KH - 1) * dh + 1, H)
            for ih in range(r0, r1):
                for ow in range(OW):
                    hv = h + ((ih - r0) * OW + ow) * cb
                    if kw_hi[ow] <= kw_lo[ow]:
                        _fill(hv, w, LOWEST if is_max else 0)
                    for kw in range(kw_lo[ow], kw_hi[ow]):
                        xv = x + ((b * H + ih) * W + ow * sw + kw * dw - pl) * C + c0
                        _fold_row(hv, xv, w, 1, kw == kw_lo[ow], is_max)
            for oh in range(oh0, oh1):
                for ow in range(OW):
                    yv = y + ((b * OH + oh) * OW + ow) * C + c0
                    if kh_hi[oh] <= kh_lo[oh]:
                        _fill(yv, w, LOWEST if is_max else 0)
                    for kh in range(kh_lo[oh], kh_hi[oh]):
                        _fold_row(yv, h + ((oh * sh + kh * dh - pt - r0) * OW + ow) * cb, w, 1, kh == kh_lo[oh], is_max)
                    if not is_max:
                        s = inv_h[oh] * inv_w[ow]
                        for c in range(w):
                            yv[c] = yv[c] * s


def global_pool_nchw(x, y, bint is_max, int num_threads=1):
    """Mean or max over every axis after the first two: ``x`` (N, C, ...) -> ``y`` (N, C, 1, ...)."""
    if not isinstance(x, np.ndarray) or x.ndim < 3:
        raise ValueError(f"global_pool_nchw: expected an input of rank >= 3, got {getattr(x, 'shape', type(x).__name__)}")
    _check(x, y, x.shape[:2] + (1,) * (x.ndim - 2), "global_pool_nchw")
    cdef Py_ssize_t rows = x.shape[0] * x.shape[1], cols = x.size // max(rows, 1)
    if x.size:
        _global_rows(_f(x), _f(y), rows, cols, is_max, _threads(x.size, num_threads))
    return y


cdef enum:
    LANES = 16


cdef inline float _reduce_row(const float* xr, Py_ssize_t cols, bint is_max) noexcept nogil:
    """Sum or max of a row in LANES independent partial results: without -ffast-math the
    compiler keeps a single running sum/max sequential; separate lanes vectorise (and the sum
    is closer to the reference's pairwise one)."""
    cdef float acc[LANES]
    cdef Py_ssize_t j, l, block, body = cols - cols % LANES
    cdef float v, total
    for l in range(LANES):
        acc[l] = xr[0] if is_max else 0
    for block in range(body // LANES):
        j = block * LANES
        if is_max:
            for l in range(LANES):
                v = xr[j + l]
                acc[l] = _max(acc[l], v)
        else:
            for l in range(LANES):
                acc[l] = acc[l] + xr[j + l]
    total = acc[0]
    for l in range(1, LANES):
        total = _max(total, acc[l]) if is_max else total + acc[l]
    for j in range(body, cols):
        v = xr[j]
        total = _max(total, v) if is_max else total + v
    return total


cdef void _global_rows(const float* x, float* y, Py_ssize_t rows, Py_ssize_t cols, bint is_max, int nt) noexcept nogil:
    cdef Py_ssize_t r
    cdef float acc
    for r in prange(rows, schedule="static", num_threads=nt):
        acc = _reduce_row(x + r * cols, cols, is_max)
        y[r] = acc if is_max else acc / cols


def global_pool_nhwc(x, y, bint is_max, int num_threads=1):
    """Mean or max over H and W of ``x`` (N, H, W, C) into ``y`` (N, 1, 1, C)."""
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"global_pool_nhwc: expected a 4-D input, got {getattr(x, 'shape', type(x).__name__)}")
    _check(x, y, (x.shape[0], 1, 1, x.shape[3]), "global_pool_nhwc")
    if x.size:
        _global_nhwc(_f(x), _f(y), x.shape[0], x.shape[1] * x.shape[2], x.shape[3], is_max,
                     _threads(x.size, num_threads))
    return y


cdef void _global_nhwc(const float* x, float* y, Py_ssize_t n, Py_ssize_t hw, Py_ssize_t C, bint is_max,
                       int nt) noexcept nogil:
    # Jobs are (image, block of channels), so one image still spreads over the threads.
    cdef Py_ssize_t block = 64, blocks = (C + block - 1) // block
    cdef Py_ssize_t job, b, c0, c1, c, i
    cdef const float* xv
    cdef float* yv
    cdef float v, inv = 1.0 / hw
    for job in prange(n * blocks, schedule="static", num_threads=nt):
        b = job // blocks
        c0 = (job % blocks) * block
        c1 = min(c0 + block, C)
        yv = y + b * C
        xv = x + b * hw * C
        for c in range(c0, c1):
            yv[c] = xv[c]
        for i in range(1, hw):
            xv = x + (b * hw + i) * C
            if is_max:
                for c in range(c0, c1):
                    v = xv[c]
                    yv[c] = _max(yv[c], v)
            else:
                for c in range(c0, c1):
                    yv[c] = yv[c] + xv[c]
        if not is_max:
            for c in range(c0, c1):
                yv[c] = yv[c] * inv
