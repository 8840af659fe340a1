# cython: language_level=3
"""GEMM-based float32 2-D convolution in both layouts, with the fused epilogue.

The output is computed in *jobs*: one (image, group, pixel tile) for NCHW, one (group, pixel tile)
for NHWC (whose pixels run on across images, so the batch folds into the GEMM).  A job gathers
its im2col tile (or, for a 1x1 stride-1 unpadded conv, reads the input in place), runs SGEMM
and applies bias + residual + activation to the block it just wrote, while it is still in cache.

All parallelism is the shared pool's (``wb_pool.h``) and the BLAS must be single-threaded during
a call (the caller sets it): ``parallel_tiles`` runs whole jobs as pool chunks, one scratch tile
per thread; otherwise
jobs run one after another, each with a parallel gather into one shared tile and its GEMM split
over output channels (layers with too few pixels to split).  A BLAS threading its own calls
inside our parallel regions, or spinning beside them, costs several times the whole layer.
Shapes are checked in the Python-visible functions before any ``nogil`` code.
"""
import numpy as np
cimport numpy as cnp

from _gemm cimport gemm_rm
from conv_gemm cimport ACT_RUN_LAST, Epi, Geo, _cols_nchw_row, _cols_nhwc_pixel, _epilogue, _imin
from wb_pool cimport wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()


cdef void _block_nchw(const Geo* g, const float* b, Py_ssize_t ldb, const float* w, float* out,
                      const Epi* e, Py_ssize_t nn, Py_ssize_t gi, Py_ssize_t p0, Py_ssize_t p1,
                      Py_ssize_t m0, Py_ssize_t m1) noexcept nogil:
    """Output channels m0..m1-1 of group ``gi`` (relative to it), pixels p0..p1-1 of image nn."""
    cdef Py_ssize_t ch = gi * g.mg + m0, np_ = p1 - p0
    cdef float* o = out + (nn * g.m + ch) * g.p + p0
    gemm_rm(False, False, <int> (m1 - m0), <int> np_, <int> g.kg, 1.0, w + ch * g.kg, <int> g.kg,
            b, <int> ldb, 0.0, o, <int> g.p)
    if e.bias != NULL or e.res != NULL or e.act != 0:
        _epilogue(o, m1 - m0, np_, g.p, True, e.bias + ch if e.bias != NULL else NULL,
                  e.res + (nn * g.m + ch) * g.p + p0 if e.res != NULL else NULL, g.p, e,
                  e.slope + ch if e.slope != NULL else NULL)


cdef void _block_nhwc(const Geo* g, const float* a, Py_ssize_t lda, const float* w, float* out,
                      const Epi* e, Py_ssize_t gi, Py_ssize_t q0, Py_ssize_t q1,
                      Py_ssize_t m0, Py_ssize_t m1) noexcept nogil:
    """Output channels m0..m1-1 of group ``gi`` (relative to it) for batch pixels q0..q1-1."""
    cdef Py_ssize_t ch = gi * g.mg + m0
    cdef float* o = out + q0 * g.m + ch
    gemm_rm(False, False, <int> (q1 - q0), <int> (m1 - m0), <int> g.kg, 1.0, a, <int> lda,
            w + gi * g.kg * g.mg + m0, <int> g.mg, 0.0, o, <int> g.m)
    if e.bias != NULL or e.res != NULL or e.act != 0:
        _epilogue(o, q1 - q0, m1 - m0, g.m, False, e.bias + ch if e.bias != NULL else NULL,
                  e.res + q0 * g.m + ch if e.res != NULL else NULL, g.m, e,
                  e.slope + ch if e.slope != NULL else NULL)


cdef void _block_nhwc_t(const Geo* g, const float* a, Py_ssize_t lda, const float* w, float* out,
                        float* tmp, const Epi* e, Py_ssize_t gi, Py_ssize_t q0, Py_ssize_t q1,
                        Py_ssize_t m0, Py_ssize_t m1) noexcept nogil:
    """:func:`_block_nhwc` computed transposed from weights packed (M, K), ``tmp(m, q) = W[m] @
    cols[q]^T``, then copied into the NHWC rows: with few pixels, the BLAS is much faster (~15%
    single-threaded) with the pixels as its short side than with a column block of the weights
    as its long, strided one."""
    cdef Py_ssize_t ch = gi * g.mg + m0, nq = q1 - q0, q, m
    cdef float* t = tmp + m0 * nq
    cdef float* o
    gemm_rm(False, True, <int> (m1 - m0), <int> nq, <int> g.kg, 1.0, w + ch * g.kg, <int> g.kg,
            a, <int> lda, 0.0, t, <int> nq)
    for q in range(nq):
        o = out + (q0 + q) * g.m + ch
        for m in range(m1 - m0):
            o[m] = t[m * nq + q]
        if e.bias != NULL or e.res != NULL or e.act != 0:
            _epilogue(o, 1, m1 - m0, g.m, False, e.bias + ch if e.bias != NULL else NULL,
                      e.res + (q0 + q) * g.m + ch if e.res != NULL else NULL, g.m, e,
                      e.slope + ch if e.slope != NULL else NULL)


cdef struct _Part:
    # one job's pieces run in parallel: its gather and its GEMM blocks of output channels
    const Geo* g
    const float* x
    const float* src
    const float* w
    const float* b
    float* out
    float* cols
    const Epi* e
    Py_ssize_t ld, gi, nn, p0, p1, step
    bint nhwc, direct


cdef enum:
    GATHER_PIXELS = 16   # NHWC pixels gathered per pool chunk


cdef void _gather_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _Part* c = <_Part*> ctx
    cdef Py_ssize_t r
    if c.nhwc:
        for r in range(c.p0 + i * GATHER_PIXELS, _imin(c.p1, c.p0 + (i + 1) * GATHER_PIXELS)):
            _cols_nhwc_pixel(c.g, c.x, c.cols + (r - c.p0) * c.g.kg, r, c.gi)
    else:
        _cols_nchw_row(c.g, c.src, c.cols + i * (c.p1 - c.p0), i, c.p0, c.p1)


cdef void _block_chunk(void* ctx, Py_ssize_t blk, int slot) noexcept nogil:
    cdef _Part* c = <_Part*> ctx
    cdef Py_ssize_t m0 = blk * c.step, m1 = _imin(c.g.mg, m0 + c.step)
    if c.nhwc:
        _block_nhwc_t(c.g, c.b, c.ld, c.w, c.out, c.cols + (0 if c.direct else (c.p1 - c.p0) * c.g.kg), c.e,
                      c.gi, c.p0, c.p1, m0, m1)
    else:
        _block_nchw(c.g, c.b, c.ld, c.w, c.out, c.e, c.nn, c.gi, c.p0, c.p1, m0, m1)


cdef void _job(bint nhwc, const Geo* g, const float* x, const float* w, float* out, float* cols,
               const Epi* e, Py_ssize_t job, Py_ssize_t tile, bint direct, int nt) noexcept nogil:
    """One (image,) group and pixel tile.  With ``nt > 1`` the gather runs in parallel and the
    GEMM is split over output channels, one block per thread; else all of it runs here."""
    cdef Py_ssize_t total = g.n * g.p if nhwc else g.p, tiles = (total + tile - 1) // tile
    cdef Py_ssize_t t = job % tiles, blocks = 1
    cdef _Part c
    c.g, c.x, c.w, c.out, c.cols, c.e, c.nhwc, c.direct = g, x, w, out, cols, e, nhwc, direct
    c.gi, c.nn = (job // tiles) % g.g, job // (tiles * g.g)
    c.p0 = t * tile
    c.p1 = _imin(total, c.p0 + tile)
    c.src = x + (c.nn * g.c + c.gi * g.cg) * g.h * g.w
    c.step = g.mg
    if direct:
        if nhwc:
            c.b, c.ld = x + c.p0 * g.c + c.gi * g.cg, g.c
        else:
            c.b, c.ld = c.src + c.p0, g.p
    else:
        c.b, c.ld = cols, (g.kg if nhwc else c.p1 - c.p0)
        if nhwc:
            wb_pool_run(_gather_chunk, &c, (c.p1 - c.p0 + GATHER_PIXELS - 1) // GATHER_PIXELS, nt)
        else:
            wb_pool_run(_gather_chunk, &c, g.kg, nt)
    if nt > 1:
        # Blocks of whole 16-channel vectors where possible (the BLAS kernels' register width).
        c.step = ((g.mg + nt - 1) // nt + 15) // 16 * 16
        if c.step >= g.mg:
            c.step = (g.mg + nt - 1) // nt
        blocks = (g.mg + c.step - 1) // c.step
    if blocks <= 1:
        if nhwc:
            _block_nhwc(g, c.b, c.ld, w, out, e, c.gi, c.p0, c.p1, 0, g.mg)
        else:
            _block_nchw(g, c.b, c.ld, w, out, e, c.nn, c.gi, c.p0, c.p1, 0, g.mg)
        return
    wb_pool_run(_block_chunk, &c, blocks, nt)


cdef struct _Jobs:
    const Geo* g
    const float* x
    const float* w
    float* out
    float* scratch
    const Epi* e
    Py_ssize_t tile, per
    bint nhwc, direct


cdef void _job_chunk(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    cdef _Jobs* c = <_Jobs*> ctx
    _job(c.nhwc, c.g, c.x, c.w, c.out, c.scratch + slot * c.per, c.e, job, c.tile, c.direct, 1)


cdef void _run(bint nhwc, const Geo* g, const float* x, const float* w, float* out, float* scratch,
               const Epi* e, Py_ssize_t tile, bint parallel_tiles, bint direct, int nt) noexcept nogil:
    cdef Py_ssize_t jobs, job
    cdef _Jobs c
    if nhwc:
        jobs = g.g * ((g.n * g.p + tile - 1) // tile)
    else:
        jobs = g.n * g.g * ((g.p + tile - 1) // tile)
    if parallel_tiles and nt > 1:
        c.g, c.x, c.w, c.out, c.scratch, c.e = g, x, w, out, scratch, e
        c.tile, c.per, c.nhwc, c.direct = tile, tile * g.kg, nhwc, direct
        wb_pool_run(_job_chunk, &c, jobs, nt)
    else:
        for job in range(jobs):
            _job(nhwc, g, x, w, out, scratch, e, job, tile, direct, nt)


def _array(a, what, ndim=None, writeable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"conv2d: {what} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"conv2d: {what} must be float32, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"conv2d: {what} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"conv2d: {what} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"conv2d: {what} is read-only")
    return a


def pixel_rows(a, what, writeable=False):
    """``(a, ld)``: ``a``, a 4-D float32 NHWC array whose pixels are evenly spaced rows of
    contiguous channels (C-contiguous, or a channel slice of a larger NHWC buffer), and the
    floats from one pixel to the next; ValueError naming ``what`` otherwise.  Called on every
    run of some small layers: C arithmetic only."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 4:
        raise ValueError(f"{what} must be a 4-D float32 array, got "
                         f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if writeable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{what} is read-only")
    cdef cnp.npy_intp* shape = cnp.PyArray_DIMS(arr)
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(arr)
    cdef Py_ssize_t ld = shape[3], span = 1, k, inner = -1
    if cnp.PyArray_IS_C_CONTIGUOUS(arr):
        return a, ld
    cdef bint ok = strides[3] == 4
    for k in range(2, -1, -1):   # the innermost pixel axis of more than one entry sets the stride
        if shape[k] > 1:
            if inner < 0:
                inner, ld = k, strides[k] // 4
                ok = ok and strides[k] % 4 == 0 and ld >= shape[3]
            elif strides[k] != 4 * ld * span:
                ok = False
        if inner >= 0:
            span *= shape[k]
    if not ok:
        raise ValueError(f"{what} must be C-contiguous or a channel slice of an NHWC buffer, "
                         f"got strides {a.strides} for shape {a.shape}")
    return a, ld


def _ints(v, count, what, minimum):
    v = tuple(int(i) for i in v)
    if len(v) != count or any(i < minimum for i in v):
        raise ValueError(f"conv2d: {what} must be {count} integers >= {minimum}, got {v}")
    return v


cdef float* _ptr(a):
    return NULL if a is None else <float*> cnp.PyArray_DATA(<cnp.ndarray> a)


def _conv2d(bint nhwc, x, w, bias, residual, out, scratch, kernel, strides, dilations, pads, int group,
            int act, double p0, double p1, slope, Py_ssize_t tile, bint parallel_tiles, bint direct,
            int num_threads, bint res_post=False):
    cdef Geo g
    cdef Epi e
    e.post_scale = e.post_shift = NULL
    e.res_post = res_post
    x, out = _array(x, "input", 4), _array(out, "output", 4, writeable=True)
    if nhwc:
        (g.n, g.h, g.w, g.c), (on, g.oh, g.ow, g.m) = x.shape, out.shape
    else:
        (g.n, g.c, g.h, g.w), (on, g.m, g.oh, g.ow) = x.shape, out.shape
    g.ldo, g.ldx = g.m, g.c
    g.kh, g.kw = _ints(kernel, 2, "kernel", 1)
    g.sh, g.sw = _ints(strides, 2, "strides", 1)
    g.dh, g.dw = _ints(dilations, 2, "dilations", 1)
    g.pt, g.pl, pb, pr = _ints(pads, 4, "pads", 0)
    if g.c < 1:
        raise ValueError(f"conv2d: input {x.shape} has no channels")
    if group < 1 or g.c % group or g.m % group:
        raise ValueError(f"conv2d: group {group} must divide the {g.c} input and {g.m} output channels")
    g.g, g.cg, g.mg = group, g.c // group, g.m // group
    g.kg = g.cg * g.kh * g.kw
    oh = (g.h + g.pt + pb - (g.kh - 1) * g.dh - 1) // g.sh + 1
    ow = (g.w + g.pl + pr - (g.kw - 1) * g.dw - 1) // g.sw + 1
    if on != g.n or (oh, ow) != (g.oh, g.ow) or oh <= 0 or ow <= 0:
        raise ValueError(f"conv2d: input {x.shape} with this kernel/strides/pads gives {g.n} images of "
                         f"{oh}x{ow} pixels, but the output is {out.shape}")
    g.p = g.oh * g.ow
    if num_threads < 1:
        raise ValueError(f"conv2d: num_threads must be >= 1, got {num_threads}")
    w = _array(w, "weights")
    # NHWC packs the weights (group, K, M/g) for whole jobs, (M, K) when the GEMM is split.
    if nhwc and (parallel_tiles or num_threads == 1):
        want = (g.g, g.kg, g.mg)
    else:
        want = (g.m, g.kg)
    if w.shape != want and not (not nhwc and w.shape == (g.m, g.cg, g.kh, g.kw)):
        raise ValueError(f"conv2d: weights must have shape {want} for {g.c} input / {g.m} output channels, "
                         f"group {group}, kernel {g.kh}x{g.kw} and this schedule; got {w.shape}")
    if bias is not None and _array(bias, "bias").shape != (g.m,):
        raise ValueError(f"conv2d: bias must have shape ({g.m},), got {bias.shape}")
    if residual is not None and _array(residual, "residual").shape != out.shape:
        raise ValueError(f"conv2d: residual {residual.shape} must have the output's shape {out.shape}")
    if not 0 <= act <= ACT_RUN_LAST:
        raise ValueError(f"conv2d: unknown activation code {act}")
    if act == 7 and (slope is None or _array(slope, "slope").shape != (g.m,)):
        raise ValueError(f"conv2d: PRelu needs a float32 slope of shape ({g.m},)")
    if scratch is not None:
        _array(scratch, "scratch", writeable=True)
    for a, b, what in ((out, x, "output overlaps the input"), (out, residual, "output overlaps the residual"),
                       (out, w, "output overlaps the weights"), (out, bias, "output overlaps the bias"),
                       (scratch, x, "scratch overlaps the input"), (scratch, out, "scratch overlaps the output"),
                       (scratch, residual, "scratch overlaps the residual"),
                       (scratch, w, "scratch overlaps the weights")):
        if a is not None and b is not None and np.may_share_memory(a, b):
            raise ValueError(f"conv2d: the {what}")
    if direct and ((g.kh, g.kw, g.sh, g.sw) != (1, 1, 1, 1) or (g.pt, g.pl, pb, pr) != (0, 0, 0, 0)):
        raise ValueError("conv2d: direct (no im2col) needs a 1x1 kernel, stride 1 and no padding")
    total = g.n * g.p if nhwc else g.p
    tile = total if tile <= 0 else min(tile, total)
    need = scratch_floats(nhwc, g.kg, g.mg, tile, parallel_tiles, direct, num_threads)
    if need and (scratch is None or _array(scratch, "scratch").size < need):
        raise ValueError(f"conv2d: scratch must hold {need} floats, got "
                         f"{'none' if scratch is None else scratch.size}")
    e.bias, e.res, e.slope = _ptr(bias), _ptr(residual), _ptr(slope if act == 7 else None)
    e.act, e.p0, e.p1 = act, p0, p1
    cdef const float* xp = _ptr(x)
    cdef const float* wp = _ptr(w)
    cdef float* op = <float*> cnp.PyArray_DATA(<cnp.ndarray> out)
    cdef float* sp = _ptr(scratch) if need else NULL
    if out.size == 0:
        return out
    with nogil:
        _run(nhwc, &g, xp, wp, op, sp, &e, tile, parallel_tiles, direct, num_threads)
    return out


def scratch_floats(bint nhwc, Py_ssize_t kg, Py_ssize_t mg, Py_ssize_t tile, bint parallel_tiles,
                   bint direct, int num_threads):
    """Scratch floats a call needs: a column tile per thread running whole jobs, or one shared by
    all threads, plus for NHWC with the GEMM split over channels its transposed result."""
    cols = 0 if direct else tile * kg
    if parallel_tiles and num_threads > 1:
        return cols * num_threads
    return cols + (mg * tile if nhwc and num_threads > 1 else 0)


def conv2d_nchw(x, w, bias, residual, out, scratch, kernel, strides, dilations, pads, int group=1,
                int act=0, double p0=0, double p1=0, slope=None, Py_ssize_t tile=0,
                bint parallel_tiles=False, bint direct=False, int num_threads=1, bint res_post=False):
    """NCHW convolution ``out = act(conv(x, w) + bias + residual)`` by im2col + SGEMM.

    Parameters
    ----------
    x : ndarray, float32, (N, C, H, W), C-contiguous
    w : ndarray, float32, (M, C/group * KH * KW) or (M, C/group, KH, KW)
    bias, residual : ndarray or None
        ``(M,)`` and the output's shape.
    out : ndarray, float32, (N, M, OH, OW)
        Written in place; must not overlap any input.
    scratch : ndarray, float32
        At least :func:`scratch_floats` floats (column tiles; None when that is 0).
    kernel, strides, dilations : pairs of int
    pads : 4 ints, (top, left, bottom, right)
    group : int
    act, p0, p1, slope
        Activation code and parameters (``kernels_pyx/_epilogue.pxd``); ``slope`` (M,) for PRelu.
    tile : int
        Output pixels per job (0: a whole image).
    parallel_tiles : bool
        Run jobs in parallel, one per thread; BLAS must then be single-threaded.
    direct : bool
        1x1 stride-1 unpadded kernels: multiply the input in place, no column buffer.
    num_threads : int
    res_post : bool
        Add ``residual`` after the activation: ``out = act(conv(x, w) + bias) + residual``.

    Returns
    -------
    ndarray
        ``out``.
    """
    return _conv2d(False, x, w, bias, residual, out, scratch, kernel, strides, dilations, pads, group,
                   act, p0, p1, slope, tile, parallel_tiles, direct, num_threads, res_post)


def conv2d_nhwc(x, w, bias, residual, out, scratch, kernel, strides, dilations, pads, int group=1,
                int act=0, double p0=0, double p1=0, slope=None, Py_ssize_t tile=0,
                bint parallel_tiles=False, bint direct=False, int num_threads=1, bint res_post=False):
    """NHWC convolution; as :func:`conv2d_nchw` but ``x`` is (N, H, W, C), ``out`` (N, OH, OW, M),
    ``tile`` counts pixels of the whole batch (0: all of them), and ``w`` is packed (group, K,
    M/group) with K = KH * KW * C/group ordered (ki, kj, channel) -- except when the GEMM is split
    over output channels (``num_threads > 1`` without ``parallel_tiles``): then (M, K)."""
    return _conv2d(True, x, w, bias, residual, out, scratch, kernel, strides, dilations, pads, group,
                   act, p0, p1, slope, tile, parallel_tiles, direct, num_threads, res_post)
