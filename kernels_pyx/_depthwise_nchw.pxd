# The NCHW depthwise plane kernels of depthwise.pyx (all inline; the module drives them): see the
# NCHW section of depthwise.pyx for the sub-plane scheme.
from _depthwise_types cimport fptr, cfptr


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


cdef inline void _flat_row(float* t, const float* pad, const float* w, float b, Py_ssize_t kh, Py_ssize_t KW,
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
