# isa-variants: avx2, avx512
# cython: language_level=3
"""Direct depthwise convolution (one KHxKW filter per channel, dilation 1), float32, fused epilogue.

NHWC: the innermost loop runs over channels, which are contiguous in both the input and the
packed (KH*KW, C) weights; one kernel row is summed per pass (in chunks of 5, 3 and 1 taps) for
four adjacent output pixels at once, so each weight load serves four pixels and each output is
loaded and stored about KH * KW / 5 times, not KH * KW.  Parallel over (image, output row).

NCHW: each (image, channel) plane is copied into a per-thread scratch of zero-bordered
sub-planes, its rows and columns split by their residue modulo the stride; every tap then sits
at a fixed offset, so the whole plane is one contiguous loop (see the NCHW section).  Parallel
over (image, channel).

Pointers carry ``__restrict__`` (through the ``fptr`` typedefs) so that GCC vectorises the
multi-stream inner loops without run-time alias checks, which it gives up on past ~10 streams.
"""
import numpy as np
cimport numpy as cnp
from libc.string cimport memcpy, memset
from _epilogue cimport activate
from conv_gemm cimport ACT_RUN_LAST, act_run   # NaN-propagating (the shared activate_run turns a NaN into 0)
from wb_pool cimport wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()

cdef extern from *:
    ctypedef float* fptr "float * __restrict__"
    ctypedef const float* cfptr "const float * __restrict__"


# -- epilogue: residual + activation with the activation code constant in each loop ------------



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


cdef void _nhwc_row(const float* x, const float* w, const float* bias, float* yrow,
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


cdef struct _Dw:
    const float* x
    const float* w
    const float* bias
    const float* res
    float* y
    const float* slope
    float* scratch
    Py_ssize_t plane, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, Hp, Wp
    int act
    float p0, p1


cdef void _nhwc_chunk(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    """Output row ``job`` (image-major) of an NHWC depthwise convolution, epilogue included."""
    cdef _Dw* d = <_Dw*> ctx
    cdef Py_ssize_t row = d.OW * d.C
    cdef float* yrow = d.y + job * row
    _nhwc_row(d.x, d.w, d.bias, yrow, job // d.OH, job % d.OH, d.H, d.W, d.C, d.OW, d.KH, d.KW, d.sh, d.sw,
              d.pt, d.pl)
    if d.res != NULL:
        _add(yrow, d.res + job * row, row)
    if d.act == 7:
        _prelu_cols(yrow, d.slope, d.OW, d.C)
    else:
        act_run(yrow, row, d.act, d.p0, d.p1, 0)


# -- NCHW ---------------------------------------------------------------------------------------
#
# The plane is copied into sh*sw zero-bordered sub-planes (rows and columns split by their
# residue modulo the stride), each with row stride Wq.  Tap (kh, kw) of output (oh, ow) then
# sits at a fixed offset from index oh*Wq + ow of its sub-plane, so the whole plane is ONE
# contiguous loop over i = oh*Wq + ow: long vectors even for 7x7 planes, at the price of
# computing Wq - OW unused columns per row, which the epilogue pass skips.

cdef inline void _flat9(fptr o, cfptr a, cfptr b, cfptr c, cfptr d, cfptr e, cfptr f, cfptr g,
                        cfptr h, cfptr k, const float* w, float base, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6]
    cdef float w7 = w[7], w8 = w[8]
    for i in range(n):
        o[i] = (base + a[i] * w0 + b[i] * w1 + c[i] * w2 + d[i] * w3 + e[i] * w4 + f[i] * w5
                + g[i] * w6 + h[i] * w7 + k[i] * w8)


cdef inline void _flat5(fptr o, cfptr a, cfptr b, cfptr c, cfptr d, cfptr e, const float* w,
                        float base, bint add, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4]
    if add:
        for i in range(n):
            o[i] = o[i] + a[i] * w0 + b[i] * w1 + c[i] * w2 + d[i] * w3 + e[i] * w4
    else:
        for i in range(n):
            o[i] = base + a[i] * w0 + b[i] * w1 + c[i] * w2 + d[i] * w3 + e[i] * w4


cdef inline void _flat3(fptr o, cfptr a, cfptr b, cfptr c, const float* w, float base, bint add,
                        Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float w0 = w[0], w1 = w[1], w2 = w[2]
    if add:
        for i in range(n):
            o[i] = o[i] + a[i] * w0 + b[i] * w1 + c[i] * w2
    else:
        for i in range(n):
            o[i] = base + a[i] * w0 + b[i] * w1 + c[i] * w2


cdef inline void _flat1(fptr o, cfptr a, float w0, float base, bint add, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if add:
        for i in range(n):
            o[i] = o[i] + a[i] * w0
    else:
        for i in range(n):
            o[i] = base + a[i] * w0


cdef void _flat_row(float* t, const float* pad, const float* w, float b, Py_ssize_t kh, Py_ssize_t KW,
                    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t SP, Py_ssize_t Wq, Py_ssize_t n,
                    bint add) noexcept nogil:
    """Kernel row ``kh`` (taps ``w[0:KW]``) over the whole plane, in chunks of 5, 3 and 1 taps."""
    cdef Py_ssize_t kw = 0, left
    while kw < KW:
        left = KW - kw
        if left >= 5:
            _flat5(t, pad + _tap(kh, kw, sh, sw, SP, Wq), pad + _tap(kh, kw + 1, sh, sw, SP, Wq),
                   pad + _tap(kh, kw + 2, sh, sw, SP, Wq), pad + _tap(kh, kw + 3, sh, sw, SP, Wq),
                   pad + _tap(kh, kw + 4, sh, sw, SP, Wq), w + kw, b, add, n)
            kw = kw + 5
        elif left >= 3:
            _flat3(t, pad + _tap(kh, kw, sh, sw, SP, Wq), pad + _tap(kh, kw + 1, sh, sw, SP, Wq),
                   pad + _tap(kh, kw + 2, sh, sw, SP, Wq), w + kw, b, add, n)
            kw = kw + 3
        else:
            _flat1(t, pad + _tap(kh, kw, sh, sw, SP, Wq), w[kw], b, add, n)
            kw = kw + 1
        add = True


cdef inline void _split(fptr even, fptr odd, cfptr row, Py_ssize_t q0, Py_ssize_t q1,
                        Py_ssize_t pl) noexcept nogil:
    """even[q // 2] / odd[q // 2] = row[q - pl] for the scratch columns q in [q0, q1)."""
    cdef Py_ssize_t j
    for j in range((q0 + 1) // 2, (q1 + 1) // 2):
        even[j] = row[2 * j - pl]
    for j in range(q0 // 2, q1 // 2):
        odd[j] = row[2 * j + 1 - pl]


cdef inline void _finish_row(fptr o, cfptr t, const float* res, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if res != NULL:
        _add2(o, t, res, n)
    else:
        for i in range(n):
            o[i] = t[i]


cdef inline void _add2(fptr o, cfptr t, cfptr r, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = t[i] + r[i]


cdef inline Py_ssize_t _tap(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                            Py_ssize_t SP, Py_ssize_t Wq) noexcept nogil:
    return ((kh % sh) * sw + kw % sw) * SP + (kh // sh) * Wq + kw // sw


cdef void _nchw_chunk(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    """Plane ``job`` (image-major) of an NCHW depthwise convolution, in scratch slice ``slot``."""
    cdef _Dw* d = <_Dw*> ctx
    cdef Py_ssize_t sh = d.sh, sw = d.sw, KH = d.KH, KW = d.KW, W = d.W, pt = d.pt, pl = d.pl
    cdef Py_ssize_t Wq = (d.Wp + sw - 1) // sw, Hq = (d.Hp + sh - 1) // sh
    cdef Py_ssize_t SP = Hq * Wq + max(KH, KW)               # sub-plane (+ slack for the tail)
    cdef Py_ssize_t n_out = d.OH * Wq
    cdef Py_ssize_t r0 = pt, r1 = min(d.Hp, pt + d.H)         # scratch rows holding input
    cdef Py_ssize_t q0 = pl, q1 = min(d.Wp, pl + W)           # scratch cols holding input
    cdef Py_ssize_t c = job % d.C, r, oh, kh, OH = d.OH, OW = d.OW
    cdef float* pad = d.scratch + slot * d.plane
    cdef float* t = pad + sh * sw * SP
    cdef const float* src = d.x + job * d.H * W
    cdef float* dst
    cdef float* o
    cdef const float* wc
    cdef float b
    for r in range(r0, r1):
        dst = pad + (r % sh) * sw * SP + (r // sh) * Wq
        if sw == 1:
            memcpy(dst + q0, src + (r - pt) * W, (q1 - q0) * sizeof(float))
        else:
            _split(dst, dst + SP, src + (r - pt) * W, q0, q1, pl)
    wc = d.w + c * KH * KW
    b = d.bias[c]
    if KH == 3 and KW == 3:
        _flat9(t, pad + _tap(0, 0, sh, sw, SP, Wq), pad + _tap(0, 1, sh, sw, SP, Wq),
               pad + _tap(0, 2, sh, sw, SP, Wq), pad + _tap(1, 0, sh, sw, SP, Wq),
               pad + _tap(1, 1, sh, sw, SP, Wq), pad + _tap(1, 2, sh, sw, SP, Wq),
               pad + _tap(2, 0, sh, sw, SP, Wq), pad + _tap(2, 1, sh, sw, SP, Wq),
               pad + _tap(2, 2, sh, sw, SP, Wq), wc, b, n_out)
    else:
        for kh in range(KH):
            _flat_row(t, pad, wc + kh * KW, b, kh, KW, sh, sw, SP, Wq, n_out, kh > 0)
    o = d.y + job * OH * OW
    for oh in range(OH):
        _finish_row(o + oh * OW, t + oh * Wq, d.res + (job * OH + oh) * OW if d.res != NULL else NULL, OW)
    act_run(o, OH * OW, d.act, d.p0, d.p1, d.slope[c] if d.slope != NULL else 0)


# -- Python-visible twins: every shape checked before the nogil code ---------------------------

def _f32(a, what, shape=None, writeable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{what} must be float32, got {a.dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {a.shape}, expected {tuple(shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{what} is read-only")
    return a


#: The largest kernel side the kernels take (a bound on the per-row scratch, not on the method).
MAX_KERNEL = 31


def _geometry(kernel, strides, pads, H, W):
    KH, KW = (int(kernel), int(kernel)) if np.ndim(kernel) == 0 else (int(kernel[0]), int(kernel[1]))
    sh, sw = int(strides[0]), int(strides[1])
    pt, pl, pb, pr = (int(p) for p in pads)
    if not (1 <= KH <= MAX_KERNEL and 1 <= KW <= MAX_KERNEL) or sh < 1 or sw < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError(f"bad geometry: kernel {(KH, KW)}, strides {tuple(strides)}, pads {tuple(pads)}")
    if sw > 2 or sh > 2:
        raise ValueError(f"strides {(sh, sw)} not supported (1 or 2)")
    OH, OW = (H + pt + pb - KH) // sh + 1, (W + pl + pr - KW) // sw + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"empty output {OH}x{OW} for input {H}x{W}, kernel {(KH, KW)}, pads {tuple(pads)}")
    return KH, KW, sh, sw, pt, pl, OH, OW


def _epilogue_args(act, slope, C, out, residual):
    if not 0 <= act <= ACT_RUN_LAST:
        raise ValueError(f"unknown activation code {act}")
    if act == 7 and slope is None:
        raise ValueError("PRelu (code 7) needs a per-channel slope")
    if slope is not None:
        _f32(slope, "slope", (C,))
    if residual is not None:
        _f32(residual, "residual", out.shape)


cdef float* _ptr(a):
    return NULL if a is None else <float*> cnp.PyArray_DATA(<cnp.ndarray> a)


def nhwc(x, w, bias, out, kernel, strides, pads, residual=None, int act=0, float p0=0, float p1=0,
         slope=None, int num_threads=1):
    """Depthwise convolution of an NHWC tensor, written into ``out``.

    Parameters
    ----------
    x : ndarray, float32, (N, H, W, C)
    w : ndarray, float32, (KH*KW, C)
        Filter taps row-major over (kh, kw), channels innermost.
    bias : ndarray, float32, (C,)
    out : ndarray, float32, (N, OH, OW, C)
    kernel : int or (int, int)
        K for a square kernel, or (KH, KW); each side 1 to :data:`MAX_KERNEL`.
    strides : (int, int)
        Vertical stride, horizontal stride (1 or 2).
    pads : (int, int, int, int)
        Top, left, bottom, right.
    residual : ndarray, float32, shape of ``out``, optional
        Added after the bias, before the activation.
    act, p0, p1, slope
        Activation code and parameters (see ``_epilogue.pxd``); ``slope`` (C,) for PRelu.
    num_threads : int
        Threads (the shared pool, ``wb_pool.h``).
    """
    _f32(x, "input")
    if x.ndim != 4:
        raise ValueError(f"input must be 4-D (N, H, W, C), got shape {x.shape}")
    N, H, W, C = x.shape
    KH, KW, sh, sw, pt, pl, OH, OW = _geometry(kernel, strides, pads, H, W)
    _f32(w, "weights", (KH * KW, C))
    _f32(bias, "bias", (C,))
    _f32(out, "output", (N, OH, OW, C), writeable=True)
    _epilogue_args(act, slope, C, out, residual)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    cdef _Dw d
    _fill(&d, x, w, bias, residual, out, slope, None, 0, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, 0, 0,
          act, p0, p1)
    with nogil:
        wb_pool_run(_nhwc_chunk, &d, d.N * d.OH, num_threads)
    return out


cdef void _fill(_Dw* d, x, w, bias, residual, out, slope, scratch, Py_ssize_t plane, Py_ssize_t N,
                Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t KH,
                Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t Hp,
                Py_ssize_t Wp, int act, float p0, float p1):
    d.x, d.w, d.bias, d.res, d.y, d.slope, d.scratch = _ptr(x), _ptr(w), _ptr(bias), _ptr(residual), _ptr(out), \
        _ptr(slope), _ptr(scratch)
    d.plane, d.N, d.C, d.H, d.W, d.OH, d.OW, d.KH, d.KW = plane, N, C, H, W, OH, OW, KH, KW
    d.sh, d.sw, d.pt, d.pl, d.Hp, d.Wp, d.act, d.p0, d.p1 = sh, sw, pt, pl, Hp, Wp, act, p0, p1


def nchw_scratch_floats(kernel, strides, pads, H, W):
    """Floats of scratch one thread of :func:`nchw` needs for an ``H`` x ``W`` input plane."""
    KH, KW, sh, sw, pt, pl, OH, OW = _geometry(kernel, strides, pads, H, W)
    Hp, Wp = (OH - 1) * sh + KH, (OW - 1) * sw + KW
    Hq, Wq = -(-Hp // sh), -(-Wp // sw)
    return sh * sw * (Hq * Wq + max(KH, KW)) + OH * Wq


def nchw(x, w, bias, out, scratch, kernel, strides, pads, residual=None, int act=0, float p0=0,
         float p1=0, slope=None, int num_threads=1):
    """Depthwise convolution of an NCHW tensor, written into ``out``.

    As :func:`nhwc`, with ``x`` (N, C, H, W), ``w`` (C, KH*KW), ``out`` (N, C, OH, OW) and a float32
    ``scratch`` of at least ``num_threads * nchw_scratch_floats(...)`` elements.
    """
    _f32(x, "input")
    if x.ndim != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W), got shape {x.shape}")
    N, C, H, W = x.shape
    KH, KW, sh, sw, pt, pl, OH, OW = _geometry(kernel, strides, pads, H, W)
    _f32(w, "weights", (C, KH * KW))
    _f32(bias, "bias", (C,))
    _f32(out, "output", (N, C, OH, OW), writeable=True)
    _epilogue_args(act, slope, C, out, residual)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    plane = nchw_scratch_floats(kernel, strides, pads, H, W)
    _f32(scratch, "scratch", writeable=True)
    if scratch.size < num_threads * plane:
        raise ValueError(f"scratch has {scratch.size} floats, {num_threads} threads need {num_threads * plane}")
    Hp, Wp = (OH - 1) * sh + KH, (OW - 1) * sw + KW
    cdef _Dw d
    _fill(&d, x, w, bias, residual, out, slope, scratch, plane, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl,
          Hp, Wp, act, p0, p1)
    cdef Py_ssize_t nt = min(num_threads, N * C)
    with nogil:
        memset(d.scratch, 0, nt * d.plane * sizeof(float))   # the zero borders every plane keeps
        wb_pool_run(_nchw_chunk, &d, d.N * d.C, nt)
    return out
