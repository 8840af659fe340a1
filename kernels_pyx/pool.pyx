# isa-variants: avx2, avx512
# cython: language_level=3
"""Max and average pooling of float32 tensors (NCHW and NHWC) and the global pools.

The window geometry is turned into tables once (:class:`Pool2d`): for every output row the
range of kernel rows that land inside the input, and for every kernel column the range of
output columns whose tap lands inside.  The inner loops then run without bounds tests: over
output columns (NCHW; strides 1 and 2 get constant-stride loops) or over channels (NHWC,
unit-stride), both vectorisable.  Taps in the
padding are skipped, which is what the reference's padding fill amounts to: the lowest float
for MaxPool (a window wholly in the padding gives it), zero for AveragePool, whose divisor
counts the taps exactly as the reference does (``count_include_pad``, never ceil_mode's extra).
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport prange

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


cdef inline void _tap_row(float* yr, const float* xs, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t sw,
                          bint is_max) noexcept nogil:
    """Fold one kernel tap into an output row: yr[o] = max/sum(yr[o], xs[o * sw]) for o in [lo, hi).

    Strides 1 and 2 get loops with a constant stride, which the compiler vectorises.
    """
    cdef Py_ssize_t o
    cdef float v
    if sw == 1:
        for o in range(lo, hi):
            v = xs[o]
            yr[o] = (v if v > yr[o] else yr[o]) if is_max else yr[o] + v
    elif sw == 2:
        for o in range(lo, hi):
            v = xs[2 * o]
            yr[o] = (v if v > yr[o] else yr[o]) if is_max else yr[o] + v
    else:
        for o in range(lo, hi):
            v = xs[o * sw]
            yr[o] = (v if v > yr[o] else yr[o]) if is_max else yr[o] + v


cdef class Pool2d:
    """A 2-D pooling window over an (H, W) input giving (OH, OW), with its precomputed tables.

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

    cdef readonly int H, W, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl
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

    def nchw(self, x, y, int num_threads=1):
        """Pool ``x`` (N, C, H, W) into ``y`` (N, C, OH, OW); both float32, C-contiguous."""
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[2:] != (self.H, self.W):
            raise ValueError(f"Pool2d.nchw: expected input (N, C, {self.H}, {self.W}), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        _check(x, y, (x.shape[0], x.shape[1], self.OH, self.OW), "Pool2d.nchw")
        if x.size:
            self._nchw(_f(x), _f(y), x.shape[0] * x.shape[1], _threads(x.size + y.size, num_threads))
        return y

    def nhwc(self, x, y, int num_threads=1):
        """Pool ``x`` (N, H, W, C) into ``y`` (N, OH, OW, C); both float32, C-contiguous."""
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1:3] != (self.H, self.W):
            raise ValueError(f"Pool2d.nhwc: expected input (N, {self.H}, {self.W}, C), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        _check(x, y, (x.shape[0], self.OH, self.OW, x.shape[3]), "Pool2d.nhwc")
        if x.size:
            self._nhwc(_f(x), _f(y), x.shape[0], x.shape[3], _threads(x.size + y.size, num_threads))
        return y

    cdef void _nchw(self, const float* x, float* y, Py_ssize_t planes, int nt) noexcept:
        cdef int* kh_lo = _i(self.kh_lo)
        cdef int* kh_hi = _i(self.kh_hi)
        cdef int* ow_lo = _i(self.ow_lo)
        cdef int* ow_hi = _i(self.ow_hi)
        cdef float* inv_h = _f(self.inv_h)
        cdef float* inv_w = _f(self.inv_w)
        cdef Py_ssize_t job, p, oh, ow, kh, kw, H = self.H, W = self.W, OH = self.OH, OW = self.OW
        cdef Py_ssize_t KW = self.KW, sh = self.sh, sw = self.sw, dh = self.dh, dw = self.dw
        cdef Py_ssize_t pt = self.pt, pl = self.pl, base
        cdef bint is_max = self.is_max
        cdef const float* xr
        cdef float* yr
        cdef float v, s
        # One job per output row: every row is written by exactly one thread.
        for job in prange(planes * OH, nogil=True, schedule="static", num_threads=nt):
            p = job // OH
            oh = job % OH
            yr = y + job * OW
            for ow in range(OW):
                yr[ow] = LOWEST if is_max else 0
            for kh in range(kh_lo[oh], kh_hi[oh]):
                xr = x + p * H * W + (oh * sh + kh * dh - pt) * W
                for kw in range(KW):
                    _tap_row(yr, xr + kw * dw - pl, ow_lo[kw], ow_hi[kw], sw, is_max)
            if not is_max:
                s = inv_h[oh]
                for ow in range(OW):
                    yr[ow] = yr[ow] * (s * inv_w[ow])

    cdef void _nhwc(self, const float* x, float* y, Py_ssize_t n, Py_ssize_t C, int nt) noexcept:
        cdef int* kh_lo = _i(self.kh_lo)
        cdef int* kh_hi = _i(self.kh_hi)
        cdef int* kw_lo = _i(self.kw_lo)
        cdef int* kw_hi = _i(self.kw_hi)
        cdef float* inv_h = _f(self.inv_h)
        cdef float* inv_w = _f(self.inv_w)
        cdef Py_ssize_t job, b, oh, ow, kh, kw, c, ih, iw, H = self.H, W = self.W, OH = self.OH, OW = self.OW
        cdef Py_ssize_t sh = self.sh, sw = self.sw, dh = self.dh, dw = self.dw, pt = self.pt, pl = self.pl
        cdef bint is_max = self.is_max
        cdef const float* xv
        cdef float* yv
        cdef float v, s
        for job in prange(n * OH, nogil=True, schedule="static", num_threads=nt):
            b = job // OH
            oh = job % OH
            for ow in range(OW):
                yv = y + (job * OW + ow) * C
                for c in range(C):
                    yv[c] = LOWEST if is_max else 0
                for kh in range(kh_lo[oh], kh_hi[oh]):
                    ih = oh * sh + kh * dh - pt
                    for kw in range(kw_lo[ow], kw_hi[ow]):
                        iw = ow * sw + kw * dw - pl
                        xv = x + ((b * H + ih) * W + iw) * C
                        if is_max:
                            for c in range(C):
                                v = xv[c]
                                yv[c] = v if v > yv[c] else yv[c]
                        else:
                            for c in range(C):
                                yv[c] = yv[c] + xv[c]
                if not is_max:
                    s = inv_h[oh] * inv_w[ow]
                    for c in range(C):
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
                acc[l] = v if v > acc[l] else acc[l]
        else:
            for l in range(LANES):
                acc[l] = acc[l] + xr[j + l]
    total = acc[0]
    for l in range(1, LANES):
        total = (acc[l] if acc[l] > total else total) if is_max else total + acc[l]
    for j in range(body, cols):
        v = xr[j]
        total = (v if v > total else total) if is_max else total + v
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
                    yv[c] = v if v > yv[c] else yv[c]
            else:
                for c in range(c0, c1):
                    yv[c] = yv[c] + xv[c]
        if not is_max:
            for c in range(c0, c1):
                yv[c] = yv[c] * inv
