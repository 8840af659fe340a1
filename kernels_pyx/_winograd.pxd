# The 1-D Winograd transforms of kernels_pyx/winograd.pyx, over n tiles at once (B^T for the
# input patches, A^T for the outputs, for F(2x2,3x3) and F(4x4,3x3)), and the row helpers the
# output stage shares.  Kept apart from the drivers so that each file holds one concern.

cdef extern from *:
    ctypedef float* fptr "float * __restrict__"
    ctypedef const float* cfptr "const float * __restrict__"


# -- 1-D transforms over n tiles at once ---------------------------------------------------------
# Along a row the tiles' columns are read straight from a zero-padded copy of the input row with
# stride m (GCC vectorises the overlapping groups with permutes); down the columns every operand
# is a contiguous run over the tiles of the whole block, so the vectors stay long even when a
# tile row holds only 2 or 4 tiles.

cdef inline void _row_bt2(fptr o0, fptr o1, fptr o2, fptr o3, cfptr r, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef float d0, d1, d2, d3
    for j in range(n):
        d0, d1, d2, d3 = r[2 * j], r[2 * j + 1], r[2 * j + 2], r[2 * j + 3]
        o0[j] = d0 - d2
        o1[j] = d1 + d2
        o2[j] = d2 - d1
        o3[j] = d1 - d3


cdef inline void _row_bt4(fptr o0, fptr o1, fptr o2, fptr o3, fptr o4, fptr o5, cfptr r,
                          Py_ssize_t n) noexcept nogil:
    # B^T of Lavin & Gray's F(4,3), points 0, +-1, +-2, inf.
    cdef Py_ssize_t j
    cdef float d0, d1, d2, d3, d4, d5, a, b
    for j in range(n):
        d0, d1, d2, d3, d4, d5 = r[4 * j], r[4 * j + 1], r[4 * j + 2], r[4 * j + 3], r[4 * j + 4], r[4 * j + 5]
        a = d4 - <float> 4 * d2
        b = d3 - <float> 4 * d1
        o0[j] = <float> 4 * d0 - <float> 5 * d2 + d4
        o1[j] = a + b
        o2[j] = a - b
        a = d4 - d2
        b = <float> 2 * (d3 - d1)
        o3[j] = a + b
        o4[j] = a - b
        o5[j] = <float> 4 * d1 - <float> 5 * d3 + d5


cdef inline void _bt2(fptr o0, fptr o1, fptr o2, fptr o3, cfptr d0, cfptr d1, cfptr d2, cfptr d3,
                      Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o0[j] = d0[j] - d2[j]
        o1[j] = d1[j] + d2[j]
        o2[j] = d2[j] - d1[j]
        o3[j] = d1[j] - d3[j]


cdef inline void _bt4(fptr o0, fptr o1, fptr o2, fptr o3, fptr o4, fptr o5, cfptr d0, cfptr d1,
                      cfptr d2, cfptr d3, cfptr d4, cfptr d5, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef float a, b
    for j in range(n):
        a = d4[j] - <float> 4 * d2[j]
        b = d3[j] - <float> 4 * d1[j]
        o0[j] = <float> 4 * d0[j] - <float> 5 * d2[j] + d4[j]
        o1[j] = a + b
        o2[j] = a - b
        a = d4[j] - d2[j]
        b = <float> 2 * (d3[j] - d1[j])
        o3[j] = a + b
        o4[j] = a - b
        o5[j] = <float> 4 * d1[j] - <float> 5 * d3[j] + d5[j]


cdef inline void _at2(fptr o0, fptr o1, cfptr d0, cfptr d1, cfptr d2, cfptr d3, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        o0[j] = d0[j] + d1[j] + d2[j]
        o1[j] = d1[j] - d2[j] - d3[j]


cdef inline void _at4(fptr o0, fptr o1, fptr o2, fptr o3, cfptr d0, cfptr d1, cfptr d2, cfptr d3,
                      cfptr d4, cfptr d5, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef float a, b, c, e
    for j in range(n):
        a = d1[j] + d2[j]
        b = d1[j] - d2[j]
        c = d3[j] + d4[j]
        e = d3[j] - d4[j]
        o0[j] = d0[j] + a + c
        o1[j] = b + <float> 2 * e
        o2[j] = a + <float> 4 * c
        o3[j] = b + <float> 8 * e + d5[j]


cdef inline void _interleave2(fptr t, cfptr a, cfptr b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        t[2 * j] = a[j]
        t[2 * j + 1] = b[j]


cdef inline void _interleave4(fptr t, cfptr a, cfptr b, cfptr c, cfptr d, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        t[4 * j] = a[j]
        t[4 * j + 1] = b[j]
        t[4 * j + 2] = c[j]
        t[4 * j + 3] = d[j]


cdef inline void _finish(fptr o, cfptr t, cfptr res, float b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t x
    if res != NULL:
        for x in range(n):
            o[x] = t[x] + b + res[x]
    else:
        for x in range(n):
            o[x] = t[x] + b
