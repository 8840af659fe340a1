# isa-variants: avx512bf16
# cython: language_level=3
"""Winograd F(2x2,3x3) and F(4x4,3x3) on NHWC images with bfloat16 transform-domain products
(``wb_wino_bf16.h``): float32 transforms, V and U rounded to bfloat16, VDPBF16PS products
summed in float32, the epilogue on float32 before the one store.

Parallel modes, on the shared pool (``wb_pool.h``):
- 0: the layer in blocks of ``tiles`` tiles, each block's three stages spread over the threads
  (input: chunks of tiles; products: (point, 96 tiles); output: chunks of tiles), sharing one V
  and Mo;
- 1: blocks of ``tiles`` tiles, all three stages of a block on one thread in its own scratch,
  each thread starting on its own contiguous range (the pixels its core handles in the layers
  around).

Only the ``_avx512bf16`` build computes (``available``); shapes, dtypes and scratch are checked
here, before any ``nogil`` code.
"""
import threading

import numpy as np
from workbench._kernels.buffers import aligned_empty, aligned_zeros
cimport numpy as cnp
from libc.stdint cimport uint16_t

from _bf16_args cimport _row_stride
from wb_gemm_bf16 cimport WBB_NR, fill_epilogue, wbb_epi, wbb_pack, wbb_packed_words
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run


cnp.import_array()
wb_pool_import()


cdef extern from "wb_wino_bf16.h" nogil:
    ctypedef struct wbw_geo:
        const void* x
        const uint16_t* U
        Py_ssize_t us
        void* y
        wbb_epi ep
        Py_ssize_t n, h, w, c, mo, oh, ow, pt, pl, th, tw, tiles, ldo
        int m, a2, x_f32, y_f32
    int wbw_native()
    int wbw_inputs(const wbw_geo* g, Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t tb, Py_ssize_t nt, uint16_t* V)
    void wbw_product(const wbw_geo* g, int k, Py_ssize_t nt, const uint16_t* V, float* Mo, Py_ssize_t i0,
                     Py_ssize_t i1, Py_ssize_t p0, Py_ssize_t p1)
    void wbw_outputs(const wbw_geo* g, Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t tb, Py_ssize_t nt, const float* Mo)


#: True when this build computes (only the ``_avx512bf16`` variant does).
available = bool(wbw_native())

# the checks of the GEMM build of the same instruction set (which activations its epilogue has)
if available:
    from workbench._kernels.gemm_bf16_avx512bf16 import _array, _input, _output, check_epilogue
else:
    from workbench._kernels.gemm_bf16 import _array, _input, _output, check_epilogue

cdef enum:
    ROW_TILE = 96   # mode 0 product job: tiles (GEMM rows), 8 strips of the 12-row micro-kernel


cdef Py_ssize_t _us(Py_ssize_t c, Py_ssize_t mo) noexcept nogil:
    """16-bit words of one point's packed weights, whole cache lines."""
    return (wbb_packed_words(c, mo) + 31) // 32 * 32


def packed_words(int m, Py_ssize_t c, Py_ssize_t mo):
    """16-bit words of :func:`pack`'s result for ``c`` input and ``mo`` output channels."""
    return (m + 2) ** 2 * _us(c, mo)


def pack(U):
    """Transformed weights ``U`` float32 ((m+2)**2, C, M) (``conv_winograd.transform_weights``,
    C and M swapped) rounded to bfloat16 and packed per point for the products: 1-D uint16."""
    U = _array(U, "transformed weights", np.float32)
    if U.ndim != 3 or U.shape[0] not in (16, 36) or min(U.shape) < 1:
        raise ValueError(f"winograd_bf16: transformed weights must be ((m+2)**2, C, M) with m 2 or 4, got {U.shape}")
    a2, c, mo = U.shape
    cdef Py_ssize_t us = _us(c, mo), k
    out = aligned_zeros(a2 * us, np.uint16)
    for k in range(a2):
        w = np.ascontiguousarray(U[k].T)   # (M, C): wbb_pack takes the n columns' rows of depth k
        wbb_pack(c, mo, <const float*> cnp.PyArray_DATA(w), <uint16_t*> cnp.PyArray_DATA(out) + k * us,
                 0, (mo + WBB_NR - 1) // WBB_NR)
    return out


def plan(int m, Py_ssize_t n, Py_ssize_t c, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t mo, int num_threads):
    """(tiles per block, mode).  Measured on VGG-16's and ResNet-50's 3x3 layers (2 threads): mode 1
    in blocks of one or two 12-row strips of the micro-kernel (12 tiles for narrow layers, C + M
    <= 256, 24 for wider ones), V and Mo of a block staying in L2, when every thread gets 8 blocks
    or more; otherwise (ResNet-50's 14x14 and 7x7) the whole layer in mode 0."""
    # (a + m - 1) // m: this module divides C integers the C way, so -(-a // m) would truncate
    cdef Py_ssize_t tiles = n * ((oh + m - 1) // m) * ((ow + m - 1) // m), bt = 12 if c + mo <= 256 else 24
    if num_threads == 1 or tiles >= 8 * num_threads * bt:
        return bt, 1
    return tiles, 0


def scratch_sizes(int m, Py_ssize_t c, Py_ssize_t mo, Py_ssize_t tiles, int mode, int num_threads):
    """(uint16 words of V, floats of Mo) that a call with blocks of ``tiles`` tiles needs."""
    cdef Py_ssize_t slots = num_threads if mode == 1 else 1, a2 = (m + 2) ** 2
    return slots * a2 * tiles * c, slots * a2 * tiles * mo


cdef struct _Ctx:
    wbw_geo g
    uint16_t* V
    float* Mo
    Py_ssize_t bt, vsz, msz    # tiles per block; V words and Mo floats of one slot
    Py_ssize_t t0, nt, per     # mode 0: the current block's first tile, its tiles, tiles per chunk
    Py_ssize_t row_jobs
    int bad                    # an input held NaN or infinity


cdef void _block(void* ctx, Py_ssize_t blk, int slot) noexcept nogil:
    cdef _Ctx* c = <_Ctx*> ctx
    cdef Py_ssize_t t0 = blk * c.bt, t1 = min(t0 + c.bt, c.g.tiles), nt = t1 - t0
    cdef uint16_t* V = c.V + slot * c.vsz
    cdef float* Mo = c.Mo + slot * c.msz
    cdef int k
    cdef Py_ssize_t panels = (c.g.mo + WBB_NR - 1) // WBB_NR
    if wbw_inputs(&c.g, t0, t1, t0, nt, V):
        c.bad = 1
    for k in range(c.g.a2):
        wbw_product(&c.g, k, nt, V, Mo, 0, nt, 0, panels)
    wbw_outputs(&c.g, t0, t1, t0, nt, Mo)


cdef void _in_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _Ctx* c = <_Ctx*> ctx
    cdef Py_ssize_t a = c.t0 + i * c.per, b = min(a + c.per, c.t0 + c.nt)
    if wbw_inputs(&c.g, a, b, c.t0, c.nt, c.V):
        c.bad = 1


cdef void _product_job(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    cdef _Ctx* c = <_Ctx*> ctx
    cdef Py_ssize_t i0 = job % c.row_jobs * ROW_TILE
    wbw_product(&c.g, <int> (job // c.row_jobs), c.nt, c.V, c.Mo, i0, min(i0 + ROW_TILE, c.nt), 0,
                (c.g.mo + WBB_NR - 1) // WBB_NR)


cdef void _out_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _Ctx* c = <_Ctx*> ctx
    cdef Py_ssize_t a = c.t0 + i * c.per, b = min(a + c.per, c.t0 + c.nt)
    wbw_outputs(&c.g, a, b, c.t0, c.nt, c.Mo)


cdef void _run(_Ctx* c, int mode, int nt) noexcept nogil:
    cdef Py_ssize_t t0
    if mode == 1:
        wb_pool_run(_block, c, (c.g.tiles + c.bt - 1) // c.bt, nt)
        return
    t0 = 0
    while t0 < c.g.tiles:
        c.t0, c.nt = t0, min(c.bt, c.g.tiles - t0)
        c.per = wb_jobs_per_chunk(c.nt, c.g.a2 * c.g.c, nt)
        wb_pool_run(_in_chunk, c, (c.nt + c.per - 1) // c.per, nt)
        c.row_jobs = (c.nt + ROW_TILE - 1) // ROW_TILE
        wb_pool_run(_product_job, c, c.g.a2 * c.row_jobs, nt)
        c.per = wb_jobs_per_chunk(c.nt, c.g.a2 * c.g.mo, nt)
        wb_pool_run(_out_chunk, c, (c.nt + c.per - 1) // c.per, nt)
        t0 += c.nt


_local = threading.local()


def _scratch(Py_ssize_t words, Py_ssize_t floats):
    """(uint16, float32) work buffers of at least these sizes: one pair per Python thread, grown
    on demand and reused, so steady-state inference allocates nothing.  Not the routine's
    planned workspace: with V and Mo in one region, ResNet-50's 28x28 layers ran 12-65% slower
    (bimodal, by placement), against none of that with the two apart (not understood yet)."""
    v, mo = getattr(_local, "v", None), getattr(_local, "mo", None)
    if v is None or v.size < words:
        v = _local.v = aligned_empty(max(words, 1), np.uint16)
    if mo is None or mo.size < floats:
        mo = _local.mo = aligned_empty(max(floats, 1), np.float32)
    return v, mo


cdef inline void* _ptr(a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray> a)


def conv(x, PU, out, int m, pads, bias=None, residual=None, int act=0, double p0=0, double p1=0, post=None,
         bint res_post=False, Py_ssize_t tiles=0, int mode=0, int num_threads=1):
    """A 3x3 stride-1 convolution of NHWC ``x`` (N, H, W, C), bfloat16 or float32, into ``out``
    (N, OH, OW, M), bfloat16 or float32; ``PU`` :func:`pack` of the F(m x m, 3x3) weights;
    ``pads`` (top, left, bottom, right); ``bias``, ``post = (scale, shift)`` float32 (M,) or
    None; ``residual`` of ``out``'s shape, bfloat16 or float32; activation codes as
    ``routines/epilogue.py``.  ``tiles``, ``mode`` as :func:`plan` returns (0: plan's choice).

    Returns whether the input held a NaN or an infinity, in which case ``out`` is not the
    convolution (the transforms mix a patch) and the caller computes it another way.
    """
    if not available:
        raise RuntimeError("winograd_bf16: this build has no AVX512-BF16 kernels (use winograd_bf16_avx512bf16)")
    x, out = _input(x), _output(out)
    PU = _array(PU, "packed weights", np.uint16)
    if m not in (2, 4) or mode not in (0, 1) or num_threads < 1:
        raise ValueError(f"winograd_bf16: bad m={m}, mode={mode} or num_threads={num_threads}")
    if x.ndim != 4 or out.ndim != 4:
        raise ValueError(f"winograd_bf16: input {x.shape} and output {out.shape} must be 4-D (N, H, W, C)")
    n, h, w, c = x.shape
    pt, pl, pb, pr = (int(p) for p in pads)
    if min(pt, pl, pb, pr) < 0:
        raise ValueError(f"winograd_bf16: negative pads {pads}")
    oh, ow, mo = h + pt + pb - 2, w + pl + pr - 2, out.shape[3]
    if out.shape != (n, oh, ow, mo) or min(n, oh, ow, mo, c) < 1:
        raise ValueError(f"winograd_bf16: input {x.shape} with pads {pads} gives (N, OH, OW) = {(n, oh, ow)}; "
                         f"output is {out.shape}")
    if PU.ndim != 1 or PU.size != packed_words(m, c, mo):
        raise ValueError(f"winograd_bf16: packed weights hold {PU.size} words; F({m}x{m},3x3) with C={c}, M={mo} "
                         f"needs {packed_words(m, c, mo)}")
    residual = check_epilogue("winograd_bf16", out, bias, residual, act, post)
    for what, v in (("input", x), ("residual", residual)):
        if v is not None and np.may_share_memory(out, v):
            raise ValueError(f"winograd_bf16: the output overlaps the {what}")
    if tiles < 1:
        tiles, mode = plan(m, n, c, oh, ow, mo, num_threads)
    cdef _Ctx ctx
    cdef wbw_geo* g = &ctx.g
    g.x, g.U, g.us, g.y = _ptr(x), <const uint16_t*> _ptr(PU), _us(c, mo), _ptr(out)
    g.n, g.h, g.w, g.c, g.mo, g.oh, g.ow, g.pt, g.pl = n, h, w, c, mo, oh, ow, pt, pl
    g.ldo = _row_stride(out, "winograd_bf16")   # a channel slice of a larger buffer: an NHWC Concat part
    g.th, g.tw, g.m, g.a2 = -(-oh // m), -(-ow // m), m, (m + 2) ** 2
    g.tiles = n * g.th * g.tw
    g.x_f32, g.y_f32 = x.dtype == np.float32, out.dtype == np.float32
    fill_epilogue(&g.ep, bias, residual, mo, act, p0, p1, post, res_post)
    ctx.bt = max(1, min(tiles, g.tiles))
    words, floats = scratch_sizes(m, c, mo, ctx.bt, mode, num_threads)
    V, Mo = _scratch(words, floats)
    ctx.V, ctx.Mo, ctx.bad = <uint16_t*> _ptr(V), <float*> _ptr(Mo), 0
    ctx.vsz, ctx.msz = g.a2 * ctx.bt * c, g.a2 * ctx.bt * mo
    with nogil:
        _run(&ctx, mode, num_threads)
    return bool(ctx.bad)
