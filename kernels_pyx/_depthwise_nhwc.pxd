# The NHWC depthwise row kernels of depthwise.pyx (all inline; the module drives them).
from _depthwise_types cimport fptr, cfptr


# -- epilogue pieces: residual, PRelu over channels ---------------------------------------------

cdef inline void _add(fptr y, cfptr r, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        y[i] = y[i] + r[i]


cdef inline void _prelu_cols(fptr y, cfptr slope, Py_ssize_t rows, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t r, c
    cdef float v, t, zero = 0
    for r in range(rows):
        for c in range(C):
            v = y[r * C + c]
            t = zero if v > zero else v   # min(v, 0) and max(v, 0) that keep a NaN
            v = zero if v < zero else v
            y[r * C + c] = v + slope[c] * t


# -- NHWC ---------------------------------------------------------------------------------------

cdef inline void _row3_set(fptr o, cfptr base, cfptr x, cfptr w, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        o[c] = base[c] + x[c] * w[c] + x[c + C] * w[c + C] + x[c + 2 * C] * w[c + 2 * C]


cdef inline void _row3_add(fptr o, cfptr x, cfptr w, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        o[c] = o[c] + x[c] * w[c] + x[c + C] * w[c + C] + x[c + 2 * C] * w[c + 2 * C]


cdef inline void _row5_set(fptr o, cfptr base, cfptr x, cfptr w, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        o[c] = (base[c] + x[c] * w[c] + x[c + C] * w[c + C] + x[c + 2 * C] * w[c + 2 * C]
                + x[c + 3 * C] * w[c + 3 * C] + x[c + 4 * C] * w[c + 4 * C])


cdef inline void _row5_add(fptr o, cfptr x, cfptr w, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        o[c] = (o[c] + x[c] * w[c] + x[c + C] * w[c + C] + x[c + 2 * C] * w[c + 2 * C]
                + x[c + 3 * C] * w[c + 3 * C] + x[c + 4 * C] * w[c + 4 * C])


cdef inline void _tap_add(fptr o, cfptr x, cfptr w, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        o[c] = o[c] + x[c] * w[c]


cdef inline void _copy(fptr o, cfptr src, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        o[c] = src[c]


cdef inline void _tap_set(fptr o, cfptr base, cfptr x, cfptr w, Py_ssize_t C) noexcept nogil:
    cdef Py_ssize_t c
    for c in range(C):
        o[c] = base[c] + x[c] * w[c]


cdef inline void _tap1x4(fptr o0, fptr o1, fptr o2, fptr o3, cfptr base, cfptr x, cfptr w,
                         Py_ssize_t C, Py_ssize_t sC, bint add) noexcept nogil:
    cdef Py_ssize_t c
    cdef float w0
    if add:
        for c in range(C):
            w0 = w[c]
            o0[c] = o0[c] + x[c] * w0
            o1[c] = o1[c] + x[c + sC] * w0
            o2[c] = o2[c] + x[c + 2 * sC] * w0
            o3[c] = o3[c] + x[c + 3 * sC] * w0
    else:
        for c in range(C):
            w0 = w[c]
            o0[c] = base[c] + x[c] * w0
            o1[c] = base[c] + x[c + sC] * w0
            o2[c] = base[c] + x[c + 2 * sC] * w0
            o3[c] = base[c] + x[c + 3 * sC] * w0


# Four adjacent output pixels per pass share each weight load (the loads, not the FMAs, bound a
# depthwise kernel).  Separate output pointers let GCC see the four streams never overlap.
cdef inline void _row3x4(fptr o0, fptr o1, fptr o2, fptr o3, cfptr base, cfptr x, cfptr w,
                         Py_ssize_t C, Py_ssize_t sC, bint add) noexcept nogil:
    cdef Py_ssize_t c
    cdef float w0, w1, w2
    if add:
        for c in range(C):
            w0, w1, w2 = w[c], w[c + C], w[c + 2 * C]
            o0[c] = o0[c] + x[c] * w0 + x[c + C] * w1 + x[c + 2 * C] * w2
            o1[c] = o1[c] + x[c + sC] * w0 + x[c + sC + C] * w1 + x[c + sC + 2 * C] * w2
            o2[c] = o2[c] + x[c + 2 * sC] * w0 + x[c + 2 * sC + C] * w1 + x[c + 2 * sC + 2 * C] * w2
            o3[c] = o3[c] + x[c + 3 * sC] * w0 + x[c + 3 * sC + C] * w1 + x[c + 3 * sC + 2 * C] * w2
    else:
        for c in range(C):
            w0, w1, w2 = w[c], w[c + C], w[c + 2 * C]
            o0[c] = base[c] + x[c] * w0 + x[c + C] * w1 + x[c + 2 * C] * w2
            o1[c] = base[c] + x[c + sC] * w0 + x[c + sC + C] * w1 + x[c + sC + 2 * C] * w2
            o2[c] = base[c] + x[c + 2 * sC] * w0 + x[c + 2 * sC + C] * w1 + x[c + 2 * sC + 2 * C] * w2
            o3[c] = base[c] + x[c + 3 * sC] * w0 + x[c + 3 * sC + C] * w1 + x[c + 3 * sC + 2 * C] * w2


cdef inline void _row5x4(fptr o0, fptr o1, fptr o2, fptr o3, cfptr base, cfptr x, cfptr w,
                         Py_ssize_t C, Py_ssize_t sC, bint add) noexcept nogil:
    if add:
        _row5x4_add(o0, o1, o2, o3, x, w, C, sC)
    else:
        _row5x4_set(o0, o1, o2, o3, base, x, w, C, sC)


cdef inline void _row5x4_set(fptr o0, fptr o1, fptr o2, fptr o3, cfptr base, cfptr x, cfptr w,
                             Py_ssize_t C, Py_ssize_t sC) noexcept nogil:
    cdef Py_ssize_t c, q
    cdef float w0, w1, w2, w3, w4
    for c in range(C):
        w0, w1, w2, w3, w4 = w[c], w[c + C], w[c + 2 * C], w[c + 3 * C], w[c + 4 * C]
        q = c
        o0[c] = base[c] + x[q] * w0 + x[q + C] * w1 + x[q + 2 * C] * w2 + x[q + 3 * C] * w3 + x[q + 4 * C] * w4
        q = c + sC
        o1[c] = base[c] + x[q] * w0 + x[q + C] * w1 + x[q + 2 * C] * w2 + x[q + 3 * C] * w3 + x[q + 4 * C] * w4
        q = c + 2 * sC
        o2[c] = base[c] + x[q] * w0 + x[q + C] * w1 + x[q + 2 * C] * w2 + x[q + 3 * C] * w3 + x[q + 4 * C] * w4
        q = c + 3 * sC
        o3[c] = base[c] + x[q] * w0 + x[q + C] * w1 + x[q + 2 * C] * w2 + x[q + 3 * C] * w3 + x[q + 4 * C] * w4


cdef inline void _row5x4_add(fptr o0, fptr o1, fptr o2, fptr o3, cfptr x, cfptr w,
                             Py_ssize_t C, Py_ssize_t sC) noexcept nogil:
    cdef Py_ssize_t c, q
    cdef float w0, w1, w2, w3, w4
    for c in range(C):
        w0, w1, w2, w3, w4 = w[c], w[c + C], w[c + 2 * C], w[c + 3 * C], w[c + 4 * C]
        q = c
        o0[c] = o0[c] + x[q] * w0 + x[q + C] * w1 + x[q + 2 * C] * w2 + x[q + 3 * C] * w3 + x[q + 4 * C] * w4
        q = c + sC
        o1[c] = o1[c] + x[q] * w0 + x[q + C] * w1 + x[q + 2 * C] * w2 + x[q + 3 * C] * w3 + x[q + 4 * C] * w4
        q = c + 2 * sC
        o2[c] = o2[c] + x[q] * w0 + x[q + C] * w1 + x[q + 2 * C] * w2 + x[q + 3 * C] * w3 + x[q + 4 * C] * w4
        q = c + 3 * sC
        o3[c] = o3[c] + x[q] * w0 + x[q + C] * w1 + x[q + 2 * C] * w2 + x[q + 3 * C] * w3 + x[q + 4 * C] * w4


cdef inline void _row_x4(fptr o, cfptr base, cfptr x, cfptr w, Py_ssize_t C, Py_ssize_t sC,
                         Py_ssize_t KW, bint add) noexcept nogil:
    """Four adjacent pixels, one kernel row of KW taps, in chunks of 5, 3 and 1 taps: each chunk
    loads and stores the outputs once, so a 7-tap row costs three output passes, not seven."""
    cdef Py_ssize_t kw = 0, left
    while kw < KW:
        left = KW - kw
        if left >= 5:
            _row5x4(o, o + C, o + 2 * C, o + 3 * C, base, x + kw * C, w + kw * C, C, sC, add)
            kw = kw + 5
        elif left >= 3:
            _row3x4(o, o + C, o + 2 * C, o + 3 * C, base, x + kw * C, w + kw * C, C, sC, add)
            kw = kw + 3
        else:
            _tap1x4(o, o + C, o + 2 * C, o + 3 * C, base, x + kw * C, w + kw * C, C, sC, add)
            kw = kw + 1
        add = True


cdef inline void _row_x1(fptr o, cfptr base, cfptr x, cfptr w, Py_ssize_t C, Py_ssize_t KW,
                         bint add) noexcept nogil:
    """One pixel, one interior kernel row of KW taps, chunked as :c:func:`_row_x4`."""
    cdef Py_ssize_t kw = 0, left
    while kw < KW:
        left = KW - kw
        if left >= 5:
            if add:
                _row5_add(o, x + kw * C, w + kw * C, C)
            else:
                _row5_set(o, base, x + kw * C, w + kw * C, C)
            kw = kw + 5
        elif left >= 3:
            if add:
                _row3_add(o, x + kw * C, w + kw * C, C)
            else:
                _row3_set(o, base, x + kw * C, w + kw * C, C)
            kw = kw + 3
        else:
            if add:
                _tap_add(o, x + kw * C, w + kw * C, C)
            else:
                _tap_set(o, base, x + kw * C, w + kw * C, C)
            kw = kw + 1
        add = True


cdef inline void _nhwc_row(const float* x, const float* w, const float* bias, float* yrow,
                    Py_ssize_t n, Py_ssize_t oh, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                    Py_ssize_t OW, Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw,
                    Py_ssize_t pt, Py_ssize_t pl) noexcept nogil:
    """One output row (OW pixels x C channels) before the epilogue, bias included."""
    cdef Py_ssize_t ow = 0, kh, kw, ih, iw, iw0, P
    cdef float* o
    cdef const float* xr
    cdef const float* wr
    cdef bint first, interior
    while ow < OW:
        iw0 = ow * sw - pl
        o = yrow + ow * C
        interior = iw0 >= 0 and iw0 + KW <= W
        P = 4 if interior and ow + 4 <= OW and iw0 + 3 * sw + KW <= W else 1
        first = True
        for kh in range(KH):
            ih = oh * sh - pt + kh
            if ih < 0 or ih >= H:
                continue
            xr = x + ((n * H + ih) * W + iw0) * C
            wr = w + kh * KW * C
            if P == 4:
                _row_x4(o, bias, xr, wr, C, sw * C, KW, not first)
            elif interior:
                _row_x1(o, bias, xr, wr, C, KW, not first)
            else:
                if first:
                    _copy(o, bias, C)
                for kw in range(KW):
                    iw = iw0 + kw
                    if 0 <= iw < W:
                        _tap_add(o, xr + kw * C, wr + kw * C, C)
            first = False
        if first:
            for kw in range(P):
                _copy(o + kw * C, bias, C)
        ow = ow + P
