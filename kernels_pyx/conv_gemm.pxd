# Primitives of the GEMM convolution (kernels_pyx/conv_gemm.pyx): the layer geometry, the fused
# epilogue's parameters, the im2col gathers of both layouts and a vectorisable epilogue, all
# inline and nogil.
from libc.string cimport memcpy, memset

from _epilogue cimport activate

cdef extern from "wb_vmath.h" nogil:
    int wbm_map(int code, const float* x, float* y, Py_ssize_t n)

#: The highest activation code :c:func:`act_run` takes: 0-8 of ``_epilogue.pxd`` and 9-11, SiLU,
#: GELU (erf) and GELU (tanh), vectorised by ``wb_vmath.h`` (the codes of eltwise.pyx).
cdef enum:
    ACT_RUN_LAST = 11

cdef struct Geo:
    Py_ssize_t n, c, h, w, m, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, g, cg, mg, kg, p
    Py_ssize_t ldo   # NHWC: floats from one output pixel to the next (m, or more in a slice)
    Py_ssize_t ldx   # NHWC: floats from one input pixel to the next (c, or more in a slice)


cdef struct Epi:
    const float* bias
    const float* res
    const float* slope
    int act
    float p0, p1
    const float* post_scale   # after the activation: out = act(.) * post_scale[c] + post_shift[c]
    const float* post_shift   # (our AVX-512 GEMM's register epilogue only; NULL elsewhere)
    bint res_post             # the residual is added after the activation, not before


cdef inline Py_ssize_t _imin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t _imax(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline void _span(const float* row, float* d, Py_ssize_t a, Py_ssize_t b, Py_ssize_t lo,
                       Py_ssize_t hi, Py_ssize_t sw) noexcept nogil:
    """d[k] = row[(a + k) * sw] for output columns a..b-1; zero outside the valid columns lo..hi-1."""
    cdef Py_ssize_t u, v0 = _imax(a, lo), v1 = _imin(b, hi)
    if v1 <= v0:
        memset(d, 0, (b - a) * sizeof(float))
        return
    if v0 > a:
        memset(d, 0, (v0 - a) * sizeof(float))
    if sw == 1:
        memcpy(d + v0 - a, row + v0, (v1 - v0) * sizeof(float))
    else:
        for u in range(v0, v1):
            d[u - a] = row[u * sw]
    if b > v1:
        memset(d + v1 - a, 0, (b - v1) * sizeof(float))


cdef inline void _cols_nchw_row(const Geo* g, const float* xg, float* d, Py_ssize_t r, Py_ssize_t p0,
                                Py_ssize_t p1) noexcept nogil:
    """Row ``r`` = (channel, ki, kj) of the im2col tile for output pixels p0..p1-1 of one image."""
    cdef Py_ssize_t c = r // (g.kh * g.kw), i = (r // g.kw) % g.kh, j = r % g.kw
    cdef Py_ssize_t oy = i * g.dh - g.pt, ox = j * g.dw - g.pl
    cdef Py_ssize_t lo, hi, p = p0, y, a, b, ih
    cdef const float* src = xg + c * g.h * g.w
    # Output columns whose input column ow * sw + ox falls inside the image.
    lo = 0 if ox >= 0 else (-ox + g.sw - 1) // g.sw
    hi = 0 if g.w - 1 - ox < 0 else (g.w - 1 - ox) // g.sw + 1
    lo, hi = _imin(lo, g.ow), _imin(hi, g.ow)
    while p < p1:
        y = p // g.ow
        a = p - y * g.ow
        b = _imin(g.ow, a + p1 - p)
        ih = y * g.sh + oy
        if ih < 0 or ih >= g.h:
            memset(d, 0, (b - a) * sizeof(float))
        else:
            _span(src + ih * g.w + ox, d, a, b, lo, hi, g.sw)
        d += b - a
        p += b - a


cdef inline void _cols_nhwc_pixel(const Geo* g, const float* x, float* d, Py_ssize_t q,
                                  Py_ssize_t gi) noexcept nogil:
    """The im2col row (ki, kj, channel) of global output pixel ``q`` for group ``gi``."""
    cdef Py_ssize_t nn = q // g.p, p = q - nn * g.p, y = p // g.ow, xo = p - y * g.ow
    cdef Py_ssize_t i, j, ih, iw, j0, j1, ox = xo * g.sw - g.pl
    cdef const float* base = x + nn * g.h * g.w * g.ldx + gi * g.cg
    cdef Py_ssize_t seg = g.kw * g.cg
    # Kernel columns j whose input column ox + j * dw falls inside the image.
    j0 = 0 if ox >= 0 else (-ox + g.dw - 1) // g.dw
    j1 = 0 if g.w - 1 - ox < 0 else (g.w - 1 - ox) // g.dw + 1
    j0, j1 = _imin(j0, g.kw), _imin(j1, g.kw)
    for i in range(g.kh):
        ih = y * g.sh - g.pt + i * g.dh
        if ih < 0 or ih >= g.h or j1 <= j0:
            memset(d, 0, seg * sizeof(float))
        else:
            if j0 > 0:
                memset(d, 0, j0 * g.cg * sizeof(float))
            if g.dw == 1 and g.g == 1 and g.ldx == g.c:
                # Adjacent kernel taps read adjacent pixels: one copy for the whole span.
                memcpy(d + j0 * g.cg, base + (ih * g.w + ox + j0) * g.c, (j1 - j0) * g.cg * sizeof(float))
            else:
                for j in range(j0, j1):
                    iw = ox + j * g.dw
                    memcpy(d + j * g.cg, base + (ih * g.w + iw) * g.ldx, g.cg * sizeof(float))
            if j1 < g.kw:
                memset(d + j1 * g.cg, 0, (g.kw - j1) * g.cg * sizeof(float))
        d += seg


cdef inline void act_run(float* o, Py_ssize_t n, int act, float p0, float p1, float s) noexcept nogil:
    """The fused activation on ``n`` values (one PRelu slope ``s``), one simple loop per code.

    NaN propagates as in ONNX Runtime: each select keeps the value itself when its comparison is
    false, as it is for NaN (``0 if t < 0 else t``; ``t if t > 0 else 0`` made NaN a 0).  GCC
    vectorises these as it did the old form (one MAXPS with the value second, a blend).
    """
    cdef Py_ssize_t j
    cdef float t, zero = 0, one = 1
    if act == 1:
        for j in range(n):
            t = o[j]
            o[j] = zero if t < zero else t
    elif act == 2:
        for j in range(n):
            t = o[j]
            t = p0 if t < p0 else t
            o[j] = p1 if t > p1 else t
    elif act == 3 or act == 7:
        s = p0 if act == 3 else s
        for j in range(n):
            t = o[j]
            o[j] = t * s if t < zero else t
    elif act == 4:
        for j in range(n):
            t = p0 * o[j] + p1
            t = zero if t < zero else t
            o[j] = one if t > one else t
    elif act == 5:
        for j in range(n):
            t = o[j] * (1.0 / 6.0) + 0.5
            t = zero if t < zero else t
            o[j] = o[j] * (one if t > one else t)
    elif 9 <= act <= ACT_RUN_LAST:
        wbm_map(act, o, o, n)
    elif act != 0:
        for j in range(n):
            o[j] = activate(o[j], act, p0, p1, s)


cdef inline void _epi_row(float* o, Py_ssize_t n, const float* bias, bint per_col, const float* res,
                          int act, float p0, float p1, const float* slope) noexcept nogil:
    """Bias, residual, activation on one output row, in separate simple loops the compiler can
    vectorise (the shared ``epilogue_rows`` branches per element).  ``per_col``: bias and slope
    vary along the row (NHWC); else they are one value for the whole row (NCHW)."""
    cdef Py_ssize_t j
    cdef float b, s, t
    if per_col:
        if bias != NULL and res != NULL:
            for j in range(n):
                o[j] = o[j] + bias[j] + res[j]
        elif bias != NULL:
            for j in range(n):
                o[j] = o[j] + bias[j]
        elif res != NULL:
            for j in range(n):
                o[j] = o[j] + res[j]
    else:
        b = bias[0] if bias != NULL else 0
        if res != NULL:
            for j in range(n):
                o[j] = o[j] + b + res[j]
        elif bias != NULL:
            for j in range(n):
                o[j] = o[j] + b
    if act == 7 and per_col:
        for j in range(n):
            t = o[j]
            o[j] = t if t >= 0 else t * slope[j]
    else:
        act_run(o, n, act, p0, p1, slope[0] if act == 7 else 0)


cdef inline void _epilogue(float* o, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld, bint channel_is_row,
                           const float* bias, const float* res, Py_ssize_t ld_res, const Epi* e,
                           const float* slope) noexcept nogil:
    """The fused epilogue on a (rows, cols) block; channels index rows (NCHW) or columns (NHWC)."""
    cdef Py_ssize_t r, j
    cdef float* orow
    cdef const float* rrow
    if e.res_post and res != NULL:   # act(. + bias), then the residual
        _epilogue(o, rows, cols, ld, channel_is_row, bias, NULL, 0, e, slope)
        for r in range(rows):
            orow, rrow = o + r * ld, res + r * ld_res
            for j in range(cols):
                orow[j] = orow[j] + rrow[j]
        return
    if not channel_is_row and ld == cols and e.act != 7:
        # A contiguous NHWC block: bias and residual pixel by pixel, then the activation in one
        # call over the block (a vectorised SiLU/GELU per pixel of 16 channels cost more in
        # calls than in arithmetic).
        for r in range(rows):
            _epi_row(o + r * ld, cols, bias, True, res + r * ld_res if res != NULL else NULL, 0, 0, 0, NULL)
        act_run(o, rows * cols, e.act, e.p0, e.p1, 0)
        return
    for r in range(rows):
        if channel_is_row:
            _epi_row(o + r * ld, cols, bias + r if bias != NULL else NULL, False,
                     res + r * ld_res if res != NULL else NULL, e.act, e.p0, e.p1,
                     slope + r if slope != NULL else NULL)
        else:
            _epi_row(o + r * ld, cols, bias, True, res + r * ld_res if res != NULL else NULL,
                     e.act, e.p0, e.p1, slope)
