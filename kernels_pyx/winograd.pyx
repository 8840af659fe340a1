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
run on the shared pool (``wb_pool.h``): each thread starts on its own contiguous range of jobs
and takes from the others' when done.  Both call BLAS from several threads at once: it must be
single-threaded (the routine sees to that).  Calling the alpha^2 GEMMs one after another with
BLAS threads instead measured 2-4x slower.
"""
import numpy as np
cimport numpy as cnp
from _gemm cimport gemm_rm
from _winograd_stages cimport Geo, _inputs, _outputs
from conv_gemm cimport ACT_RUN_LAST
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()

# The per-block transforms (input into V, output from Mo with the epilogue) are in
# _winograd_stages.pxd, shared with winograd512.pyx.


cdef void _gemms(Geo* g, Py_ssize_t Tb, Py_ssize_t k0, Py_ssize_t k1, const float* V, float* Mo) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(k0, k1):
        if g.nhwc:      # Mo[k] (Tb, M) = V[k] (Tb, C) @ U[k] (C, M)
            gemm_rm(False, False, Tb, g.M, g.C, 1.0, V + k * g.C * Tb, g.C, g.U + k * g.M * g.C, g.M,
                    0.0, Mo + k * g.M * Tb, g.M)
        else:           # Mo[k] (M, Tb) = U[k] (M, C) @ V[k] (C, Tb)
            gemm_rm(False, False, g.M, Tb, g.C, 1.0, g.U + k * g.M * g.C, g.C, V + k * g.C * Tb, Tb,
                    0.0, Mo + k * g.M * Tb, Tb)


cdef struct _RunCtx:
    Geo* g
    float* V
    float* Mo
    float* tmp
    Py_ssize_t rows, vsz, msz, tmp_sz
    Py_ssize_t g0, R      # mode 0: the block of the current stage
    Py_ssize_t n, per     # mode 0: jobs of the current transform stage, jobs per chunk


cdef void _block_chunk(void* ctx, Py_ssize_t blk, int slot) noexcept nogil:
    """Mode 1: block ``blk``, all stages, in ``slot``'s own V, Mo and tmp."""
    cdef _RunCtx* c = <_RunCtx*> ctx
    cdef Geo* g = c.g
    cdef Py_ssize_t g0 = blk * c.rows, R = min(c.rows, g.G - g0)
    cdef float* V = c.V + slot * c.vsz
    cdef float* Mo = c.Mo + slot * c.msz
    cdef float* tmp = c.tmp + slot * c.tmp_sz
    _inputs(g, g0, R, 0, R * g.tw if g.nhwc else g.C, V, tmp)
    _gemms(g, R * g.tw, 0, g.A2, V, Mo)
    _outputs(g, g0, R, 0, R * g.tw if g.nhwc else g.M, Mo, tmp)


cdef void _input_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _RunCtx* c = <_RunCtx*> ctx
    _inputs(c.g, c.g0, c.R, i * c.per, min((i + 1) * c.per, c.n), c.V, c.tmp + slot * c.tmp_sz)


cdef void _gemm_chunk(void* ctx, Py_ssize_t k, int slot) noexcept nogil:
    cdef _RunCtx* c = <_RunCtx*> ctx
    _gemms(c.g, c.R * c.g.tw, k, k + 1, c.V, c.Mo)


cdef void _output_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _RunCtx* c = <_RunCtx*> ctx
    _outputs(c.g, c.g0, c.R, i * c.per, min((i + 1) * c.per, c.n), c.Mo, c.tmp + slot * c.tmp_sz)


cdef void _run(Geo* g, Py_ssize_t rows, int mode, float* V, float* Mo, float* tmp, Py_ssize_t tmp_sz,
               int nt) noexcept nogil:
    cdef Py_ssize_t nblk = (g.G + rows - 1) // rows, blk
    cdef _RunCtx c
    c.g, c.V, c.Mo, c.tmp, c.rows, c.tmp_sz = g, V, Mo, tmp, rows, tmp_sz
    c.vsz, c.msz = g.A2 * g.C * rows * g.tw, g.A2 * g.M * rows * g.tw
    if mode == 1:
        wb_pool_run(_block_chunk, &c, nblk, nt)
        return
    # Each stage of each block is one pool job (the workers spin between jobs, so the next stage
    # does not wait for them to wake); the next starts once every chunk of the last is done.
    for blk in range(nblk):
        c.g0 = blk * rows
        c.R = min(rows, g.G - c.g0)
        c.n = c.R * g.tw if g.nhwc else g.C
        c.per = wb_jobs_per_chunk(c.n, g.A2 * (g.C if g.nhwc else c.R * g.tw), nt)
        wb_pool_run(_input_chunk, &c, (c.n + c.per - 1) // c.per, nt)
        wb_pool_run(_gemm_chunk, &c, g.A2, nt)
        c.n = c.R * g.tw if g.nhwc else g.M
        c.per = wb_jobs_per_chunk(c.n, g.A2 * (g.M if g.nhwc else c.R * g.tw), nt)
        wb_pool_run(_output_chunk, &c, (c.n + c.per - 1) // c.per, nt)


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
         slope=None, int rows=1, int mode=0, int num_threads=1, bint res_post=False):
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
        Threads (of the shared pool).
    """
    return _conv(False, x, U, bias, out, V, Mo, tmp, m, pads, residual, act, p0, p1, slope, rows, mode,
                 num_threads, res_post)


def nhwc(x, U, bias, out, V, Mo, tmp, int m, pads, residual=None, int act=0, float p0=0, float p1=0,
         slope=None, int rows=1, int mode=0, int num_threads=1, bint res_post=False):
    """As :func:`nchw` for channels-last tensors: ``x`` (N, H, W, C), ``U`` ((m+2)**2, C, M),
    ``out`` and ``residual`` (N, OH, OW, M); scratch sizes from ``scratch_floats(..., nhwc=True)``."""
    return _conv(True, x, U, bias, out, V, Mo, tmp, m, pads, residual, act, p0, p1, slope, rows, mode,
                 num_threads, res_post)


def _conv(bint nhwc, x, U, bias, out, V, Mo, tmp, int m, pads, residual, int act, float p0, float p1,
          slope, int rows, int mode, int num_threads, bint res_post=False):
    _f32(x, "input")
    if x.ndim != 4:
        raise ValueError(f"input must be 4-D ({'N, H, W, C' if nhwc else 'N, C, H, W'}), got shape {x.shape}")
    if m not in (2, 4) or mode not in (0, 1) or num_threads < 1 or not 0 <= act <= ACT_RUN_LAST:
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
    g.res_post = res_post
    g.x, g.U, g.bias, g.res, g.slope, g.y = _p(x), _p(U), _p(bias), _p(residual), _p(slope), _p(out)
    g.N, g.C, g.H, g.W, g.M, g.OH, g.OW, g.pt, g.pl = N, C, H, W, M, OH, OW, pt, pl
    g.ldo = M
    g.th, g.tw, g.m, g.A2, g.nhwc = -(-OH // m), -(-OW // m), m, A2, nhwc
    g.G = N * g.th
    g.act, g.p0, g.p1 = act, p0, p1
    rows = max(1, min(rows, g.G))
    _run(&g, rows, mode, _p(V), _p(Mo), _p(tmp), nt // num_threads, num_threads)
    return out
