# The window kernels of pool.pyx's Pool2d (all inline; pool.pyx builds the tables and runs these
# chunk functions on the shared pool).  The padding fill of MaxPool is the lowest float.
from libc.float cimport FLT_MAX


cdef extern from "wb_pool512.h" nogil:
    int wb_pool512_row(const float* x, float* y, Py_ssize_t b, Py_ssize_t oh, Py_ssize_t H, Py_ssize_t W,
                       Py_ssize_t C, Py_ssize_t ldx, Py_ssize_t ldy, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t sh,
                       Py_ssize_t sw, Py_ssize_t dh,
                       Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl, const int* kh_lo, const int* kh_hi,
                       const int* kw_lo, const int* kw_hi, const float* inv_h, const float* inv_w, int is_max)


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
        acc = -FLT_MAX if is_max else 0
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


cdef struct _PoolCtx:
    const float* x
    float* y
    float* scratch       # per floats for each slot (thread)
    const int* kh_lo
    const int* kh_hi
    const int* kw_lo
    const int* kw_hi
    const int* ow_lo
    const int* ow_hi
    const float* inv_h
    const float* inv_w
    Py_ssize_t H, W, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl, o_a, o_b
    Py_ssize_t per, band, bands, C, cb, blocks
    Py_ssize_t ldx, ldy   # NHWC: floats from one pixel to the next (C, or more in a channel slice)
    Py_ssize_t jobs, group   # jobs in all; jobs per chunk (chunk i: jobs i * group ...)
    bint is_max


# The chunk functions copy the context into locals first: stores through the output pointers
# could otherwise alias its fields (the build does not assume strict aliasing), which would
# reload them in the inner loops and keep those from vectorising.

cdef inline void _direct_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """Output rows (plane, oh) of chunk i, every tap folded straight into the output row."""
    cdef const _PoolCtx* c = <const _PoolCtx*> ctx
    cdef const float* x = c.x
    cdef float* y = c.y
    cdef const int* kh_lo = c.kh_lo
    cdef const int* kh_hi = c.kh_hi
    cdef const int* ow_lo = c.ow_lo
    cdef const int* ow_hi = c.ow_hi
    cdef const float* inv_h = c.inv_h
    cdef const float* inv_w = c.inv_w
    cdef Py_ssize_t job, p, oh, ow, kh, kw, lo, hi, H = c.H, W = c.W, OH = c.OH, OW = c.OW
    cdef Py_ssize_t KW = c.KW, sh = c.sh, sw = c.sw, dh = c.dh, dw = c.dw, pt = c.pt, pl = c.pl
    cdef Py_ssize_t j0 = i * c.group, j1 = min(j0 + c.group, c.jobs)
    cdef bint is_max = c.is_max
    cdef const float* xr
    cdef float* yr
    cdef float s
    for job in range(j0, j1):
        p = job // OH
        oh = job % OH
        yr = y + job * OW
        _fill(yr, OW, -FLT_MAX if is_max else 0)
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


cdef inline void _nchw_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """(plane, band of output rows) jobs of chunk i, the band's folded input rows in the slot's scratch."""
    cdef const _PoolCtx* c = <const _PoolCtx*> ctx
    cdef const float* x = c.x
    cdef float* y = c.y
    cdef const int* kh_lo = c.kh_lo
    cdef const int* kh_hi = c.kh_hi
    cdef const int* kw_lo = c.kw_lo
    cdef const int* kw_hi = c.kw_hi
    cdef const float* inv_h = c.inv_h
    cdef const float* inv_w = c.inv_w
    cdef Py_ssize_t H = c.H, W = c.W, OH = c.OH, OW = c.OW, KW = c.KW, KH = c.KH
    cdef Py_ssize_t sh = c.sh, sw = c.sw, dh = c.dh, dw = c.dw, pt = c.pt, pl = c.pl
    cdef Py_ssize_t o_a = c.o_a, o_b = c.o_b, band = c.band, bands = c.bands
    cdef Py_ssize_t j0 = i * c.group, j1 = min(j0 + c.group, c.jobs)
    cdef Py_ssize_t job, p, oh, oh0, oh1, r0, r1, ih, kh, ow
    cdef bint is_max = c.is_max
    cdef float* h = c.scratch + slot * c.per
    cdef float* yr
    cdef float s
    for job in range(j0, j1):
        p = job // bands
        oh0 = (job % bands) * band
        oh1 = min(oh0 + band, OH)
        r0 = max(oh0 * sh - pt, 0)
        r1 = min((oh1 - 1) * sh - pt + (KH - 1) * dh + 1, H)
        for ih in range(r0, r1):
            _hrow(x + (p * H + ih) * W, h + (ih - r0) * OW, OW, KW, sw, dw, pl, kw_lo, kw_hi, o_a, o_b, is_max)
        for oh in range(oh0, oh1):
            yr = y + (p * OH + oh) * OW
            if kh_hi[oh] <= kh_lo[oh]:
                _fill(yr, OW, -FLT_MAX if is_max else 0)
            for kh in range(kh_lo[oh], kh_hi[oh]):
                _fold_row(yr, h + (oh * sh + kh * dh - pt - r0) * OW, OW, 1, kh == kh_lo[oh], is_max)
            if not is_max:
                s = inv_h[oh]
                for ow in range(OW):
                    yr[ow] = yr[ow] * (s * inv_w[ow])


cdef inline void _nhwc_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """(image, channel block, band of output rows) jobs of chunk i, the band's folded input rows
    in the slot's scratch."""
    cdef const _PoolCtx* c = <const _PoolCtx*> ctx
    cdef const float* x = c.x
    cdef float* y = c.y
    cdef const int* kh_lo = c.kh_lo
    cdef const int* kh_hi = c.kh_hi
    cdef const int* kw_lo = c.kw_lo
    cdef const int* kw_hi = c.kw_hi
    cdef const float* inv_h = c.inv_h
    cdef const float* inv_w = c.inv_w
    cdef Py_ssize_t H = c.H, W = c.W, OH = c.OH, OW = c.OW, KH = c.KH, C = c.C, cb = c.cb
    cdef Py_ssize_t sh = c.sh, sw = c.sw, dh = c.dh, dw = c.dw, pt = c.pt, pl = c.pl
    cdef Py_ssize_t blocks = c.blocks, band = c.band, bands = c.bands, ldx = c.ldx, ldy = c.ldy
    cdef Py_ssize_t j0 = i * c.group, j1 = min(j0 + c.group, c.jobs)
    cdef Py_ssize_t job, b, c0, w, oh0, oh1, r0, r1, ih, oh, ow, kh, kw, ch, rest
    cdef bint is_max = c.is_max
    cdef float* h = c.scratch + slot * c.per
    cdef float* hv
    cdef float* yv
    cdef const float* xv
    cdef float s
    for job in range(j0, j1):
        oh0 = (job % bands) * band
        rest = job // bands
        c0 = (rest % blocks) * cb
        b = rest // blocks
        w = min(cb, C - c0)
        oh1 = min(oh0 + band, OH)
        r0 = max(oh0 * sh - pt, 0)
        r1 = min((oh1 - 1) * sh - pt + (KH - 1) * dh + 1, H)
        for ih in range(r0, r1):
            for ow in range(OW):
                hv = h + ((ih - r0) * OW + ow) * cb
                if kw_hi[ow] <= kw_lo[ow]:
                    _fill(hv, w, -FLT_MAX if is_max else 0)
                for kw in range(kw_lo[ow], kw_hi[ow]):
                    xv = x + ((b * H + ih) * W + ow * sw + kw * dw - pl) * ldx + c0
                    _fold_row(hv, xv, w, 1, kw == kw_lo[ow], is_max)
        for oh in range(oh0, oh1):
            for ow in range(OW):
                yv = y + ((b * OH + oh) * OW + ow) * ldy + c0
                if kh_hi[oh] <= kh_lo[oh]:
                    _fill(yv, w, -FLT_MAX if is_max else 0)
                for kh in range(kh_lo[oh], kh_hi[oh]):
                    _fold_row(yv, h + ((oh * sh + kh * dh - pt - r0) * OW + ow) * cb, w, 1, kh == kh_lo[oh], is_max)
                if not is_max:
                    s = inv_h[oh] * inv_w[ow]
                    for ch in range(w):
                        yv[ch] = yv[ch] * s


cdef inline void _nhwc_rows_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """Output rows (image, oh) of chunk i by the AVX-512 row kernel (wb_pool512.h)."""
    cdef const _PoolCtx* c = <const _PoolCtx*> ctx
    cdef Py_ssize_t job
    for job in range(i * c.group, min((i + 1) * c.group, c.jobs)):
        wb_pool512_row(c.x, c.y, job // c.OH, job % c.OH, c.H, c.W, c.C, c.ldx, c.ldy, c.OH, c.OW, c.sh, c.sw,
                       c.dh, c.dw, c.pt, c.pl, c.kh_lo, c.kh_hi, c.kw_lo, c.kw_hi, c.inv_h, c.inv_w, c.is_max)
