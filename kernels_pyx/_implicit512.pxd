# Implicit-GEMM NHWC convolution over our AVX-512 SGEMM (sgemm_avx512.h), for
# kernels_pyx/conv_im2col512.pyx: a job is a span of output pixels, cut into strips of 12 rows for the
# micro-kernel.  Pixels whose taps all lie inside the input are read in place, in triples of
# neighbours in one output row, four triples to a strip from anywhere in the span (so a strip
# runs on past the end of a row); the others (the padded border) are gathered by im2col, twelve
# to a strip.  A strip that cannot be filled writes its spare rows to a scratch row.  Row by row
# this gathered 8 of every 20 pixels of a 20-wide stride-2 output and ran them as short GEMMs.
# All inline and nogil.
from libc.string cimport memset

from conv_gemm cimport Epi, Geo, _cols_nhwc_pixel, _epilogue, _imax, _imin
from _gemm512_jobs cimport IM2COL_ROWS, _fused_epi, wb512_epi


cdef extern from "wb_implicit512.h" nogil:
    ctypedef struct wb512_strip:
        const float* a[4]
        Py_ssize_t lda
        float* c[12]
        Py_ssize_t row[12]
        int runs
    void wb512_conv_strips(int ns, const wb512_strip* st, Py_ssize_t kg, Py_ssize_t chunk, Py_ssize_t rowstep,
                           const float* pb, Py_ssize_t n, Py_ssize_t j0, Py_ssize_t j1, const wb512_epi* ep)


cdef enum:
    STRIPS = 12   # strips per batch: the gathered ones fill the IM2COL_ROWS (144) rows of cols


cdef struct _Batch:
    const Geo* g
    const float* x
    const float* pw
    float* out
    const Epi* e
    float* cols      # IM2COL_ROWS gathered rows of g.kg floats, 12 per gathered strip
    float* spare     # a scratch row of C for the rows no pixel fills
    Py_ssize_t j0, j1   # the output channels of this job
    wb512_strip st[12]
    int ns           # strips started
    int inplace      # the strip taking triples (-1: none), and how many it has
    int triples
    int gathered     # the strip taking gathered pixels (-1: none), and how many it has
    int rows


cdef inline bint _implicit_ok(const Geo* g) noexcept nogil:
    """Whether :c:func:`implicit_span` applies: NHWC group 1 with unit horizontal dilation (a
    kernel row's taps are then one run of KW * C floats of the input)."""
    return g.g == 1 and g.dw == 1


cdef inline void _flush(_Batch* b) noexcept nogil:
    """Run the batch's strips, their spare rows written to the scratch row."""
    cdef const Geo* g = b.g
    cdef wb512_strip* s
    cdef int i, t
    cdef wb512_epi ep
    if b.ns == 0:
        return
    if b.inplace >= 0:   # spare triples: the first triple's A again, C to the scratch row
        s = &b.st[b.inplace]
        for t in range(b.triples, 4):
            s.a[t] = s.a[0]
            for i in range(3):
                s.c[3 * t + i], s.row[3 * t + i] = b.spare, s.row[0]
    if b.gathered >= 0:   # spare rows: zeros (finite, whatever the buffer held), C to the scratch row
        s = &b.st[b.gathered]
        for i in range(b.rows, 12):
            memset(b.cols + (b.gathered * 12 + i) * g.kg, 0, g.kg * sizeof(float))
            s.c[i], s.row[i] = b.spare, s.row[0]
    cdef bint fused = _fused_epi(&ep, b.e, b.e.res, g.m, False, 0)
    wb512_conv_strips(b.ns, b.st, g.kg, g.kw * g.c, g.dh * g.w * g.c, b.pw, g.m, b.j0, b.j1, &ep if fused else NULL)
    if not fused:   # activations the register epilogue lacks: a pass over each pixel's row
        for t in range(b.ns):
            s = &b.st[t]
            for i in range(12):
                if s.c[i] != b.spare:
                    _epilogue(s.c[i] + b.j0, 1, b.j1 - b.j0, g.m, False, b.e.bias + b.j0 if b.e.bias != NULL else NULL,
                              b.e.res + s.row[i] * g.m + b.j0 if b.e.res != NULL else NULL, g.m, b.e,
                              b.e.slope + b.j0 if b.e.slope != NULL else NULL)
    b.ns, b.inplace, b.gathered = 0, -1, -1


cdef inline wb512_strip* _open(_Batch* b, bint runs) noexcept nogil:
    """A new strip at the end of the batch (running the batch first when it is full)."""
    cdef int i
    if b.ns == STRIPS:
        _flush(b)
    cdef wb512_strip* s = &b.st[b.ns]
    s.runs = runs
    s.lda = b.g.sw * b.g.c if runs else b.g.kg
    if runs:
        b.inplace, b.triples = b.ns, 0
    else:
        b.gathered, b.rows = b.ns, 0
        for i in range(4):
            s.a[i] = b.cols + (b.ns * 12 + 3 * i) * b.g.kg
    b.ns += 1
    return s


cdef inline void _triple(_Batch* b, Py_ssize_t q, const float* a, int skip) noexcept nogil:
    """Output pixels q..q+2 (one row, taps inside the input, the first at a), the first ``skip``
    of them already done (their rows go to the scratch row)."""
    cdef wb512_strip* s
    if b.inplace < 0 or b.triples == 4:
        s = _open(b, True)
    else:
        s = &b.st[b.inplace]
    cdef int t = b.triples, i
    s.a[t] = a
    for i in range(3):
        s.c[3 * t + i] = b.spare if i < skip else b.out + (q + i) * b.g.ldo
        s.row[3 * t + i] = q + i
    b.triples += 1
    if b.triples == 4:
        b.inplace = -1


cdef inline void _gather(_Batch* b, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    """Output pixels q0..q1-1 by im2col into the batch's gathered strips."""
    cdef wb512_strip* s
    cdef Py_ssize_t q
    for q in range(q0, q1):
        if b.gathered < 0 or b.rows == 12:
            s = _open(b, False)
        else:
            s = &b.st[b.gathered]
        _cols_nhwc_pixel(b.g, b.x, b.cols + (b.gathered * 12 + b.rows) * b.g.kg, q, 0)
        s.c[b.rows], s.row[b.rows] = b.out + q * b.g.ldo, q
        b.rows += 1
        if b.rows == 12:
            b.gathered = -1


cdef inline void implicit_span(const Geo* g, const float* x, const float* pw, float* out, const Epi* e,
                               float* cols, float* spare, Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t j0,
                               Py_ssize_t j1) noexcept nogil:
    """Output pixels p0..p1-1 (over the batch), channels j0..j1-1 (j0 a multiple of the 32-column
    panel) of an NHWC implicit-GEMM convolution; ``cols``: IM2COL_ROWS * g.kg floats, ``spare``:
    g.m floats, this thread's own."""
    cdef _Batch b
    b.g, b.x, b.pw, b.out, b.e, b.cols, b.spare, b.j0, b.j1 = g, x, pw, out, e, cols, spare, j0, j1
    b.ns, b.inplace, b.gathered = 0, -1, -1
    # the output columns whose taps lie inside the input, in every row
    cdef Py_ssize_t lo = (g.pl + g.sw - 1) // g.sw, hi = 0
    if g.w - g.kw + g.pl >= 0:
        hi = _imin((g.w - g.kw + g.pl) // g.sw + 1, g.ow)
    cdef Py_ssize_t q = p0, t, nn, oy, iy0, rs, a, z, ilo, ihi, ox
    cdef const float* base
    while q < p1:
        t = q // g.ow
        nn, oy, rs = t // g.oh, t % g.oh, t * g.ow
        a, z = q - rs, _imin(rs + g.ow, p1) - rs
        iy0 = oy * g.sh - g.pt
        ilo, ihi = a, a
        if iy0 >= 0 and iy0 + (g.kh - 1) * g.dh < g.h:
            ilo, ihi = _imax(a, lo), _imin(z, hi)
        if ihi - ilo < 3:
            _gather(&b, rs + a, rs + z)
        else:
            _gather(&b, rs + a, rs + ilo)
            base = x + (nn * g.h + iy0) * g.w * g.c
            ox = ilo
            while ox + 3 <= ihi:
                _triple(&b, rs + ox, base + (ox * g.sw - g.pl) * g.c, 0)
                ox += 3
            if ox < ihi:   # the last one or two: the row's last triple, its first pixels done already
                _triple(&b, rs + ihi - 3, base + ((ihi - 3) * g.sw - g.pl) * g.c, <int>(3 - (ihi - ox)))
            _gather(&b, rs + ihi, rs + z)
        q = rs + z
    _flush(&b)
