# The per-block stages of the Winograd drivers (kernels_pyx/winograd.pyx on BLAS, winograd512.pyx
# on our AVX-512 SGEMM): input transform into V, output transform of Mo with the fused epilogue,
# for both layouts.  Shared as inline functions so that each driver compiles them with its own
# instruction set.
from libc.string cimport memcpy, memset
from conv_gemm cimport act_run   # NaN-propagating (the shared activate_run turns a NaN into 0)
from _winograd cimport fptr, cfptr, _row_bt2, _row_bt4, _bt2, _bt4, _at2, _at4, _interleave2, _interleave4, _finish

# -- per (channel, block of tile rows) transforms ---------------------------------------------------

cdef struct Geo:
    const float* x
    const float* U
    const float* bias
    const float* res
    const float* slope
    float* y
    Py_ssize_t N, C, H, W, M, OH, OW, pt, pl, th, tw, G
    Py_ssize_t ldo   # NHWC: floats from one output pixel to the next (M, or more in a slice)
    int m, A2, act, nhwc
    float p0, p1
    bint res_post    # the residual is added after the activation (a YOLO bottleneck's shortcut)


cdef inline void _add_row(float* o, const float* res, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = o[i] + res[i]


cdef inline void _pad_row(float* dst, const float* src, Py_ssize_t pl, Py_ssize_t n, Py_ssize_t L) noexcept nogil:
    """dst[0:L] = zeros(pl), src[0:n], zeros."""
    memset(dst, 0, pl * sizeof(float))
    memcpy(dst + pl, src, n * sizeof(float))
    memset(dst + pl + n, 0, (L - pl - n) * sizeof(float))


cdef inline void _input_block(Geo* g, Py_ssize_t c, Py_ssize_t g0, Py_ssize_t R, float* V,
                       float* tmp) noexcept nogil:
    """V[k][c][0:R*tw] for tile rows g0 .. g0+R-1 (V laid out (A2, C, R*tw))."""
    cdef int m = g.m, alpha = g.m + 2, a, l
    cdef Py_ssize_t tw = g.tw, Tb = R * g.tw, ks = g.C * R * g.tw
    cdef Py_ssize_t L = g.tw * g.m + 2          # padded row: every tile's columns
    cdef Py_ssize_t n_in = min(g.W, L - g.pl)
    cdef Py_ssize_t r = 0, i0, seg, t, y
    cdef float* h = tmp                         # h[a][l][Tb]
    cdef float* slab = tmp + alpha * alpha * Tb  # zero-padded input rows of one image
    cdef float* v = V + c * Tb
    cdef float* ha
    cdef const float* xc
    while r < R:                    # runs of tile rows within one image
        i0 = (g0 + r) % g.th
        seg = min(R - r, g.th - i0)
        xc = g.x + (((g0 + r) // g.th) * g.C + c) * g.H * g.W
        for t in range(seg * m + 2):
            y = i0 * m - g.pt + t
            if 0 <= y < g.H:
                _pad_row(slab + t * L, xc + y * g.W, g.pl, n_in, L)
            else:
                _pad_row(slab + t * L, xc, L, 0, L)
        for t in range(seg):
            for a in range(alpha):  # along each patch row: the tiles' columns j*m .. j*m + alpha-1
                ha = h + a * alpha * Tb + (r + t) * tw
                if m == 2:
                    _row_bt2(ha, ha + Tb, ha + 2 * Tb, ha + 3 * Tb, slab + (t * 2 + a) * L, tw)
                else:
                    _row_bt4(ha, ha + Tb, ha + 2 * Tb, ha + 3 * Tb, ha + 4 * Tb, ha + 5 * Tb,
                             slab + (t * 4 + a) * L, tw)
        r = r + seg
    for l in range(alpha):          # down each column of the patch, into V
        ha = h + l * Tb
        if m == 2:
            _bt2(v + l * ks, v + (4 + l) * ks, v + (8 + l) * ks, v + (12 + l) * ks,
                 ha, ha + 4 * Tb, ha + 8 * Tb, ha + 12 * Tb, Tb)
        else:
            _bt4(v + l * ks, v + (6 + l) * ks, v + (12 + l) * ks, v + (18 + l) * ks, v + (24 + l) * ks,
                 v + (30 + l) * ks, ha, ha + 6 * Tb, ha + 12 * Tb, ha + 18 * Tb, ha + 24 * Tb, ha + 30 * Tb, Tb)


cdef inline void _output_block(Geo* g, Py_ssize_t mc, Py_ssize_t g0, Py_ssize_t R, const float* Mo,
                        float* tmp) noexcept nogil:
    """Output rows of tile rows g0 .. g0+R-1 for channel mc, from Mo laid out (A2, M, R*tw)."""
    cdef int m = g.m, alpha = g.m + 2, a, r, l
    cdef Py_ssize_t tw = g.tw, Tb = R * g.tw, ks = g.M * R * g.tw, plane = g.OH * g.OW
    cdef Py_ssize_t t, gr, n, yy
    cdef const float* mo = Mo + mc * Tb
    cdef float* s = tmp                         # s[a][l][Tb]
    cdef float* o = tmp + alpha * m * Tb        # o[r][l][Tb]
    cdef float* trow = o + m * m * Tb           # one interleaved output row, tw*m floats
    cdef float* sa
    cdef float* orow
    cdef const float* rrow
    cdef float b = g.bias[mc]
    cdef float sl = g.slope[mc] if g.slope != NULL else 0
    for a in range(alpha):          # along each row of the patch
        sa = s + a * m * Tb
        if m == 2:
            _at2(sa, sa + Tb, mo + (a * 4) * ks, mo + (a * 4 + 1) * ks, mo + (a * 4 + 2) * ks,
                 mo + (a * 4 + 3) * ks, Tb)
        else:
            _at4(sa, sa + Tb, sa + 2 * Tb, sa + 3 * Tb, mo + (a * 6) * ks, mo + (a * 6 + 1) * ks,
                 mo + (a * 6 + 2) * ks, mo + (a * 6 + 3) * ks, mo + (a * 6 + 4) * ks, mo + (a * 6 + 5) * ks, Tb)
    for l in range(m):              # down each column
        sa = s + l * Tb
        if m == 2:
            _at2(o + l * Tb, o + (2 + l) * Tb, sa, sa + 2 * Tb, sa + 4 * Tb, sa + 6 * Tb, Tb)
        else:
            _at4(o + l * Tb, o + (4 + l) * Tb, o + (8 + l) * Tb, o + (12 + l) * Tb,
                 sa, sa + 4 * Tb, sa + 8 * Tb, sa + 12 * Tb, sa + 16 * Tb, sa + 20 * Tb, Tb)
    for t in range(R):
        gr = g0 + t
        n = gr // g.th
        for r in range(m):
            yy = (gr % g.th) * m + r
            if yy >= g.OH:
                break
            sa = o + r * m * Tb + t * tw
            if m == 2:
                _interleave2(trow, sa, sa + Tb, tw)
            else:
                _interleave4(trow, sa, sa + Tb, sa + 2 * Tb, sa + 3 * Tb, tw)
            orow = g.y + (n * g.M + mc) * plane + yy * g.OW
            rrow = g.res + (n * g.M + mc) * plane + yy * g.OW if g.res != NULL else NULL
            _finish(orow, trow, NULL if g.res_post else rrow, b, g.OW)
            act_run(orow, g.OW, g.act, g.p0, g.p1, sl)
            if g.res_post and rrow != NULL:
                _add_row(orow, rrow, g.OW)


# -- NHWC: the same transforms, vectorised over channels (contiguous in NHWC) --------------------

cdef inline void _input_tiles_nhwc(Geo* g, Py_ssize_t g0, Py_ssize_t R, Py_ssize_t t0, Py_ssize_t t1,
                            float* V, float* tmp) noexcept nogil:
    """V[k][t][0:C] for tiles t0 .. t1-1 of the block (V laid out (A2, R*tw, C))."""
    cdef int m = g.m, alpha = g.m + 2, a, b, l
    cdef Py_ssize_t C = g.C, Tb = R * g.tw, t, gr, i, j, y, col, q
    cdef float* h = tmp                         # h[a][l][C]
    cdef const float* zeros = tmp + alpha * alpha * C
    cdef float* ha
    cdef float* v
    cdef const float* xn
    cdef const float* d[6]
    for q in range(C):
        tmp[alpha * alpha * C + q] = 0
    for t in range(t0, t1):
        gr = g0 + t // g.tw
        i, j = gr % g.th, t % g.tw
        xn = g.x + (gr // g.th) * g.H * g.W * C
        for a in range(alpha):      # along each patch row: B^T over the row's alpha pixels
            y = i * m - g.pt + a
            for b in range(alpha):
                col = j * m - g.pl + b
                d[b] = xn + (y * g.W + col) * C if 0 <= y < g.H and 0 <= col < g.W else zeros
            ha = h + a * alpha * C
            if m == 2:
                _bt2(ha, ha + C, ha + 2 * C, ha + 3 * C, d[0], d[1], d[2], d[3], C)
            else:
                _bt4(ha, ha + C, ha + 2 * C, ha + 3 * C, ha + 4 * C, ha + 5 * C, d[0], d[1], d[2], d[3],
                     d[4], d[5], C)
        for l in range(alpha):      # down each patch column, into V
            ha = h + l * C
            v = V + (l * Tb + t) * C
            if m == 2:
                _bt2(v, v + 4 * Tb * C, v + 8 * Tb * C, v + 12 * Tb * C, ha, ha + 4 * C, ha + 8 * C,
                     ha + 12 * C, C)
            else:
                _bt4(v, v + 6 * Tb * C, v + 12 * Tb * C, v + 18 * Tb * C, v + 24 * Tb * C, v + 30 * Tb * C,
                     ha, ha + 6 * C, ha + 12 * C, ha + 18 * C, ha + 24 * C, ha + 30 * C, C)


cdef inline void _finish_vec(fptr o, cfptr t, cfptr bias, const float* res, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if res != NULL:
        _finish_vec_res(o, t, bias, res, n)
    else:
        for i in range(n):
            o[i] = t[i] + bias[i]


cdef inline void _finish_vec_res(fptr o, cfptr t, cfptr bias, cfptr res, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = t[i] + bias[i] + res[i]


cdef inline void _prelu_vec(fptr y, cfptr slope, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float v, t, zero = 0
    for i in range(n):
        v = y[i]
        t = zero if v > zero else v   # min(v, 0) and max(v, 0) that keep a NaN
        v = zero if v < zero else v
        y[i] = v + slope[i] * t


cdef inline void _output_tiles_nhwc(Geo* g, Py_ssize_t g0, Py_ssize_t R, Py_ssize_t t0, Py_ssize_t t1,
                             const float* Mo, float* tmp) noexcept nogil:
    """Output pixels of tiles t0 .. t1-1, from Mo laid out (A2, R*tw, M)."""
    cdef int m = g.m, alpha = g.m + 2, a, r, l
    cdef Py_ssize_t M = g.M, Tb = R * g.tw, t, gr, i, j, n, yy, xx, px
    cdef float* s = tmp                         # s[a][l][M]
    cdef float* o = tmp + alpha * m * M         # o[r][l][M]
    cdef float* sa
    cdef float* y
    cdef const float* rrow
    cdef const float* mo
    for t in range(t0, t1):
        gr = g0 + t // g.tw
        n, i, j = gr // g.th, gr % g.th, t % g.tw
        for a in range(alpha):
            sa = s + a * m * M
            mo = Mo + (a * alpha * Tb + t) * M
            if m == 2:
                _at2(sa, sa + M, mo, mo + Tb * M, mo + 2 * Tb * M, mo + 3 * Tb * M, M)
            else:
                _at4(sa, sa + M, sa + 2 * M, sa + 3 * M, mo, mo + Tb * M, mo + 2 * Tb * M,
                     mo + 3 * Tb * M, mo + 4 * Tb * M, mo + 5 * Tb * M, M)
        for l in range(m):
            sa = s + l * M
            if m == 2:
                _at2(o + l * M, o + (2 + l) * M, sa, sa + 2 * M, sa + 4 * M, sa + 6 * M, M)
            else:
                _at4(o + l * M, o + (4 + l) * M, o + (8 + l) * M, o + (12 + l) * M,
                     sa, sa + 4 * M, sa + 8 * M, sa + 12 * M, sa + 16 * M, sa + 20 * M, M)
        for r in range(m):
            yy = i * m + r
            for l in range(m):
                xx = j * m + l
                if yy >= g.OH or xx >= g.OW:
                    continue
                px = (n * g.OH + yy) * g.OW + xx
                y = g.y + px * g.ldo
                rrow = g.res + px * M if g.res != NULL else NULL
                _finish_vec(y, o + (r * m + l) * M, g.bias, NULL if g.res_post else rrow, M)
                if g.act == 7:
                    _prelu_vec(y, g.slope, M)
                else:
                    act_run(y, M, g.act, g.p0, g.p1, 0)
                if g.res_post and rrow != NULL:
                    _add_row(y, rrow, M)


# -- drivers ---------------------------------------------------------------------------------------

cdef inline void _inputs(Geo* g, Py_ssize_t g0, Py_ssize_t R, Py_ssize_t j0, Py_ssize_t j1, float* V,
                  float* tmp) noexcept nogil:
    """Jobs j0 .. j1-1 of the input stage: channels (NCHW) or tiles (NHWC)."""
    cdef Py_ssize_t c
    if g.nhwc:
        _input_tiles_nhwc(g, g0, R, j0, j1, V, tmp)
        return
    for c in range(j0, j1):
        _input_block(g, c, g0, R, V, tmp)


cdef inline void _outputs(Geo* g, Py_ssize_t g0, Py_ssize_t R, Py_ssize_t j0, Py_ssize_t j1, float* Mo,
                   float* tmp) noexcept nogil:
    """Jobs j0 .. j1-1 of the output stage: channels (NCHW) or tiles (NHWC)."""
    cdef Py_ssize_t mc
    if g.nhwc:
        _output_tiles_nhwc(g, g0, R, j0, j1, Mo, tmp)
        return
    for mc in range(j0, j1):
        _output_block(g, mc, g0, R, Mo, tmp)
