# cython: language_level=3
"""2-D ConvTranspose as GEMM + col2im, NCHW and NHWC, with the fused bias/activation epilogue.

Per image and group, one SGEMM gives every kernel tap's contribution of every input pixel
(``cols``, kept in a caller-owned scratch buffer); col2im then adds each tap's block into the
output at ``o = i * stride + k * dilation - pad_begin``, skipping what falls outside, which is how
positive and negative end pads and ``output_padding`` come out (uncovered outputs stay 0 + bias).

- NCHW: ``cols (M*KH*KW, H*W) = W_g^T @ X_g``; col2im is parallel over output channels
  (a chunk owns whole planes, so the scatter has no races).
- NHWC: ``cols (H*W, G, KH*KW, Mg) = X_g @ W'_g`` with W' packed (C, KH, KW, Mg); col2im is
  parallel over output rows, each gathering the taps that land in it, vectorised over channels.

Parallel loops run on the shared pool (``wb_pool.h``); small planes or rows are grouped into
chunks of about ``WB_CHUNK_WORK`` elements (``wb_pool.pxd``) so that handing out a chunk costs little next to it.
"""
import numpy as np
cimport numpy as cnp

from _gemm cimport gemm_rm
from _epilogue cimport epilogue_rows
from libc.string cimport memcpy
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

from workbench._kernels.checks import float32_array

cnp.import_array()
wb_pool_import()


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


cdef inline Py_ssize_t _floordiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # b > 0; C division truncates toward zero.
    cdef Py_ssize_t q = a / b
    return q - 1 if (a % b != 0 and a < 0) else q


cdef inline Py_ssize_t _lo(Py_ssize_t k, Py_ssize_t d, Py_ssize_t s, Py_ssize_t p) noexcept nogil:
    """First input i whose tap k lands at or after output 0: ceil((p - k*d) / s), at least 0."""
    return max(-_floordiv(k * d - p, s), 0)


cdef inline Py_ssize_t _hi(Py_ssize_t k, Py_ssize_t d, Py_ssize_t s, Py_ssize_t p, Py_ssize_t in_len,
                           Py_ssize_t out_len) noexcept nogil:
    """One past the last input i whose tap k lands before ``out_len`` (may be <= _lo: empty)."""
    return min(_floordiv(out_len - 1 + p - k * d, s) + 1, in_len)


cdef struct Geometry:
    Py_ssize_t N, C, H, W, M, OH, OW, G, Cg, Mg, KH, KW, sh, sw, dh, dw, pt, pl


cdef struct _Col2imCtx:
    # One image's col2im: chunk i covers items (output channels, NCHW; output rows, NHWC)
    # [i * per, min((i + 1) * per, items)).
    const Geometry* g
    const float* cols
    float* out
    const float* bias
    const float* slope
    float p0, p1
    int act
    Py_ssize_t n, per, items


cdef void _nchw_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _Col2imCtx* j = <_Col2imCtx*> ctx
    cdef const Geometry* g = j.g
    cdef Py_ssize_t KK = g.KH * g.KW, HW = g.H * g.W, mo, kh, kw, ih, iw, lo, hi, wlo, whi, oh, base, i
    cdef Py_ssize_t m0 = chunk * j.per, m1 = min(m0 + j.per, j.items)
    cdef float* plane
    cdef const float* c
    for mo in range(m0, m1):
        plane = j.out + (j.n * g.M + mo) * g.OH * g.OW
        for i in range(g.OH * g.OW):
            plane[i] = 0
        for kh in range(g.KH):
            lo = _lo(kh, g.dh, g.sh, g.pt)
            hi = _hi(kh, g.dh, g.sh, g.pt, g.H, g.OH)
            for kw in range(g.KW):
                wlo = _lo(kw, g.dw, g.sw, g.pl)
                whi = _hi(kw, g.dw, g.sw, g.pl, g.W, g.OW)
                c = j.cols + ((mo * g.KH + kh) * g.KW + kw) * HW
                base = kw * g.dw - g.pl
                for ih in range(lo, hi):
                    oh = ih * g.sh + kh * g.dh - g.pt
                    for iw in range(wlo, whi):
                        plane[oh * g.OW + iw * g.sw + base] += c[ih * g.W + iw]
        epilogue_rows(plane, 1, g.OH * g.OW, g.OH * g.OW, True, j.bias + mo if j.bias != NULL else NULL, NULL, 0,
                      j.act, j.p0, j.p1, j.slope + mo if j.slope != NULL else NULL)


cdef inline void _ctx(_Col2imCtx* c, const Geometry* g, float* cols, float* out, const float* bias, int act,
                      float p0, float p1, const float* slope, Py_ssize_t items, Py_ssize_t item_work,
                      int nt) noexcept nogil:
    c.g, c.cols, c.out, c.bias, c.slope, c.act, c.p0, c.p1 = g, cols, out, bias, slope, act, p0, p1
    c.items = items
    c.per = wb_jobs_per_chunk(items, item_work, nt)


cdef void _nchw(const float* x, const float* w, float* out, float* cols, Geometry g, const float* bias,
                int act, float p0, float p1, const float* slope, int nt) noexcept nogil:
    cdef Py_ssize_t KK = g.KH * g.KW, HW = g.H * g.W, n, grp
    cdef _Col2imCtx c
    # A plane's work: each output about KK / (sh * sw) taps, plus its epilogue.
    _ctx(&c, &g, cols, out, bias, act, p0, p1, slope, g.M, g.OH * g.OW * (1 + KK // (g.sh * g.sw)), nt)
    for n in range(g.N):
        for grp in range(g.G):
            gemm_rm(True, False, g.Mg * KK, HW, g.Cg, 1, w + grp * g.Cg * g.Mg * KK, g.Mg * KK,
                    x + (n * g.C + grp * g.Cg) * HW, HW, 0, cols + grp * g.Mg * KK * HW, HW)
        c.n = n
        wb_pool_run(_nchw_chunk, &c, (c.items + c.per - 1) // c.per, nt)


cdef void _nhwc_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _Col2imCtx* j = <_Col2imCtx*> ctx
    cdef const Geometry* g = j.g
    cdef Py_ssize_t KK = g.KH * g.KW, ld = g.G * KK * g.Mg
    cdef Py_ssize_t grp, oh, kh, kw, t, ih, iw, wlo, whi, ow, m
    cdef Py_ssize_t oh0 = chunk * j.per, oh1 = min(oh0 + j.per, j.items)
    cdef float* row
    cdef float* dst
    cdef const float* src
    for oh in range(oh0, oh1):
        row = j.out + (j.n * g.OH + oh) * g.OW * g.M
        for ow in range(g.OW * g.M):
            row[ow] = 0
        for kh in range(g.KH):
            t = oh + g.pt - kh * g.dh
            if t < 0 or t % g.sh != 0 or t / g.sh >= g.H:
                continue
            ih = t / g.sh
            for kw in range(g.KW):
                wlo = _lo(kw, g.dw, g.sw, g.pl)
                whi = _hi(kw, g.dw, g.sw, g.pl, g.W, g.OW)
                for iw in range(wlo, whi):
                    ow = iw * g.sw + kw * g.dw - g.pl
                    for grp in range(g.G):
                        src = j.cols + (ih * g.W + iw) * ld + (grp * KK + kh * g.KW + kw) * g.Mg
                        dst = row + ow * g.M + grp * g.Mg
                        for m in range(g.Mg):
                            dst[m] += src[m]
        epilogue_rows(row, g.OW, g.M, g.M, False, j.bias, NULL, 0, j.act, j.p0, j.p1, j.slope)


cdef void _nhwc(const float* x, const float* w, float* out, float* cols, Geometry g, const float* bias,
                int act, float p0, float p1, const float* slope, int nt) noexcept nogil:
    cdef Py_ssize_t KK = g.KH * g.KW, HW = g.H * g.W, ld = g.G * KK * g.Mg, n, grp
    cdef _Col2imCtx c
    _ctx(&c, &g, cols, out, bias, act, p0, p1, slope, g.OH, g.OW * g.M * (1 + KK // (g.sh * g.sw)), nt)
    for n in range(g.N):
        for grp in range(g.G):
            gemm_rm(False, False, HW, KK * g.Mg, g.Cg, 1, x + n * HW * g.C + grp * g.Cg, g.C,
                    w + grp * g.Cg * KK * g.Mg, KK * g.Mg, 0, cols + grp * KK * g.Mg, ld)
        c.n = n
        wb_pool_run(_nhwc_chunk, &c, (c.items + c.per - 1) // c.per, nt)


def _array(a, name, shape=None, size=None, writeable=False):
    float32_array(a, name, "conv_transpose", shape=shape, min_size=size, writeable=writeable)


cdef inline float* _p(a) noexcept:
    return <float*> cnp.PyArray_DATA(<cnp.ndarray> a) if a is not None else NULL


def conv_transpose(x, w, out, scratch, bint nhwc, int group, kernel, strides, dilations, pads, bias=None,
                   int act=0, float p0=0, float p1=0, slope=None, int num_threads=1):
    """``out = act(conv_transpose(x, w) + bias)`` for 2-D float32 tensors.

    Parameters
    ----------
    x : ndarray, (N, C, H, W), or (N, H, W, C) with ``nhwc``
    w : ndarray, (C, M/group, KH, KW), or packed (C, KH, KW, M/group) with ``nhwc``
    out : ndarray, (N, M, OH, OW), or (N, OH, OW, M) with ``nhwc``
    scratch : ndarray, float32, at least M*KH*KW*H*W elements (the GEMM's columns)
    kernel, strides, dilations : (int, int)
    pads : (top, left): the begin pads (>= 0); end pads are implied by the output size
    bias, slope : ndarray, float32, (M,), optional; act, p0, p1: the fused activation code
    """
    cdef Geometry g
    _array(x, "x")
    _array(w, "w")
    _array(out, "out", writeable=True)
    _array(scratch, "scratch", writeable=True)
    if x.ndim != 4 or w.ndim != 4 or out.ndim != 4:
        raise ValueError(f"conv_transpose: x {x.shape}, w {w.shape} and out {out.shape} must be 4-D")
    g.N, g.C, g.H, g.W = (x.shape[0], x.shape[3], x.shape[1], x.shape[2]) if nhwc else x.shape
    g.M, g.OH, g.OW = (out.shape[3], out.shape[1], out.shape[2]) if nhwc else out.shape[1:]
    g.KH, g.KW = kernel
    g.sh, g.sw = strides
    g.dh, g.dw = dilations
    g.pt, g.pl = pads
    g.G = group
    if min(g.KH, g.KW, g.sh, g.sw, g.dh, g.dw, g.G) < 1 or g.pt < 0 or g.pl < 0:
        raise ValueError(f"conv_transpose: kernel {kernel}, strides {strides}, dilations {dilations} and group "
                         f"{group} must be positive, begin pads {pads} non-negative")
    if g.C % g.G or g.M % g.G or out.shape[0] != g.N:
        raise ValueError(f"conv_transpose: x {x.shape} and out {out.shape} do not fit group {group}")
    g.Cg, g.Mg = g.C // g.G, g.M // g.G
    _array(w, "w", shape=(g.C, g.KH, g.KW, g.Mg) if nhwc else (g.C, g.Mg, g.KH, g.KW))
    _array(scratch, "scratch", size=g.M * g.KH * g.KW * g.H * g.W)
    if (act == 7) != (slope is not None) or not 0 <= act <= 8:
        raise ValueError(f"conv_transpose: activation code {act} with slope {'given' if slope is not None else 'None'}")
    for name, v in (("bias", bias), ("slope", slope)):
        if v is not None:
            _array(v, name, shape=(g.M,))
    if max(g.M * g.KH * g.KW, g.H * g.W, g.C, g.G * g.KH * g.KW * g.Mg) > 2**31 - 1:
        raise ValueError("conv_transpose: dimensions exceed BLAS's 32-bit range")
    if out.size == 0 or x.size == 0:
        out[...] = 0
        return out
    cdef float* px = _p(x)
    cdef float* pw = _p(w)
    cdef float* po = _p(out)
    cdef float* pc = _p(scratch)
    cdef float* pb = _p(bias)
    cdef float* ps = _p(slope)
    cdef int nt = _threads(out.size * g.KH * g.KW, num_threads)
    with nogil:
        if nhwc:
            _nhwc(px, pw, po, pc, g, pb, act, p0, p1, ps, nt)
        else:
            _nchw(px, pw, po, pc, g, pb, act, p0, p1, ps, nt)
    return out


# -- kernel == stride, no padding: every output pixel takes exactly one tap --------------------------
cdef struct _ShuffleCtx:
    # One image: chunk ``blk`` is a block of ``per`` input rows (NHWC) or output channels (NCHW).
    const Geometry* g
    const float* x
    const float* w
    float* out
    float* cols
    const float* bias
    const float* slope
    float p0, p1
    int act
    Py_ssize_t n, per


cdef void _shuffle_nhwc_chunk(void* ctx, Py_ssize_t blk, int slot) noexcept nogil:
    cdef _ShuffleCtx* s = <_ShuffleCtx*> ctx
    cdef const Geometry* g = s.g
    cdef Py_ssize_t KK = g.KH * g.KW, ld = KK * g.M, run = g.KW * g.M, n = s.n, i, kh, j
    cdef Py_ssize_t i0 = blk * s.per, i1 = min(i0 + s.per, g.H)
    cdef float* row
    gemm_rm(False, False, (i1 - i0) * g.W, ld, g.C, 1, s.x + (n * g.H + i0) * g.W * g.C, g.C, s.w, ld, 0,
            s.cols + i0 * g.W * ld, ld)
    for i in range(i0, i1):
        for kh in range(g.KH):
            row = s.out + ((n * g.OH + i * g.KH + kh) * g.OW) * g.M
            for j in range(g.W):
                memcpy(row + j * run, s.cols + ((i * g.W + j) * KK + kh * g.KW) * g.M, run * sizeof(float))
            epilogue_rows(row, g.OW, g.M, g.M, False, s.bias, NULL, 0, s.act, s.p0, s.p1, s.slope)


cdef inline void _shuffle_ctx(_ShuffleCtx* s, const Geometry* g, const float* x, const float* w, float* out,
                              float* cols, const float* bias, int act, float p0, float p1,
                              const float* slope) noexcept nogil:
    s.g, s.x, s.w, s.out, s.cols, s.bias, s.slope, s.act, s.p0, s.p1 = g, x, w, out, cols, bias, slope, act, p0, p1


cdef void _shuffle_nhwc(const float* x, const float* w, float* out, float* cols, Geometry g, const float* bias,
                        int act, float p0, float p1, const float* slope, int nt) noexcept nogil:
    """Per chunk a block of input rows: its GEMM rows (W pixels x KH*KW*M), then each (row, kh)
    lands as W contiguous runs of KW*M floats in output row i*KH + kh (KW == stride)."""
    cdef Py_ssize_t rows_per = max(1, (g.H + 4 * nt - 1) // (4 * nt)), blocks = (g.H + rows_per - 1) // rows_per, n
    cdef _ShuffleCtx s
    _shuffle_ctx(&s, &g, x, w, out, cols, bias, act, p0, p1, slope)
    s.per = rows_per
    for n in range(g.N):
        s.n = n
        wb_pool_run(_shuffle_nhwc_chunk, &s, blocks, nt)


cdef void _shuffle_nchw_chunk(void* ctx, Py_ssize_t blk, int slot) noexcept nogil:
    cdef _ShuffleCtx* s = <_ShuffleCtx*> ctx
    cdef const Geometry* g = s.g
    cdef Py_ssize_t KK = g.KH * g.KW, HW = g.H * g.W, n = s.n, m, kh, kw, i, j
    cdef Py_ssize_t m0 = blk * s.per, m1 = min(m0 + s.per, g.M)
    cdef float* plane
    cdef float* row
    cdef const float* c
    gemm_rm(True, False, (m1 - m0) * KK, HW, g.C, 1, s.w + m0 * KK, g.M * KK, s.x + n * g.C * HW, HW, 0,
            s.cols + m0 * KK * HW, HW)
    for m in range(m0, m1):
        plane = s.out + (n * g.M + m) * g.OH * g.OW
        for kh in range(g.KH):
            for kw in range(g.KW):
                c = s.cols + ((m * g.KH + kh) * g.KW + kw) * HW
                for i in range(g.H):
                    row = plane + (i * g.KH + kh) * g.OW + kw
                    if g.KW == 2:
                        for j in range(g.W):
                            row[2 * j] = c[i * g.W + j]
                    else:
                        for j in range(g.W):
                            row[j * g.KW] = c[i * g.W + j]
        epilogue_rows(plane, 1, g.OH * g.OW, g.OH * g.OW, True, s.bias + m if s.bias != NULL else NULL, NULL, 0,
                      s.act, s.p0, s.p1, s.slope + m if s.slope != NULL else NULL)


cdef void _shuffle_nchw(const float* x, const float* w, float* out, float* cols, Geometry g, const float* bias,
                        int act, float p0, float p1, const float* slope, int nt) noexcept nogil:
    """Per chunk a block of output channels: its GEMM rows (m, kh, kw) x H*W pixels, then output
    row (m, i*KH + kh) interleaves the KW rows of that (m, kh) (KW == stride)."""
    cdef Py_ssize_t per = max(1, (g.M + 4 * nt - 1) // (4 * nt)), blocks = (g.M + per - 1) // per, n
    cdef _ShuffleCtx s
    _shuffle_ctx(&s, &g, x, w, out, cols, bias, act, p0, p1, slope)
    s.per = per
    for n in range(g.N):
        s.n = n
        wb_pool_run(_shuffle_nchw_chunk, &s, blocks, nt)


def conv_transpose_shuffle(x, w, out, scratch, bint nhwc, bias=None, int act=0, float p0=0, float p1=0, slope=None,
                           int num_threads=1):
    """:func:`conv_transpose` for kernel == stride, no padding, dilation 1, group 1: one GEMM and a
    pixel shuffle (each output pixel is one tap of one input pixel; nothing accumulates).

    Parameters
    ----------
    x : ndarray, (N, C, H, W), or (N, H, W, C) with ``nhwc``
    w : ndarray, (C, M, KH, KW), or packed (C, KH, KW, M) with ``nhwc``
    out : ndarray, (N, M, H*KH, W*KW), or (N, H*KH, W*KW, M) with ``nhwc``
    scratch : ndarray, float32, at least M*KH*KW*H*W elements
    """
    cdef Geometry g
    _array(x, "x")
    _array(w, "w")
    _array(out, "out", writeable=True)
    _array(scratch, "scratch", writeable=True)
    if x.ndim != 4 or w.ndim != 4 or out.ndim != 4:
        raise ValueError(f"conv_transpose_shuffle: x {x.shape}, w {w.shape} and out {out.shape} must be 4-D")
    g.N, g.C, g.H, g.W = (x.shape[0], x.shape[3], x.shape[1], x.shape[2]) if nhwc else x.shape
    if nhwc:
        _, g.KH, g.KW, g.M = w.shape
    else:
        _, g.M, g.KH, g.KW = w.shape
    g.OH, g.OW = g.H * g.KH, g.W * g.KW
    _array(w, "w", shape=(g.C, g.KH, g.KW, g.M) if nhwc else (g.C, g.M, g.KH, g.KW))
    _array(out, "out", shape=(g.N, g.OH, g.OW, g.M) if nhwc else (g.N, g.M, g.OH, g.OW))
    _array(scratch, "scratch", size=g.M * g.KH * g.KW * g.H * g.W)
    if (act == 7) != (slope is not None) or not 0 <= act <= 8:
        raise ValueError(f"conv_transpose_shuffle: activation code {act} with slope "
                         f"{'given' if slope is not None else 'None'}")
    for name, v in (("bias", bias), ("slope", slope)):
        if v is not None:
            _array(v, name, shape=(g.M,))
    if max(g.M * g.KH * g.KW, g.H * g.W, g.C) > 2**31 - 1:
        raise ValueError("conv_transpose_shuffle: dimensions exceed BLAS's 32-bit range")
    if x.size == 0:
        raise ValueError(f"conv_transpose_shuffle: empty input {x.shape}")
    cdef float* px = _p(x)
    cdef float* pw = _p(w)
    cdef float* po = _p(out)
    cdef float* pc = _p(scratch)
    cdef float* pb = _p(bias)
    cdef float* ps = _p(slope)
    cdef int nt = _threads(out.size * g.C // 8, num_threads)
    with nogil:
        if nhwc:
            _shuffle_nhwc(px, pw, po, pc, g, pb, act, p0, p1, ps, nt)
        else:
            _shuffle_nchw(px, pw, po, pc, g, pb, act, p0, p1, ps, nt)
    return out
