# isa-variants: avx512
# cython: language_level=3
"""Winograd F(2x2,3x3) and F(4x4,3x3) convolution on our own AVX-512 SGEMM (``sgemm_avx512.h``).

The input and output transforms are those of ``winograd.pyx`` (``_winograd_stages.pxd``, here
compiled for AVX-512); the (m+2)^2 transform-domain products run on ``wb512_micro`` instead of
OpenBLAS, with the transformed weights packed once, ahead (:func:`pack_u`):

- NHWC: Mo[k] (Tb x M) = V[k] (Tb x C) @ U[k] (C x M), U[k] packed as B panels; jobs are
  (point k, block of up to 144 tile rows), each packing its rows of V[k] as A;
- NCHW: Mo[k] (M x Tb) = U[k] (M x C) @ V[k] (C x Tb), U[k] packed as A strips; jobs are
  (point k, block of up to 256 tile columns), each packing its columns of V[k] as B panels.

Every thread packs into its own part of ``work``.  Parallel modes as in ``winograd.pyx``, on the
shared pool (``wb_pool.h``): 0 = the stages of each block of tile rows spread over the threads,
1 = whole blocks per thread, each thread starting on one contiguous range of tile rows (the
layers around it split pixels the same way) and taking others' blocks only once its own are done.
The baseline build compiles a scalar micro-kernel and says so with ``available = False``.
"""
import numpy as np
from workbench._kernels.buffers import aligned_zeros
cimport numpy as cnp
from _winograd_stages cimport Geo, _inputs, _outputs
from conv_gemm cimport ACT_RUN_LAST
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

from workbench._kernels.conv_gemm import pixel_rows
from workbench._kernels.winograd import _f32 as _base_f32, scratch_floats as _base_scratch

cnp.import_array()
wb_pool_import()


cdef extern from "sgemm_avx512.h" nogil:
    int WB512_NATIVE
    int WB512_NR
    int WB512_MR
    int WB512_KC
    int WB512_MC
    Py_ssize_t wb512_round_up(Py_ssize_t v, Py_ssize_t to)
    Py_ssize_t wb512_packed_b_floats(Py_ssize_t k, Py_ssize_t n)
    Py_ssize_t wb512_abuf_floats()
    void wb512_pack_b(Py_ssize_t k, Py_ssize_t n, const float* b, Py_ssize_t ldb, int trans_b, float* dst,
                      Py_ssize_t p0, Py_ssize_t p1)
    void wb512_pack_a(Py_ssize_t mcb, Py_ssize_t kcb, const float* a, Py_ssize_t lda, float* dst)
    void wb512_micro(Py_ssize_t kcb, const float* pa, const float* pb, float* c, Py_ssize_t ldc, int mr, int nr,
                     int load)
    void wb512_gemm_direct(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* a, Py_ssize_t lda,
                           const float* pb, float* c, Py_ssize_t ldc, int accumulate, float* abuf,
                           Py_ssize_t j0, Py_ssize_t j1, const void* ep)

#: True when this build runs the AVX-512 micro-kernel (only the ``_avx512`` variant does).
available = bool(WB512_NATIVE)

cdef enum:
    TILE_ROWS = 144     # NHWC job: tiles (GEMM rows), the A block of the micro-kernel loop
    TILE_COLS = 256     # NCHW job: tiles (GEMM columns); C x 256 packed fits in L2 up to C = 512


cdef inline Py_ssize_t _packed_a_floats(Py_ssize_t m, Py_ssize_t k) noexcept nogil:
    """Floats of A (m x k) packed by :c:func:`_pack_a_all`: strips of MR rows, zero padded."""
    return wb512_round_up(m, WB512_MR) * k


cdef void _pack_a_all(Py_ssize_t m, Py_ssize_t k, const float* a, float* dst) noexcept nogil:
    """A (m x k, row-major) packed for :c:func:`_gemm_pa`: block (ic, kb) at ic * k + kb * mcb'."""
    cdef Py_ssize_t ic, kb, mcb, kcb, bi, bk
    for bi in range((m + WB512_MC - 1) // WB512_MC):
        ic = bi * WB512_MC
        mcb = min(<Py_ssize_t> WB512_MC, m - ic)
        for bk in range((k + WB512_KC - 1) // WB512_KC):
            kb = bk * WB512_KC
            kcb = min(<Py_ssize_t> WB512_KC, k - kb)
            wb512_pack_a(mcb, kcb, a + ic * k + kb, k, dst + ic * k + kb * wb512_round_up(mcb, WB512_MR))


cdef void _gemm_pa(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* pa, const float* pb, float* c,
                   Py_ssize_t ldc) noexcept nogil:
    """C (m x n) = A @ B, A packed by :c:func:`_pack_a_all`, B by ``wb512_pack_b`` (k x n); k >= 1."""
    cdef Py_ssize_t npad = wb512_round_up(n, WB512_NR), ic, kb, jp, ir, mcb, kcb, nr, bi, bk, bs
    cdef const float* blk
    cdef const float* panel
    for bi in range((m + WB512_MC - 1) // WB512_MC):
        ic = bi * WB512_MC
        mcb = min(<Py_ssize_t> WB512_MC, m - ic)
        for bk in range((k + WB512_KC - 1) // WB512_KC):
            kb = bk * WB512_KC
            kcb = min(<Py_ssize_t> WB512_KC, k - kb)
            blk = pa + ic * k + kb * wb512_round_up(mcb, WB512_MR)
            for jp in range(npad // WB512_NR):
                panel = pb + kb * npad + jp * kcb * WB512_NR
                nr = min(<Py_ssize_t> WB512_NR, n - jp * WB512_NR)
                for bs in range((mcb + WB512_MR - 1) // WB512_MR):
                    ir = bs * WB512_MR
                    wb512_micro(kcb, blk + ir * kcb, panel, c + (ic + ir) * ldc + jp * WB512_NR, ldc,
                                <int> min(<Py_ssize_t> WB512_MR, mcb - ir), <int> nr, kb > 0)


cdef inline Py_ssize_t _u_stride(bint nhwc, Py_ssize_t c, Py_ssize_t m) noexcept nogil:
    """Floats of one point's packed U (whole cache lines)."""
    cdef Py_ssize_t s = wb512_packed_b_floats(c, m) if nhwc else _packed_a_floats(m, c)
    return wb512_round_up(s, 16)


cdef inline Py_ssize_t _jobs(bint nhwc, Py_ssize_t tb) noexcept nogil:
    return (tb + TILE_ROWS - 1) // TILE_ROWS if nhwc else (tb + TILE_COLS - 1) // TILE_COLS


cdef void _gemm_job(Geo* g, Py_ssize_t us, Py_ssize_t tb, Py_ssize_t job, const float* V, float* Mo,
                    float* work) noexcept nogil:
    """Job ``job`` of a block of ``tb`` tiles: point k, row (NHWC) or column (NCHW) block."""
    cdef Py_ssize_t nj = _jobs(g.nhwc, tb), k = job // nj, i0, i1
    if g.nhwc:
        i0 = (job % nj) * TILE_ROWS
        i1 = min(i0 + TILE_ROWS, tb)
        wb512_gemm_direct(i1 - i0, g.M, g.C, V + (k * tb + i0) * g.C, g.C, g.U + k * us,
                          Mo + (k * tb + i0) * g.M, g.M, 0, work, 0, g.M, NULL)
        return
    i0 = (job % nj) * TILE_COLS
    i1 = min(i0 + TILE_COLS, tb)
    wb512_pack_b(g.C, i1 - i0, V + k * g.C * tb + i0, tb, 0, work, 0, (i1 - i0 + WB512_NR - 1) // WB512_NR)
    _gemm_pa(g.M, i1 - i0, g.C, g.U + k * us, work, Mo + k * g.M * tb + i0, tb)


cdef struct _RunCtx:
    Geo* g
    float* V
    float* Mo
    float* tmp
    float* work
    Py_ssize_t us, rows, vsz, msz, tmp_sz, work_sz
    Py_ssize_t g0, R, tb  # mode 0: the block of the current stage
    Py_ssize_t n, per     # mode 0: jobs of the current transform stage, jobs per chunk


cdef void _block_chunk(void* ctx, Py_ssize_t blk, int slot) noexcept nogil:
    """Mode 1: block ``blk`` (``rows`` tile rows), all stages, in ``slot``'s own scratch."""
    cdef _RunCtx* c = <_RunCtx*> ctx
    cdef Geo* g = c.g
    cdef Py_ssize_t g0 = blk * c.rows, R = min(c.rows, g.G - g0), tb = R * g.tw, job
    cdef float* V = c.V + slot * c.vsz
    cdef float* Mo = c.Mo + slot * c.msz
    cdef float* tmp = c.tmp + slot * c.tmp_sz
    _inputs(g, g0, R, 0, tb if g.nhwc else g.C, V, tmp)
    for job in range(g.A2 * _jobs(g.nhwc, tb)):
        _gemm_job(g, c.us, tb, job, V, Mo, c.work + slot * c.work_sz)
    _outputs(g, g0, R, 0, tb if g.nhwc else g.M, Mo, tmp)


cdef void _input_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _RunCtx* c = <_RunCtx*> ctx
    _inputs(c.g, c.g0, c.R, i * c.per, min((i + 1) * c.per, c.n), c.V, c.tmp + slot * c.tmp_sz)


cdef void _gemm_chunk(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    cdef _RunCtx* c = <_RunCtx*> ctx
    _gemm_job(c.g, c.us, c.tb, job, c.V, c.Mo, c.work + slot * c.work_sz)


cdef void _output_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _RunCtx* c = <_RunCtx*> ctx
    _outputs(c.g, c.g0, c.R, i * c.per, min((i + 1) * c.per, c.n), c.Mo, c.tmp + slot * c.tmp_sz)


cdef void _run(Geo* g, Py_ssize_t us, Py_ssize_t rows, int mode, float* V, float* Mo, float* tmp,
               Py_ssize_t tmp_sz, float* work, Py_ssize_t work_sz, int nt) noexcept nogil:
    cdef Py_ssize_t nblk, blk
    cdef _RunCtx c
    c.g, c.V, c.Mo, c.tmp, c.work, c.us = g, V, Mo, tmp, work, us
    c.tmp_sz, c.work_sz = tmp_sz, work_sz
    c.vsz, c.msz = g.A2 * g.C * rows * g.tw, g.A2 * g.M * rows * g.tw
    if mode == 1:
        # Blocks of up to ``rows`` tile rows, no more than a thread's share so that every thread
        # gets one: each thread starts on a contiguous range of them, the pixels its core handles
        # in the layers before and after.
        c.rows = min(rows, (g.G + nt - 1) // nt)
        wb_pool_run(_block_chunk, &c, (g.G + c.rows - 1) // c.rows, nt)
        return
    # Each stage of each block is one pool job (the workers spin between jobs, so the next stage
    # does not wait for them to wake); the next starts once every chunk of the last is done.
    c.rows = rows
    nblk = (g.G + rows - 1) // rows
    for blk in range(nblk):
        c.g0 = blk * rows
        c.R = min(rows, g.G - c.g0)
        c.tb = c.R * g.tw
        c.n = c.tb if g.nhwc else g.C
        c.per = wb_jobs_per_chunk(c.n, g.A2 * (g.C if g.nhwc else c.tb), nt)
        wb_pool_run(_input_chunk, &c, (c.n + c.per - 1) // c.per, nt)
        wb_pool_run(_gemm_chunk, &c, g.A2 * _jobs(g.nhwc, c.tb), nt)
        c.n = c.tb if g.nhwc else g.M
        c.per = wb_jobs_per_chunk(c.n, g.A2 * (g.M if g.nhwc else c.tb), nt)
        wb_pool_run(_output_chunk, &c, (c.n + c.per - 1) // c.per, nt)


# -- Python-visible twins -------------------------------------------------------------------------

cdef float* _p(a):
    return NULL if a is None else <float*> cnp.PyArray_DATA(<cnp.ndarray> a)


def _f32(a, what, shape=None, writeable=False):
    return _base_f32(a, f"winograd512: {what}", shape, writeable)


def packed_u_floats(int m, Py_ssize_t C, Py_ssize_t M, bint nhwc):
    """Floats of :func:`pack_u`'s result for ``C`` input and ``M`` output channels."""
    return (m + 2) ** 2 * _u_stride(nhwc, C, M)


def pack_u(U, bint nhwc):
    """Transformed weights packed for :func:`nchw` / :func:`nhwc`, once per layer: ``U`` is
    ((m+2)**2, M, C) for NCHW (packed as A), ((m+2)**2, C, M) for NHWC (packed as B panels)."""
    _f32(U, "U")
    if U.ndim != 3 or U.shape[0] not in (16, 36) or min(U.shape) < 1:
        raise ValueError(f"winograd512: U must be ((m+2)**2, ., .) with m 2 or 4, got {U.shape}")
    A2 = U.shape[0]
    C, M = (U.shape[1], U.shape[2]) if nhwc else (U.shape[2], U.shape[1])
    cdef Py_ssize_t us = _u_stride(nhwc, C, M), k, cc = C, mm = M, na = A2
    out = aligned_zeros(A2 * us, np.float32)
    cdef const float* src = _p(U)
    cdef float* dst = _p(out)
    with nogil:
        for k in range(na):
            if nhwc:
                wb512_pack_b(cc, mm, src + k * cc * mm, mm, 0, dst + k * us, 0, (mm + WB512_NR - 1) // WB512_NR)
            else:
                _pack_a_all(mm, cc, src + k * cc * mm, dst + k * us)
    return out


def scratch_floats(int m, N, C, H, W, M, pads, int rows, int mode, int num_threads, bint nhwc=False):
    """Floats of the (V, Mo, tmp, work) scratch that :func:`nchw` / :func:`nhwc` need."""
    nv, nm, nt = _base_scratch(m, N, C, H, W, M, pads, rows, mode, num_threads, nhwc)
    per = wb512_abuf_floats() if nhwc else wb512_packed_b_floats(C, TILE_COLS)
    return nv, nm, nt, num_threads * wb512_round_up(per, 16)


def nchw(x, PU, bias, out, V, Mo, tmp, work, int m, pads, residual=None, int act=0, float p0=0, float p1=0,
         slope=None, int rows=1, int mode=0, int num_threads=1, bint res_post=False):
    """Winograd F(m x m, 3x3) convolution (stride 1, dilation 1, group 1) into ``out``.

    As ``winograd.nchw``, but ``PU`` is :func:`pack_u` of U ((m+2)**2, M, C), and one more
    scratch, ``work``, of the size :func:`scratch_floats` returns.
    """
    return _conv(False, x, PU, bias, out, V, Mo, tmp, work, m, pads, residual, act, p0, p1, slope, rows,
                 mode, num_threads, res_post)


def nhwc(x, PU, bias, out, V, Mo, tmp, work, int m, pads, residual=None, int act=0, float p0=0, float p1=0,
         slope=None, int rows=1, int mode=0, int num_threads=1, bint res_post=False):
    """As :func:`nchw` for channels-last tensors: ``x`` (N, H, W, C), ``PU`` :func:`pack_u` of U
    ((m+2)**2, C, M), ``out`` and ``residual`` (N, OH, OW, M)."""
    return _conv(True, x, PU, bias, out, V, Mo, tmp, work, m, pads, residual, act, p0, p1, slope, rows,
                 mode, num_threads, res_post)


def _conv(bint nhwc, x, PU, bias, out, V, Mo, tmp, work, int m, pads, residual, int act, float p0,
          float p1, slope, int rows, int mode, int num_threads, bint res_post=False):
    _f32(x, "input")
    if x.ndim != 4:
        raise ValueError(f"winograd512: input must be 4-D ({'N, H, W, C' if nhwc else 'N, C, H, W'}), "
                         f"got shape {x.shape}")
    if m not in (2, 4) or mode not in (0, 1) or num_threads < 1 or not 0 <= act <= ACT_RUN_LAST:
        raise ValueError(f"winograd512: bad m={m}, mode={mode}, num_threads={num_threads} or act={act}")
    N, H, W, C = x.shape if nhwc else (x.shape[0], x.shape[2], x.shape[3], x.shape[1])
    _f32(bias, "bias")
    if bias.ndim != 1 or bias.size < 1 or C < 1:
        raise ValueError(f"winograd512: bias must be 1-D (M,) with M >= 1 and C >= 1, got bias {bias.shape}, "
                         f"C={C}")
    M = bias.shape[0]
    pt, pl, pb, pr = (int(p) for p in pads)
    A2 = (m + 2) ** 2
    _f32(PU, "packed U")
    if PU.ndim != 1 or PU.size != packed_u_floats(m, C, M, nhwc):
        raise ValueError(f"winograd512: packed U has shape {PU.shape}, expected pack_u of U "
                         f"({A2}, {'C, M' if nhwc else 'M, C'}) with C={C}, M={M}: "
                         f"({packed_u_floats(m, C, M, nhwc)},)")
    sizes = scratch_floats(m, N, C, H, W, M, (pt, pl, pb, pr), rows, mode, num_threads, nhwc)
    OH, OW = H + pt + pb - 2, W + pl + pr - 2
    ldo = M
    if nhwc:   # the output may be a channel slice of a wider buffer (a Concat's part)
        out, ldo = pixel_rows(out, "winograd512: output", writeable=True)
        if out.shape != (N, OH, OW, M):
            raise ValueError(f"winograd512: output has shape {out.shape}, expected {(N, OH, OW, M)}")
    else:
        _f32(out, "output", (N, M, OH, OW), writeable=True)
    for a, what, need in zip((V, Mo, tmp, work), ("V", "Mo", "tmp", "work"), sizes):
        _f32(a, what, writeable=True)
        if a.size < need:
            raise ValueError(f"winograd512: scratch {what} has {a.size} floats, needs {need}")
    if residual is not None:
        _f32(residual, "residual", out.shape)
    if act == 7 and slope is None:
        raise ValueError("winograd512: PRelu (code 7) needs a per-channel slope")
    if slope is not None:
        _f32(slope, "slope", (M,))
    cdef Geo g
    g.res_post = res_post
    g.x, g.U, g.bias, g.res, g.slope, g.y = _p(x), _p(PU), _p(bias), _p(residual), _p(slope), _p(out)
    g.N, g.C, g.H, g.W, g.M, g.OH, g.OW, g.pt, g.pl = N, C, H, W, M, OH, OW, pt, pl
    g.ldo = ldo
    g.th, g.tw, g.m, g.A2, g.nhwc = -(-OH // m), -(-OW // m), m, A2, nhwc
    g.G = N * g.th
    g.act, g.p0, g.p1 = act, p0, p1
    rows = max(1, min(rows, g.G))
    _run(&g, _u_stride(nhwc, C, M), rows, mode, _p(V), _p(Mo), _p(tmp), sizes[2] // num_threads, _p(work),
         sizes[3] // num_threads, num_threads)
    return out
