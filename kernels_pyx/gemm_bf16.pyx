# isa-variants: avx512bf16, amx
# cython: language_level=3
"""bfloat16 GEMM with float32 accumulation (``wb_gemm_bf16.h``): the convolutions and matrix
products of the ``cpu:bfloat16:*`` routines (the depthwise ones are ``depthwise_bf16.pyx``'s).

Only the ``_avx512bf16`` build runs the VDPBF16PS micro-kernel (``available``); the baseline
build runs scalar loops on the same packed weights, with the same rounding, so the packing and
the epilogue are tested on CPUs without AVX512-BF16 too.  The ``_amx`` build runs :func:`gemm`
and :func:`conv_im2col` on AMX tiles (``wb_gemm_amx.h``, ``amx``), with its own packing (the
depth padded to whole tiles: :func:`packed_words` differs); its :func:`conv_implicit` keeps the
VDPBF16PS kernel on that packing.

Work is split over the shared thread pool (``wb_pool.h``) in (row tile, panel group) jobs, row
tiles outermost, so each thread starts on its own contiguous range of pixels.  Shapes, dtypes and
overlaps are checked here, before any ``nogil`` code.
"""

import ml_dtypes
import numpy as np
from workbench._kernels.buffers import aligned_empty
cimport numpy as cnp
from libc.stdint cimport uint16_t

from wb_gemm_bf16 cimport (
    WBB_AMX, WBB_NATIVE, WBB_NR, WBB_ROWS, wbb_ready, fill_epilogue, wb512_epi, wbb_epi, wbb_block, wbb_geo,
    wbb_handles, wbb_im2col,
    wbb_pack, wbb_packed_words)
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run
from _bf16_args cimport _geometry, _overlap, _ptr, _row_stride

from workbench._kernels.checks import scratch_array

cnp.import_array()
wb_pool_import()

BF16 = np.dtype(ml_dtypes.bfloat16)


cdef extern from "wb_implicit_bf16.h" nogil:
    void wbi_pad_rows(const wbb_geo* g, const void* x, int x_f32, Py_ssize_t hp, Py_ssize_t wpd, uint16_t* xp,
                      Py_ssize_t r0, Py_ssize_t r1)
    void wbi_block(const wbb_geo* g, const uint16_t* xp, Py_ssize_t hp, Py_ssize_t wpd, const Py_ssize_t* toff,
                   int ntaps, Py_ssize_t n, const uint16_t* pb, void* c, Py_ssize_t ldc, int f32, const wbb_epi* ep,
                   Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t p0, Py_ssize_t p1)
    bint wba_runs_apply(const wbb_geo* g)
    void wbi_runs(const wbb_geo* g, const uint16_t* x, Py_ssize_t n, const uint16_t* pb, void* c, Py_ssize_t ldc,
                  int f32, const wbb_epi* ep, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t p0, Py_ssize_t p1)


#: True when this build runs the AVX512-BF16 micro-kernel (the ``_avx512bf16`` and ``_amx``
#: variants), the latter only where Linux grants the process the AMX tile state.
available = bool(WBB_NATIVE) and bool(wbb_ready())
#: True in the ``_amx`` build: :func:`gemm` and :func:`conv_im2col` run on AMX tiles.
amx = bool(WBB_AMX)

cdef enum:
    ROW_TILE = 96   # rows a gathering job takes at most: 8 strips of the 12-row micro-kernel (3 blocks of 32 rows: AMX)
    ANY_ROWS = 1 << 30  # max_tile of a call that gathers nothing: a job may take any number of rows


def handles(int act):
    """Whether the epilogue applies activation code ``act`` (``routines/epilogue.py``) in this build."""
    return bool(wbb_handles(act))


def packed_words(Py_ssize_t k, Py_ssize_t n):
    """16-bit words of weights of depth ``k`` and ``n`` columns packed by :func:`pack`: the panels,
    then the depth in two words (the AMX build pads the depth to 32, so the size alone would let
    weights of depth 6 pass for depth 8)."""
    return wbb_packed_words(k, n) + 2


def _array(a, what, dtype, writeable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"gemm_bf16: {what} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"gemm_bf16: {what} must be {np.dtype(dtype).name}, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"gemm_bf16: {what} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"gemm_bf16: {what} is read-only")
    return a


def check_epilogue(who, out, bias, residual, int act, post):
    """Check an epilogue for ``out`` (..., n): ``bias`` and ``post = (scale, shift)`` float32 (n,)
    or None, ``residual`` of out's shape (bfloat16 or float32) or None, activation ``act``.
    Returns the residual as the kernels take it.  Errors start with ``who``."""
    cdef Py_ssize_t n = out.shape[out.ndim - 1]
    if not wbb_handles(act):
        raise ValueError(f"{who}: activation code {act} is not applied by this build")
    for what, v in (("bias", bias),) + ((("post scale", post[0]), ("post shift", post[1])) if post is not None else ()):
        if v is not None and _array(v, what, np.float32).shape != (n,):
            raise ValueError(f"{who}: {what} must have shape ({n},), got {v.shape}")
    if post is not None and not 0 <= act <= 5:
        raise ValueError(f"{who}: a post-activation affine needs activation code 0 to 5, got {act}")
    if residual is not None:
        residual = _array(residual, "residual", residual.dtype if isinstance(residual, np.ndarray)
                          and residual.dtype in (BF16, np.float32) else BF16)
        if residual.shape != out.shape:
            raise ValueError(f"{who}: residual {residual.shape} must have the output's shape {out.shape}")
    return residual


def pack(w):
    """float32 weights ``w`` (n, k) (a 1x1 convolution's (out, in) channels, a Gemm's B^T),
    rounded to bfloat16 and packed in pairs of k per 32-column panel: a 1-D uint16 array of
    :func:`packed_words` words."""
    w = _array(w, "weights", np.float32)
    if w.ndim != 2:
        raise ValueError(f"gemm_bf16: weights must be 2-D (n, k), got shape {w.shape}")
    cdef Py_ssize_t n = w.shape[0], k = w.shape[1]
    out = aligned_empty(wbb_packed_words(k, n) + 2, np.uint16)
    cdef const float* src = <const float*> _ptr(w)
    cdef uint16_t* dst = <uint16_t*> _ptr(out)
    cdef Py_ssize_t panels = (n + WBB_NR - 1) // WBB_NR
    with nogil:
        wbb_pack(k, n, src, dst, 0, panels)
    out[-2:] = (k & 0xffff, (k >> 16) & 0xffff)
    return out


cdef struct _Ctx:
    Py_ssize_t m, n, k, lda, ldc, row_tile, col_jobs, panels
    Py_ssize_t row_jobs, strips   # rows split into row_jobs jobs of whole 12-row strips, as even as may be
    Py_ssize_t a_row_bytes        # bytes of A one row of C reads (the scheduler's estimate of A's size)
    const void* a
    const uint16_t* pb
    void* c
    int f32, a_f32       # C is float32; A is float32 (rounded to bfloat16 as each job gathers it)
    wbb_epi ep
    wbb_geo geo          # with scratch: the convolution whose im2col rows A is (a plain matrix: 1x1 on a 1 x m image)
    uint16_t* scratch    # row_tile * k words per thread slot: each job gathers its rows of A there
    int ntaps            # > 0: an implicit-GEMM convolution (wb_implicit_bf16.h) with these taps
    const Py_ssize_t* toff
    Py_ssize_t hp, wpd, pad_rows_per_job
    bint pad             # the image is copied into a zero-bordered one first (else read in place)
    bint in_place        # AMX runs of kernel rows read the image itself, borders implied (wb_amx_runs.h)
    uint16_t* padded     # the zero-bordered image (read only, but written by the pad jobs first)
    uint16_t* ws         # the caller's workspace (ws_words words) for the scratch, or NULL: a new one per call
    Py_ssize_t ws_words


cdef void _job(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    cdef _Ctx* g = <_Ctx*> ctx
    cdef Py_ssize_t r = job // g.col_jobs, q = job % g.col_jobs
    cdef Py_ssize_t p0 = q * g.panels // g.col_jobs, p1 = (q + 1) * g.panels // g.col_jobs
    cdef Py_ssize_t i0 = r * g.strips // g.row_jobs * WBB_ROWS
    cdef Py_ssize_t i1 = min((r + 1) * g.strips // g.row_jobs * WBB_ROWS, g.m)
    cdef const uint16_t* a = <const uint16_t*> g.a + i0 * g.lda
    if g.in_place:
        wbi_runs(&g.geo, <const uint16_t*> g.a, g.n, g.pb, g.c, g.ldc, g.f32, &g.ep, i0, i1, p0, p1)
        return
    if g.ntaps > 0:
        wbi_block(&g.geo, g.padded, g.hp, g.wpd, g.toff, g.ntaps, g.n, g.pb, g.c, g.ldc, g.f32, &g.ep, i0, i1, p0,
                  p1)
        return
    if g.scratch != NULL:
        a = g.scratch + slot * g.row_tile * g.k
        wbb_im2col(&g.geo, g.a, g.a_f32, i0, i1, <uint16_t*> a)
    wbb_block(g.n, g.k, a, g.lda, g.pb, g.c, g.ldc, g.f32, &g.ep, i0, i1, p0, p1)


cdef void _pad_job(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    cdef _Ctx* g = <_Ctx*> ctx
    cdef Py_ssize_t r0 = job * g.pad_rows_per_job
    wbi_pad_rows(&g.geo, g.a, g.a_f32, g.hp, g.wpd, g.padded, r0,
                 min(r0 + g.pad_rows_per_job, g.geo.n * g.hp))


cdef int _setup(_Ctx* g, a, wp, out, Py_ssize_t m, Py_ssize_t k, bias, residual, int act, double p0, double p1,
                post, bint res_post, int num_threads, Py_ssize_t max_tile) except -1:
    """Check the arguments common to :func:`gemm` and :func:`conv_im2col` (``out`` (..., n), the
    rows m and depth k already checked against ``a``) and fill ``g``: pointers, epilogue, jobs."""
    wp = _array(wp, "packed weights", np.uint16)
    if num_threads < 1:
        raise ValueError(f"gemm_bf16: num_threads must be >= 1, got {num_threads}")
    cdef Py_ssize_t n = out.shape[out.ndim - 1]
    if (wp.ndim != 1 or wp.size != wbb_packed_words(k, n) + 2
            or int(wp[wp.size - 2]) + (int(wp[wp.size - 1]) << 16) != k):
        depth = int(wp[-2]) + (int(wp[-1]) << 16) if wp.ndim == 1 and wp.size >= 2 else "?"
        raise ValueError(f"gemm_bf16: packed weights hold {wp.size} words of depth {depth}; depth {k} and {n} "
                         f"columns need {wbb_packed_words(k, n) + 2}")
    residual = check_epilogue("gemm_bf16", out, bias, residual, act, post)
    for what, v in (("input", a), ("packed weights", wp), ("residual", residual), ("bias", bias)):
        if _overlap(out, v):
            raise ValueError(f"gemm_bf16: the output overlaps the {what}")
    if m > 0 and n > 0 and k == 0:
        raise ValueError("gemm_bf16: depth 0")
    g.m, g.n, g.k, g.lda, g.ldc = m, n, k, k, _row_stride(out, "gemm_bf16")
    g.a, g.pb, g.c, g.f32 = _ptr(a), <const uint16_t*> _ptr(wp), _ptr(out), out.dtype == np.float32
    g.a_f32 = a.dtype == np.float32
    g.scratch = NULL
    g.ntaps = 0
    g.in_place = False
    fill_epilogue(&g.ep, bias, residual, n, act, p0, p1, post, res_post)
    g.panels = (n + WBB_NR - 1) // WBB_NR
    g.a_row_bytes = 2 * k
    _schedule(g, num_threads, max_tile)
    return 0


include "_bf16_schedule.pxi"


cdef uint16_t* _words(_Ctx* g, Py_ssize_t need, list keep) except NULL:
    """``need`` words of scratch: the caller's workspace, or (none given) a new array kept in ``keep``."""
    if g.ws == NULL:
        buf = scratch_array(None, 2 * need, "gemm_bf16")
        keep.append(buf)
        return <uint16_t*> _ptr(buf)
    if g.ws_words < need:
        raise ValueError(f"gemm_bf16: scratch must be a writeable C-contiguous array of at least {2 * need} bytes, "
                         f"2-byte aligned; got {2 * g.ws_words} bytes")
    return g.ws


cdef int _launch(_Ctx* g, int num_threads, bint gather) except -1:
    """Run the jobs; ``gather``: each job gathers its rows of A into its thread's part of the scratch."""
    keep = []
    if gather:
        g.scratch = _words(g, num_threads * g.row_tile * g.k, keep)
    cdef Py_ssize_t rows
    if g.ntaps > 0 and g.pad and g.m > 0 and g.n > 0:
        rows = g.geo.n * g.hp
        g.padded = _words(g, rows * g.wpd * g.geo.c + (_amx_slack(g.geo.c, g.geo.sw) if WBB_AMX else 0), keep)
        g.pad_rows_per_job = wb_jobs_per_chunk(rows, g.wpd * g.geo.c, num_threads)
        with nogil:
            wb_pool_run(_pad_job, g, (rows + g.pad_rows_per_job - 1) // g.pad_rows_per_job, num_threads)
    if g.m > 0 and g.n > 0:
        with nogil:
            wb_pool_run(_job, g, g.row_jobs * g.col_jobs, num_threads)
    return 0


cdef class Call:
    """A :func:`gemm` or :func:`conv_im2col` on fixed arrays, checked once when made (``bind=True``);
    calling it with ``num_threads`` runs it, without the checks a direct call repeats every time."""
    cdef _Ctx g
    cdef Py_ssize_t max_tile
    cdef int nt
    cdef bint gather
    cdef object keep   # the arrays g points into

    @property
    def jobs(self):
        """(row groups, panel groups) of the split for the threads last asked for."""
        return self.g.row_jobs, self.g.col_jobs

    def __call__(self, int num_threads):
        if num_threads < 1:
            raise ValueError(f"gemm_bf16: num_threads must be >= 1, got {num_threads}")
        if num_threads != self.nt:
            _schedule(&self.g, num_threads, self.max_tile)
            self.nt = num_threads
        _launch(&self.g, num_threads, self.gather)


cdef object _finish(_Ctx* g, int num_threads, Py_ssize_t max_tile, bint gather, bint bind, keep):
    """Run a checked call now, or (``bind``) return it as a :class:`Call`."""
    if not bind:
        _launch(g, num_threads, gather)
        return keep[0]
    cdef Call c = Call.__new__(Call)
    c.g, c.max_tile, c.nt, c.gather, c.keep = g[0], max_tile, num_threads, gather, keep
    return c


def _output(out):
    """The output: C-contiguous, or (an NHWC Concat part written in place) rows of contiguous
    channels evenly spaced in a larger buffer (:func:`_row_stride`)."""
    if not isinstance(out, np.ndarray) or out.dtype not in (BF16, np.float32):
        raise TypeError(f"gemm_bf16: output must be a bfloat16 or float32 NumPy array, got "
                        f"{getattr(out, 'dtype', type(out).__name__)}")
    if not out.flags.writeable:
        raise ValueError("gemm_bf16: output is read-only")
    _row_stride(out, "gemm_bf16")
    return out


def gemm(a, wp, out, bias=None, residual=None, int act=0, double p0=0, double p1=0, post=None,
         bint res_post=False, int num_threads=1, bint bind=False, scratch=None):
    """``out = act(a @ B + bias + residual) * scale + shift`` (``post = (scale, shift)``; with
    ``res_post`` the residual comes last).

    ``a`` (..., k) bfloat16, or float32 (rounded to bfloat16 as each job gathers its rows); ``out``
    (..., n), bfloat16 or float32, with ``a``'s leading shape (an NHWC image's pixels, or a
    matrix's rows); ``wp`` B packed by :func:`pack` for that k and n; ``bias``, ``scale``,
    ``shift`` float32 (n,) or None; ``residual`` of ``out``'s shape, bfloat16 or float32, or None.  Activation codes as ``routines/epilogue.py`` (:func:`handles` says which this build
    applies).  Returns ``out``; with ``bind``, runs nothing and returns a :class:`Call`.
    ``scratch``: a workspace of at least :func:`im2col_scratch_bytes` for a float32 input (kept
    by a :class:`Call`); None: each call allocates its own.
    """
    a, out = _input(a), _output(out)
    lead = a.ndim - 1
    if a.ndim < 1 or out.ndim != a.ndim or tuple(out.shape)[:lead] != tuple(a.shape)[:lead]:
        raise ValueError(f"gemm_bf16: input {a.shape} and output {out.shape} must share all but the last axis")
    cdef _Ctx g
    cdef Py_ssize_t m = int(np.prod(tuple(a.shape)[:lead])), k = a.shape[lead]
    cdef Py_ssize_t tile = ANY_ROWS if a.dtype == BF16 else _gather_rows(k)
    _setup(&g, a, wp, out, m, k, bias, residual, act, p0, p1, post, res_post, num_threads, tile)
    _workspace(&g, scratch)
    if g.a_f32:   # rounded to bfloat16 row tile by row tile: a 1x1 convolution of a 1 x m image
        g.geo.n, g.geo.h, g.geo.w, g.geo.c, g.geo.oh, g.geo.ow = 1, 1, m, k, 1, m
        g.geo.kh = g.geo.kw = g.geo.sh = g.geo.sw = g.geo.dh = g.geo.dw = 1
        g.geo.pt = g.geo.pl = 0
    return _finish(&g, num_threads, tile, g.a_f32, bind, [out, a, wp, bias, residual, post, scratch])


def _input(a):
    """A bfloat16 input, or a float32 one (each job rounds its rows to bfloat16 as it gathers them)."""
    if isinstance(a, np.ndarray) and a.dtype == np.float32:
        return _array(a, "input", np.float32)
    return _array(a, "input", BF16)


cdef Py_ssize_t _gather_rows(Py_ssize_t k):
    """Rows a gathering job takes at most (its thread's share of the scratch)."""
    return min(<Py_ssize_t> ROW_TILE, _gather_tile(k))


cdef Py_ssize_t _gather_tile(Py_ssize_t k):
    """Rows of a gathered tile: about 256 KiB of bfloat16, so that it stays in L2 beside the weight panel."""
    return max(WBB_ROWS, (1 << 17) // max(k, 1) // WBB_ROWS * WBB_ROWS)


cdef int _workspace(_Ctx* g, scratch) except -1:
    """Point ``g`` at the caller's ``scratch`` (None: each call allocates its own)."""
    g.ws, g.ws_words = NULL, 0
    if scratch is not None:
        scratch = scratch_array(scratch, 0, "gemm_bf16", 2)   # its size is checked against each call's need
        g.ws, g.ws_words = <uint16_t*> _ptr(scratch), scratch.nbytes // 2
    return 0


include "_bf16_conv.pxi"
