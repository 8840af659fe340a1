# cython: language_level=3
"""Winograd F(2x2,3x3) and F(4x4,3x3) convolution of float32 NCHW and NHWC tensors, fused epilogue.

Tiles are m x m output pixels (m = 2 or 4) read from alpha x alpha input patches (alpha = m + 2).
The tiles of one image form ``th`` tile rows of ``tw`` tiles; tile rows of all images are
numbered globally and processed in blocks of ``rows`` tile rows (Tb = rows * tw tiles):

1. input transform, per (input channel, block): the block's input rows are copied into a
   zero-padded slab, B^T is applied along each patch row reading the slab with stride m, then
   down the patch columns over all Tb tiles at once (unit stride, long vectors);
   V[k][c][t] = (B^T d B)[k] for the alpha^2 points k;
2. alpha^2 GEMMs Mo[k] (M x Tb) = U[k] (M x C) @ V[k] (C x Tb) through ``gemm_rm``;
3. output transform A^T Mo A per (output channel, block), again over all Tb tiles at once, then
   bias, residual and activation on each output row as it is written.

NHWC runs the same three stages per tile with every transform a loop over channels (contiguous
there): V is laid out (alpha^2, Tb, C), the GEMMs are Mo[k] (Tb x M) = V[k] @ U[k] (C x M).

Parallel modes: 0 = the stages of each block spread over the threads (input channels, GEMMs,
output channels); 1 = whole blocks spread over the threads, each with its own scratch.  Both
call BLAS from several threads at once: it must be single-threaded (the routine sees to that).
Calling the alpha^2 GEMMs one after another with BLAS threads instead measured 2-4x slower.
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy, memset
from _gemm cimport gemm_rm
from _epilogue cimport activate, activate_run

cnp.import_array()

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
    int m, A2, act, nhwc
    float p0, p1


cdef inline void _pad_row(float* dst, const float* src, Py_ssize_t pl, Py_ssize_t n, Py_ssize_t L) noexcept nogil:
    """dst[0:L] = zeros(pl), src[0:n], zeros."""
    memset(dst, 0, pl * sizeof(float))
    memcpy(dst + pl, src, n * sizeof(float))
    memset(dst + pl + n, 0, (L - pl - n) * sizeof(float))


cdef void _input_block(Geo* g, Py_ssize_t c, Py_ssize_t g0, Py_ssize_t R, float* V,
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


cdef void _output_block(Geo* g, Py_ssize_t mc, Py_ssize_t g0, Py_ssize_t R, const float* Mo,
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
            _finish(orow, trow, g.res + (n * g.M + mc) * plane + yy * g.OW if g.res != NULL else NULL,
                    b, g.OW)
            activate_run(orow, g.OW, g.act, g.p0, g.p1, sl)


# -- NHWC: the same transforms, vectorised over channels (contiguous in NHWC) --------------------

cdef void _input_tiles_nhwc(Geo* g, Py_ssize_t g0, Py_ssize_t R, Py_ssize_t t0, Py_ssize_t t1,
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
        t = v if v < zero else zero
        v = v if v > zero else zero
        y[i] = v + slope[i] * t


cdef void _output_tiles_nhwc(Geo* g, Py_ssize_t g0, Py_ssize_t R, Py_ssize_t t0, Py_ssize_t t1,
                             const float* Mo, float* tmp) noexcept nogil:
    """Output pixels of tiles t0 .. t1-1, from Mo laid out (A2, R*tw, M)."""
    cdef int m = g.m, alpha = g.m + 2, a, r, l
    cdef Py_ssize_t M = g.M, Tb = R * g.tw, t, gr, i, j, n, yy, xx, px
    cdef float* s = tmp                         # s[a][l][M]
    cdef float* o = tmp + alpha * m * M         # o[r][l][M]
    cdef float* sa
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
                px = ((n * g.OH + yy) * g.OW + xx) * M
                _finish_vec(g.y + px, o + (r * m + l) * M, g.bias, g.res + px if g.res != NULL else NULL, M)
                if g.act == 7:
                    _prelu_vec(g.y + px, g.slope, M)
                else:
                    activate_run(g.y + px, M, g.act, g.p0, g.p1, 0)


# -- drivers ---------------------------------------------------------------------------------------

cdef void _inputs(Geo* g, Py_ssize_t g0, Py_ssize_t R, Py_ssize_t j0, Py_ssize_t j1, float* V,
                  float* tmp) noexcept nogil:
    """Jobs j0 .. j1-1 of the input stage: channels (NCHW) or tiles (NHWC)."""
    cdef Py_ssize_t c
    if g.nhwc:
        _input_tiles_nhwc(g, g0, R, j0, j1, V, tmp)
        return
    for c in range(j0, j1):
        _input_block(g, c, g0, R, V, tmp)


cdef void _outputs(Geo* g, Py_ssize_t g0, Py_ssize_t R, Py_ssize_t j0, Py_ssize_t j1, float* Mo,
                   float* tmp) noexcept nogil:
    """Jobs j0 .. j1-1 of the output stage: channels (NCHW) or tiles (NHWC)."""
    cdef Py_ssize_t mc
    if g.nhwc:
        _output_tiles_nhwc(g, g0, R, j0, j1, Mo, tmp)
        return
    for mc in range(j0, j1):
        _output_block(g, mc, g0, R, Mo, tmp)


cdef void _gemms(Geo* g, Py_ssize_t Tb, Py_ssize_t k0, Py_ssize_t k1, const float* V, float* Mo) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(k0, k1):
        if g.nhwc:      # Mo[k] (Tb, M) = V[k] (Tb, C) @ U[k] (C, M)
            gemm_rm(False, False, Tb, g.M, g.C, 1.0, V + k * g.C * Tb, g.C, g.U + k * g.M * g.C, g.M,
                    0.0, Mo + k * g.M * Tb, g.M)
        else:           # Mo[k] (M, Tb) = U[k] (M, C) @ V[k] (C, Tb)
            gemm_rm(False, False, g.M, Tb, g.C, 1.0, g.U + k * g.M * g.C, g.C, V + k * g.C * Tb, Tb,
                    0.0, Mo + k * g.M * Tb, Tb)


cdef void _run(Geo* g, Py_ssize_t rows, int mode, float* V, float* Mo, float* tmp, Py_ssize_t tmp_sz,
               int nt) noexcept nogil:
    cdef Py_ssize_t nblk = (g.G + rows - 1) // rows, blk, g0, R, job, tid
    cdef Py_ssize_t vsz = g.A2 * g.C * rows * g.tw, msz = g.A2 * g.M * rows * g.tw
    if mode == 1:
        for blk in prange(nblk, nogil=True, schedule="dynamic", num_threads=nt):
            tid = threadid()
            g0 = blk * rows
            R = min(rows, g.G - g0)
            _inputs(g, g0, R, 0, R * g.tw if g.nhwc else g.C, V + tid * vsz, tmp + tid * tmp_sz)
            _gemms(g, R * g.tw, 0, g.A2, V + tid * vsz, Mo + tid * msz)
            _outputs(g, g0, R, 0, R * g.tw if g.nhwc else g.M, Mo + tid * msz, tmp + tid * tmp_sz)
        return
    # One parallel region for all stages of all blocks: the team is woken once (a region cost
    # ~8 us here, against 0.2-2 ms layers), the stages meet at the loops' barriers.
    with nogil, parallel(num_threads=nt):
        tid = threadid()
        for blk in range(nblk):
            g0 = blk * rows
            R = min(rows, g.G - g0)
            for job in prange(R * g.tw if g.nhwc else g.C, schedule="static"):
                _inputs(g, g0, R, job, job + 1, V, tmp + tid * tmp_sz)
            for job in prange(g.A2, schedule="dynamic"):
                _gemms(g, R * g.tw, job, job + 1, V, Mo)
            for job in prange(R * g.tw if g.nhwc else g.M, schedule="static"):
                _outputs(g, g0, R, job, job + 1, Mo, tmp + tid * tmp_sz)


# -- Python-visible twin ------------------------------------------------------------------------

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


def scratch_floats(int m, N, C, H, W, M, pads, int rows, int mode, int num_threads, bint nhwc=False):
    """Floats of (V, Mo, tmp) scratch that :func:`nchw` / :func:`nhwc` need for a layer and plan."""
    if m not in (2, 4):
        raise ValueError(f"tile size m must be 2 or 4, got {m}")
    if len(pads) != 4 or min(pads) < 0:
        raise ValueError(f"bad pads {tuple(pads)}: four values >= 0 (top, left, bottom, right)")
    OH, OW = H + pads[0] + pads[2] - 2, W + pads[1] + pads[3] - 2
    if OH < 1 or OW < 1:
        raise ValueError(f"empty output {OH}x{OW} for input {H}x{W} with pads {tuple(pads)}")
    th, tw, a = -(-OH // m), -(-OW // m), m + 2
    rows = max(1, min(rows, N * th))
    copies = num_threads if mode == 1 else 1
    tb = rows * tw
    if nhwc:
        tmp = max(a * a * C + C, a * m * M + m * m * M)
    else:
        tmp = max(a * a * tb + (rows * m + 2) * (tw * m + 2), a * m * tb + m * m * tb + m * tw)
    tmp = -(-tmp // 16) * 16   # whole cache lines per thread
    return copies * a * a * C * tb, copies * a * a * M * tb, num_threads * tmp


cdef float* _p(a):
    return NULL if a is None else <float*> cnp.PyArray_DATA(<cnp.ndarray> a)


def nchw(x, U, bias, out, V, Mo, tmp, int m, pads, residual=None, int act=0, float p0=0, float p1=0,
         slope=None, int rows=1, int mode=0, int num_threads=1):
    """Winograd F(m x m, 3x3) convolution (stride 1, dilation 1, group 1), written into ``out``.

    Parameters
    ----------
    x : ndarray, float32, (N, C, H, W)
    U : ndarray, float32, ((m+2)**2, M, C)
        Transformed weights G g G^T, one (M, C) matrix per transform point.
    bias : ndarray, float32, (M,)
    out : ndarray, float32, (N, M, OH, OW)
    V, Mo, tmp : ndarray, float32
        Scratch of at least the sizes :func:`scratch_floats` returns.
    m : int
        Output tile size, 2 or 4.
    pads : (int, int, int, int)
        Top, left, bottom, right.
    residual, act, p0, p1, slope
        Fused epilogue (see ``_epilogue.pxd``); ``slope`` (M,) for PRelu.
    rows : int
        Tile rows per block.
    mode : int
        Parallel mode (module docstring); both call BLAS from several threads at once, which
        must then be single-threaded.
    num_threads : int
        OpenMP threads.
    """
    return _conv(False, x, U, bias, out, V, Mo, tmp, m, pads, residual, act, p0, p1, slope, rows, mode,
                 num_threads)


def nhwc(x, U, bias, out, V, Mo, tmp, int m, pads, residual=None, int act=0, float p0=0, float p1=0,
         slope=None, int rows=1, int mode=0, int num_threads=1):
    """As :func:`nchw` for channels-last tensors: ``x`` (N, H, W, C), ``U`` ((m+2)**2, C, M),
    ``out`` and ``residual`` (N, OH, OW, M); scratch sizes from ``scratch_floats(..., nhwc=True)``."""
    return _conv(True, x, U, bias, out, V, Mo, tmp, m, pads, residual, act, p0, p1, slope, rows, mode,
                 num_threads)


def _conv(bint nhwc, x, U, bias, out, V, Mo, tmp, int m, pads, residual, int act, float p0, float p1,
          slope, int rows, int mode, int num_threads):
    _f32(x, "input")
    if x.ndim != 4:
        raise ValueError(f"input must be 4-D ({'N, H, W, C' if nhwc else 'N, C, H, W'}), got shape {x.shape}")
    if m not in (2, 4) or mode not in (0, 1) or num_threads < 1 or not 0 <= act <= 8:
        raise ValueError(f"bad m={m}, mode={mode}, num_threads={num_threads} or act={act}")
    if nhwc:
        N, H, W, C = x.shape
    else:
        N, C, H, W = x.shape
    pt, pl, pb, pr = (int(p) for p in pads)
    A2 = (m + 2) ** 2
    _f32(U, "U")
    if U.ndim != 3 or U.shape[0] != A2 or U.shape[2 if not nhwc else 1] != C:
        raise ValueError(f"weights U {U.shape} do not fit ({A2}, {'C, M' if nhwc else 'M, C'}) with C={C}")
    M = U.shape[2] if nhwc else U.shape[1]
    nv, nm, nt = scratch_floats(m, N, C, H, W, M, (pt, pl, pb, pr), rows, mode, num_threads, nhwc)
    OH, OW = H + pt + pb - 2, W + pl + pr - 2
    _f32(bias, "bias", (M,))
    _f32(out, "output", (N, OH, OW, M) if nhwc else (N, M, OH, OW), writeable=True)
    for a, what, need in ((V, "V", nv), (Mo, "Mo", nm), (tmp, "tmp", nt)):
        _f32(a, what, writeable=True)
        if a.size < need:
            raise ValueError(f"scratch {what} has {a.size} floats, needs {need}")
    if residual is not None:
        _f32(residual, "residual", out.shape)
    if act == 7 and slope is None:
        raise ValueError("PRelu (code 7) needs a per-channel slope")
    if slope is not None:
        _f32(slope, "slope", (M,))
    cdef Geo g
    g.x, g.U, g.bias, g.res, g.slope, g.y = _p(x), _p(U), _p(bias), _p(residual), _p(slope), _p(out)
    g.N, g.C, g.H, g.W, g.M, g.OH, g.OW, g.pt, g.pl = N, C, H, W, M, OH, OW, pt, pl
    g.th, g.tw, g.m, g.A2, g.nhwc = -(-OH // m), -(-OW // m), m, A2, nhwc
    g.G = N * g.th
    g.act, g.p0, g.p1 = act, p0, p1
    rows = max(1, min(rows, g.G))
    _run(&g, rows, mode, _p(V), _p(Mo), _p(tmp), nt // num_threads, num_threads)
    return out
