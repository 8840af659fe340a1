# isa-variants: avx512vnni, amxint8
# cython: language_level=3
"""qint8 GEMM (``wb_gemm_q8.h``): uint8 activations times per-channel int8 weights, exact int32
sums, and a requantizing epilogue writing float32 (a fused dequantize) or uint8.

Only the ``_avx512vnni`` build runs the VPDPBUSD micro-kernel (``available``); the baseline build
runs scalar loops on the same packing with the same arithmetic, so the packing and the epilogue
are tested on any CPU.  Work is split over the shared thread pool (``wb_pool.h``) in (row block,
column block) jobs.  Shapes, dtypes and the int32 range of the sums are checked here, before any
``nogil`` code.
"""
import numpy as np
from workbench._kernels.buffers import aligned_zeros
cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, uint8_t
from libc.string cimport memcpy, memset

from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()


cdef extern from "wb_gemm_q8.h" nogil:
    int WBQ_NATIVE
    int WBQ_AMX
    int wbq_permit()
    int WBQ_MR
    ctypedef struct wbq_args:
        const uint8_t* a
        Py_ssize_t lda, K
        const int8_t* w
        Py_ssize_t groups, N
        const int32_t* comp
        const float* mult
        const float* bias
        const void* res
        Py_ssize_t ldr
        int res_u8, rzp
        float rmult
        int mid, zmid
        float mmid
        void* out
        Py_ssize_t ldo
        int out_u8, zo, qlo, qhi
        float flo, fhi
    void wbq_job(const wbq_args* p, Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t b0, Py_ssize_t b1)
    void wbq_pack(const int8_t* w, Py_ssize_t N, Py_ssize_t K, Py_ssize_t groups, int8_t* dst)

#: Whether this build runs the VNNI micro-kernel; the amxint8 build runs AMX tiles instead, where
#: the kernel grants them (``amx``).
amx = bool(WBQ_AMX) and bool(wbq_permit())
available = bool(WBQ_NATIVE) and (amx or not WBQ_AMX)


def depth_groups(Py_ssize_t k):
    """Groups of four of a depth of ``k``, rounded up to whole AMX tiles (16 groups)."""
    return ((k + 3) // 4 + 15) // 16 * 16

#: The longest depth whose sums stay inside int32 (255 * 128 per term).
MAX_DEPTH = (2 ** 31 - 1) // (255 * 128)


def pack(w):
    """int8 weights ``w`` (N, K) -> ``(packed, sums)``: the VPDPBUSD layout (int8, 64-byte aligned)
    and each column's weight sum (int32 (N,), for the activations' zero point)."""
    w = np.ascontiguousarray(w)
    if w.dtype != np.int8 or w.ndim != 2 or min(w.shape) < 1:
        raise ValueError(f"gemm_q8.pack: weights must be int8 (N, K) with N, K >= 1, got {w.dtype} {w.shape}")
    cdef Py_ssize_t n = w.shape[0], k = w.shape[1]
    if k > MAX_DEPTH:
        raise ValueError(f"gemm_q8.pack: depth {k} > {MAX_DEPTH}: the int32 sums could overflow")
    cdef Py_ssize_t groups = depth_groups(k)
    packed = aligned_zeros(((n + 15) // 16, groups, 64), np.int8)
    cdef const int8_t[:, ::1] wv = w
    cdef int8_t[:, :, ::1] pv = packed
    with nogil:
        wbq_pack(&wv[0, 0], n, k, groups, &pv[0, 0, 0])
    return packed, w.sum(axis=1, dtype=np.int32)


cdef enum:
    ROWS = 48     # rows a job: a multiple of the micro-tile's
    COLS = 8      # 16-column blocks a job


cdef struct _Ctx:
    wbq_args args
    Py_ssize_t M, blocks, row_blocks, col_blocks, per


cdef void _chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _Ctx* c = <_Ctx*> ctx
    cdef Py_ssize_t job, rb, cb
    cdef Py_ssize_t j0 = chunk * c.per, j1 = min(j0 + c.per, c.row_blocks * c.col_blocks)
    for job in range(j0, j1):
        rb, cb = job // c.col_blocks, job % c.col_blocks
        wbq_job(&c.args, rb * ROWS, min((rb + 1) * ROWS, c.M), cb * COLS, min((cb + 1) * COLS, c.blocks))


cdef _epilogue(wbq_args* e, out, Py_ssize_t m, Py_ssize_t n, int zo, bint relu, lo, hi, res, float rmult, who,
               int rzp=0, mid=None):
    """Fill ``e``'s epilogue fields (all but comp, mult and bias) for ``out`` (m rows of n),
    checked: the clamp to [lo, hi] in output units (``relu``: lo = 0), the residual ``res``
    (``(res - rzp) * rmult``), ``mid``: ``(zero point, multiplier)`` of the intermediate uint8
    rounding before the residual (None: none)."""
    if (not isinstance(out, np.ndarray) or out.dtype not in (np.float32, np.uint8) or out.ndim != 2
            or out.shape != (m, n) or out.strides[1] != out.itemsize or out.strides[0] % out.itemsize):
        raise ValueError(f"{who}: out must be float32 or uint8 ({m}, {n}) with unit column stride, got "
                         f"{getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if out.dtype == np.uint8 and not 0 <= zo <= 255:
        raise ValueError(f"{who}: a uint8 output's zero point must lie in [0, 255], got {zo}")
    lo = max(float(-np.inf if lo is None else lo), 0.0 if relu else -np.inf)
    hi = float(np.inf if hi is None else hi)
    if not lo <= hi:
        raise ValueError(f"{who}: the clamp [{lo}, {hi}] is empty")
    e.out = <void*> cnp.PyArray_DATA(<cnp.ndarray> out)
    e.ldo = out.strides[0] // out.itemsize
    e.out_u8, e.zo = out.dtype == np.uint8, zo
    e.flo, e.fhi = lo, hi
    e.qlo = int(min(max(np.rint(lo) + zo, 0), 255)) if np.isfinite(lo) else 0
    e.qhi = int(min(max(np.rint(hi) + zo, 0), 255)) if np.isfinite(hi) else 255
    e.res, e.ldr, e.res_u8, e.rmult, e.rzp = NULL, 0, 0, rmult, 0
    e.mid, e.zmid, e.mmid = 0, 0, 1.0
    if mid is not None:
        zmid, mmid = int(mid[0]), float(mid[1])
        if not 0 <= zmid <= 255 or not np.isfinite(mmid):
            raise ValueError(f"{who}: the intermediate rounding's zero point must lie in [0, 255] and its multiplier "
                             f"be finite, got {mid!r}")
        e.mid, e.zmid, e.mmid = 1, zmid, mmid
    if res is not None:
        if (not isinstance(res, np.ndarray) or res.dtype not in (np.float32, np.uint8) or res.ndim != 2
                or res.shape != (m, n) or res.strides[1] != res.itemsize or res.strides[0] % res.itemsize):
            raise ValueError(f"{who}: the residual must be float32 or uint8 ({m}, {n}) with unit column stride, "
                             f"got {getattr(res, 'dtype', type(res))} {getattr(res, 'shape', '')}")
        if np.shares_memory(res, out) and (res.dtype != out.dtype or res.strides != out.strides
                                           or res.ctypes.data != out.ctypes.data):
            raise ValueError(f"{who}: the residual overlaps out other than as the same array")
        e.res, e.ldr, e.res_u8 = <const void*> cnp.PyArray_DATA(<cnp.ndarray> res), res.strides[0] // res.itemsize, \
            res.dtype == np.uint8
        if res.dtype == np.uint8 and not 0 <= rzp <= 255:
            raise ValueError(f"{who}: a uint8 residual's zero point must lie in [0, 255], got {rzp}")
        e.rzp = rzp if res.dtype == np.uint8 else 0


cdef _weights(wbq_args* e, packed, Py_ssize_t n, Py_ssize_t k, comp, mult, bias, who):
    """Fill ``e``'s weight fields, checked: ``packed`` for (n, k), ``comp`` (or None), ``mult``, ``bias``."""
    if (not isinstance(packed, np.ndarray) or packed.dtype != np.int8 or packed.ndim != 3
            or packed.shape != ((n + 15) // 16, depth_groups(k), 64) or not packed.flags.c_contiguous
            or packed.ctypes.data % 64):
        raise ValueError(f"{who}: packed weights for ({n}, {k}) must be int8 "
                         f"{((n + 15) // 16, depth_groups(k), 64)}, C-contiguous and 64-byte aligned (gemm_q8.pack), "
                         f"got {getattr(packed, 'shape', type(packed))}")
    for name, v, dt in (("comp", comp, np.int32), ("mult", mult, np.float32), ("bias", bias, np.float32)):
        if (v is not None or name != "comp") and (not isinstance(v, np.ndarray) or v.dtype != dt or v.shape != (n,)
                                                  or not v.flags.c_contiguous):
            raise ValueError(f"{who}: {name} must be {np.dtype(dt)} ({n},) contiguous, got "
                             f"{getattr(v, 'dtype', type(v))} {getattr(v, 'shape', '')}")
    e.K, e.N, e.groups = k, n, depth_groups(k)
    e.w = <const int8_t*> cnp.PyArray_DATA(<cnp.ndarray> packed)
    e.comp = NULL if comp is None else <const int32_t*> cnp.PyArray_DATA(<cnp.ndarray> comp)
    e.mult = <const float*> cnp.PyArray_DATA(<cnp.ndarray> mult)
    e.bias = <const float*> cnp.PyArray_DATA(<cnp.ndarray> bias)


cdef void _run_gemm(_Ctx* c, Py_ssize_t m, int nt) noexcept nogil:
    """Run ``c``'s GEMM over ``m`` rows of its ``a`` into its ``out``, split over the pool."""
    c.M = m
    c.row_blocks = (m + ROWS - 1) // ROWS
    c.blocks = (c.args.N + 15) // 16
    c.col_blocks = (c.blocks + COLS - 1) // COLS
    c.per = wb_jobs_per_chunk(c.row_blocks * c.col_blocks, ROWS * COLS * 16 * c.args.K // 64 + 1, nt)
    wb_pool_run(_chunk, c, (c.row_blocks * c.col_blocks + c.per - 1) // c.per, nt)


def gemm(a, packed, Py_ssize_t n, comp, mult, bias, out, int zo=0, bint relu=False, lo=None, hi=None, res=None,
         float rmult=1.0, int num_threads=1, int rzp=0, mid=None):
    """``out = epilogue(a @ w.T - comp)`` for uint8 ``a`` (M, K) and ``packed`` from :func:`pack`
    of ``w`` (n, K): ``y = s * mult + bias (+ rmult * res)``, clamped to ``[lo, hi]`` (``relu``:
    lo = 0); float32 ``out`` gets ``y``, uint8 ``out`` ``clamp(round_even(y) + zo, 0, 255)``;
    ``comp``, int32 (n,) or None, is usually the activations' zero point times the weight sums,
    ``mult`` and ``bias`` float32 (n,); ``res``, float32 or uint8 (M, n), a residual (it may be
    ``out`` itself) added as ``(res - rzp) * rmult``, after the sums are rounded to an intermediate
    uint8 tensor where ``mid`` is ``(zero point, multiplier)`` (``wb_gemm_q8.h``)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 2 or a.strides[1] != 1 or a.shape[0] < 1:
        raise ValueError(f"gemm_q8.gemm: a must be uint8 (M, K) with unit column stride, got "
                         f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1]
    cdef _Ctx c
    _weights(&c.args, packed, n, k, comp, mult, bias, "gemm_q8.gemm")
    _epilogue(&c.args, out, m, n, zo, relu, lo, hi, res, rmult, "gemm_q8.gemm", rzp, mid)
    if np.shares_memory(a, out):
        raise ValueError("gemm_q8.gemm: out overlaps a")
    c.args.a = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> a)
    c.args.lda = a.strides[0]
    with nogil:
        _run_gemm(&c, m, num_threads)
    return out


cdef extern from "wb_dw_q8.h" nogil:
    ctypedef struct wbd_args:
        const uint8_t* x
        Py_ssize_t H, W, C
        const int8_t* w
        const uint8_t* zrow
        Py_ssize_t pairs, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW
        wbq_args epi
    void wbd_row(const wbd_args* p, Py_ssize_t n, Py_ssize_t oh)


def pack_depthwise(w):
    """Depthwise int8 weights ``w`` (C, 1, KH, KW) -> ``(packed, sums)``: int8 (ceil(C / 64),
    ceil(KH * KW / 2), 4, 64), 64-byte aligned, the four VPDPBUSD operands of each 64-channel block
    and pair of taps (in row, column order) that ``wb_dw_q8.h`` describes (zero past C and past
    the last tap), and each channel's weight sum (int32 (C,), for the image's zero point)."""
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 4 or w.shape[1] != 1 or min(w.shape) < 1:
        raise ValueError(f"gemm_q8.pack_depthwise: weights must be int8 (C, 1, KH, KW), got {w.dtype} {w.shape}")
    c, _, kh, kw = w.shape
    pairs, blocks = (kh * kw + 1) // 2, (c + 63) // 64
    taps = np.zeros((pairs * 2, blocks * 64), np.int8)
    taps[:kh * kw, :c] = w[:, 0].reshape(c, kh * kw).T
    # (tap pair, tap of the pair, block, lane L, lane channel j): channel 64b + 16L + j
    t = taps.reshape(pairs, 2, blocks, 4, 16)
    out = np.zeros((blocks, pairs, 4, 4, 4, 4), np.int8)   # (block, pair, vector, lane, dword i, byte)
    for hi in (0, 1):
        for odd in (0, 1):
            j = 8 * hi + 2 * np.arange(4) + odd            # the lane channels of dwords i = 0..3
            for e in (0, 1):                                # the pair's first or second tap
                out[:, :, 2 * hi + odd, :, :, 2 * odd + e] = t[:, e][..., j].transpose(1, 0, 2, 3)
    packed = aligned_zeros((blocks, pairs, 4, 64), np.int8)
    packed[...] = out.reshape(blocks, pairs, 4, 64)
    return packed, w.reshape(c, -1).sum(axis=1, dtype=np.int32)


#: The most taps a depthwise window may have (wb_dw_q8.h's WBD_MAX_TAPS, less the odd one's partner).
MAX_TAPS = 63


cdef struct _DwCtx:
    wbd_args args
    Py_ssize_t rows, per


cdef void _dw_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _DwCtx* c = <_DwCtx*> ctx
    cdef Py_ssize_t r
    for r in range(chunk * c.per, min((chunk + 1) * c.per, c.rows)):
        wbd_row(&c.args, r // c.args.OH, r % c.args.OH)


cdef class Depthwise:
    """A qint8 depthwise convolution of uint8 NHWC ``x`` (N, H, W, C) bound to its arrays, checked
    once: ``wp`` from :func:`pack_depthwise`, ``comp`` int32 (C,) the image's zero point times
    the weight sums, ``zrow`` at least C bytes of that zero point (what taps in the padding read),
    then :func:`gemm`'s epilogue (no residual) per channel into float32 or uint8 ``out``
    (N, OH, OW, C); ``pads`` (top, left, bottom, right)."""

    cdef _DwCtx d
    cdef object refs

    def __init__(self, x, wp, kernel, strides, dilations, pads, comp, mult, bias, out, zrow, int zo=0,
                 bint relu=False, lo=None, hi=None):
        who = "gemm_q8.depthwise"
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or not x.flags.c_contiguous:
            raise ValueError(f"{who}: x must be a C-contiguous uint8 (N, H, W, C) array, got "
                             f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
        n, h, w, c = x.shape
        kh, kw = (int(v) for v in kernel)
        sh, sw = (int(v) for v in strides)
        dh, dw = (int(v) for v in dilations)
        pt, pl, pb, pr = (int(v) for v in pads)
        if min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0 or min(n, h, w, c) < 1:
            raise ValueError(f"{who}: bad geometry kernel {kernel} strides {strides} dilations {dilations} "
                             f"pads {pads} for x {x.shape}")
        oh, ow = out_size(h, kh, sh, dh, pt, pb), out_size(w, kw, sw, dw, pl, pr)
        if oh < 1 or ow < 1:
            raise ValueError(f"{who}: the output of x {x.shape} with kernel {kernel} is empty")
        pairs = (kh * kw + 1) // 2
        if kh * kw > MAX_TAPS:
            raise ValueError(f"{who}: a {kh}x{kw} window has more than {MAX_TAPS} taps")
        if (not isinstance(wp, np.ndarray) or wp.dtype != np.int8 or wp.shape != ((c + 63) // 64, pairs, 4, 64)
                or not wp.flags.c_contiguous or wp.ctypes.data % 64):
            raise ValueError(f"{who}: packed weights must be int8 {((c + 63) // 64, pairs, 4, 64)}, C-contiguous and "
                             f"64-byte aligned (pack_depthwise), got {getattr(wp, 'shape', type(wp))}")
        if (not isinstance(zrow, np.ndarray) or zrow.dtype != np.uint8 or zrow.ndim != 1 or zrow.size < c
                or not zrow.flags.c_contiguous):
            raise ValueError(f"{who}: zrow must be a contiguous uint8 array of at least {c} bytes")
        if (not isinstance(out, np.ndarray) or out.shape != (n, oh, ow, c) or not out.flags.c_contiguous
                or np.shares_memory(x, out)):
            raise ValueError(f"{who}: out must be a C-contiguous ({n}, {oh}, {ow}, {c}) array apart from x, "
                             f"got {getattr(out, 'shape', type(out))}")
        for name, v, dt in (("comp", comp, np.int32), ("mult", mult, np.float32), ("bias", bias, np.float32)):
            if not isinstance(v, np.ndarray) or v.dtype != dt or v.shape != (c,) or not v.flags.c_contiguous:
                raise ValueError(f"{who}: {name} must be {np.dtype(dt)} ({c},) contiguous")
        _epilogue(&self.d.args.epi, out.reshape(-1, c), n * oh * ow, c, zo, relu, lo, hi, None, 1.0, who)
        self.d.args.epi.comp = <const int32_t*> cnp.PyArray_DATA(<cnp.ndarray> comp)
        self.d.args.epi.mult = <const float*> cnp.PyArray_DATA(<cnp.ndarray> mult)
        self.d.args.epi.bias = <const float*> cnp.PyArray_DATA(<cnp.ndarray> bias)
        self.d.args.epi.N = c
        self.d.args.x = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x)
        self.d.args.H, self.d.args.W, self.d.args.C = h, w, c
        self.d.args.w = <const int8_t*> cnp.PyArray_DATA(<cnp.ndarray> wp)
        self.d.args.zrow = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> zrow)
        self.d.args.pairs, self.d.args.KH, self.d.args.KW = pairs, kh, kw
        self.d.args.SH, self.d.args.SW, self.d.args.DH, self.d.args.DW = sh, sw, dh, dw
        self.d.args.PT, self.d.args.PL, self.d.args.OH, self.d.args.OW = pt, pl, oh, ow
        self.d.rows = n * oh
        self.refs = (x, wp, comp, mult, bias, out, zrow)

    def __call__(self, int num_threads=1):
        cdef int nt = max(num_threads, 1)
        with nogil:
            self.d.per = wb_jobs_per_chunk(self.d.rows, self.d.args.OW * self.d.args.C * self.d.args.KH * self.d.args.KW, nt)
            wb_pool_run(_dw_chunk, &self.d, (self.d.rows + self.d.per - 1) // self.d.per, nt)


def depthwise(x, wp, kernel, strides, dilations, pads, comp, mult, bias, out, zrow, int zo=0, bint relu=False,
              lo=None, hi=None, int num_threads=1):
    """:class:`Depthwise` bound and run once; returns ``out``."""
    Depthwise(x, wp, kernel, strides, dilations, pads, comp, mult, bias, out, zrow, zo, relu, lo, hi)(num_threads)
    return out


cdef struct _ColCtx:
    const uint8_t* x
    uint8_t* out
    Py_ssize_t H, W, C, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW, ldo, r0, rows, per
    uint8_t fill


cdef void _col_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    """Output rows (image, oh) r0 + [chunk's] of the chunk: each pixel's window, tap by tap, C bytes
    a tap, into the rows of ``out`` from row r0's first pixel on."""
    cdef _ColCtx* c = <_ColCtx*> ctx
    cdef Py_ssize_t r, n, oh, ow, i, j, ih, iw
    cdef uint8_t* dst
    for r in range(c.r0 + chunk * c.per, c.r0 + min((chunk + 1) * c.per, c.rows)):
        n, oh = r // c.OH, r % c.OH
        for ow in range(c.OW):
            dst = c.out + ((r - c.r0) * c.OW + ow) * c.ldo
            for i in range(c.KH):
                ih = oh * c.SH - c.PT + i * c.DH
                for j in range(c.KW):
                    iw = ow * c.SW - c.PL + j * c.DW
                    if 0 <= ih < c.H and 0 <= iw < c.W:
                        memcpy(dst, c.x + ((n * c.H + ih) * c.W + iw) * c.C, c.C)
                    else:
                        memset(dst, c.fill, c.C)
                    dst += c.C


def out_size(Py_ssize_t size, Py_ssize_t k, Py_ssize_t s, Py_ssize_t d, Py_ssize_t pb, Py_ssize_t pe):
    """Output positions of a window of ``k`` taps ``d`` apart at stride ``s`` (0 where none fits)."""
    cdef Py_ssize_t span = size + pb + pe - (k - 1) * d
    return 0 if span < 1 else (span - 1) // s + 1


def im2col(x, kernel, strides, dilations, pads, int fill, out, int num_threads=1):
    """The windows of uint8 NHWC ``x`` (N, H, W, C) as rows of ``out`` (N * OH * OW, >= KH * KW * C,
    uint8, unit column stride): taps in (row, column, channel) order, those in the padding
    ``fill`` (the image's zero point); ``pads`` (top, left, bottom, right)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or not x.flags.c_contiguous:
        raise ValueError(f"gemm_q8.im2col: x must be a C-contiguous uint8 (N, H, W, C) array, got "
                         f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
    cdef _ColCtx c
    n, c.H, c.W, c.C = x.shape
    c.KH, c.KW = (int(v) for v in kernel)
    c.SH, c.SW = (int(v) for v in strides)
    c.DH, c.DW = (int(v) for v in dilations)
    c.PT, c.PL, pb, pr = (int(v) for v in pads)
    if min(c.KH, c.KW, c.SH, c.SW, c.DH, c.DW) < 1 or min(c.PT, c.PL, pb, pr) < 0 or min(n, c.H, c.W, c.C) < 1:
        raise ValueError(f"gemm_q8.im2col: bad geometry kernel {kernel} strides {strides} dilations {dilations} "
                         f"pads {pads} for x {x.shape}")
    c.OH, c.OW = out_size(c.H, c.KH, c.SH, c.DH, c.PT, pb), out_size(c.W, c.KW, c.SW, c.DW, c.PL, pr)
    if c.OH < 1 or c.OW < 1:
        raise ValueError(f"gemm_q8.im2col: the output of x {x.shape} with kernel {kernel} is empty")
    k = c.KH * c.KW * c.C
    if (not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 2 or out.shape[0] != n * c.OH * c.OW
            or out.shape[1] < k or out.strides[1] != 1 or np.shares_memory(x, out)):
        raise ValueError(f"gemm_q8.im2col: out must be uint8 ({n * c.OH * c.OW}, >= {k}) with unit column stride, "
                         f"apart from x, got {getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if not 0 <= fill <= 255:
        raise ValueError(f"gemm_q8.im2col: the fill must lie in [0, 255], got {fill}")
    c.x = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x)
    c.out = <uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> out)
    c.ldo, c.fill, c.r0, c.rows = out.strides[0], fill, 0, n * c.OH
    c.per = wb_jobs_per_chunk(c.rows, c.OW * k // 8 + 1, num_threads)
    with nogil:
        wb_pool_run(_col_chunk, &c, (c.rows + c.per - 1) // c.per, num_threads)
    return out


#: Bytes of gathered windows one tile of :class:`Conv` holds: the tile is still in the caches
#: when the GEMM reads it.
TILE_BYTES = 1 << 20


def conv_geometry(x_shape, kernel, strides, dilations, pads):
    """``(direct, OH, OW, K, tile rows, workspace bytes)`` of :class:`Conv` on NHWC ``x_shape``:
    direct (a 1x1 kernel, unit strides, no padding: the GEMM reads the image itself) or else
    tiles of whole output rows gathered into the workspace."""
    n, h, w, c = (int(v) for v in x_shape)
    kh, kw = (int(v) for v in kernel)
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilations)
    pt, pl, pb, pr = (int(v) for v in pads)
    oh, ow = out_size(h, kh, sh, dh, pt, pb), out_size(w, kw, sw, dw, pl, pr)
    k = kh * kw * c
    direct = (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0)
    tile = max(1, min(n * oh, TILE_BYTES // max(ow * k, 1)))
    return direct, oh, ow, k, tile, 0 if direct else tile * ow * k


cdef class Conv:
    """A qint8 convolution of uint8 NHWC ``x`` (N, H, W, C) bound to its arrays, checked once:
    each call gathers the windows of a tile of output rows into ``workspace`` (``fill``: the
    image's zero point in the padding; none for a direct 1x1) and runs :func:`gemm` on them with
    ``packed`` from :func:`pack` of weights (n, KH * KW * C) in (row, column, channel) order,
    into float32 or uint8 ``out`` (N, OH, OW, n); ``res`` (same shape, or None) the residual."""

    cdef _Ctx g
    cdef _ColCtx col
    cdef bint direct
    cdef Py_ssize_t tile, rows, pixels_in, out_row, res_row
    cdef char* out0
    cdef const char* res0
    cdef object refs

    def __init__(self, x, packed, Py_ssize_t n, comp, mult, bias, out, kernel, strides, dilations, pads,
                 int fill=0, workspace=None, int zo=0, bint relu=False, lo=None, hi=None, res=None,
                 float rmult=1.0, int rzp=0, mid=None):
        who = "gemm_q8.Conv"
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or not x.flags.c_contiguous:
            raise ValueError(f"{who}: x must be a C-contiguous uint8 (N, H, W, C) array, got "
                             f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
        nb, h, w, c = x.shape
        kernel, strides, dilations, pads = (tuple(int(v) for v in t) for t in (kernel, strides, dilations, pads))
        if (len(kernel) != 2 or len(strides) != 2 or len(dilations) != 2 or len(pads) != 4
                or min(kernel + strides + dilations) < 1 or min(pads) < 0 or min(x.shape) < 1):
            raise ValueError(f"{who}: bad geometry kernel {kernel} strides {strides} dilations {dilations} "
                             f"pads {pads} for x {x.shape}")
        direct, oh, ow, k, tile, need = conv_geometry(x.shape, kernel, strides, dilations, pads)
        if oh < 1 or ow < 1:
            raise ValueError(f"{who}: the output of x {x.shape} with kernel {kernel} is empty")
        if (not isinstance(out, np.ndarray) or out.shape != (nb, oh, ow, n) or not out.flags.c_contiguous
                or np.shares_memory(x, out)):
            raise ValueError(f"{who}: out must be a C-contiguous ({nb}, {oh}, {ow}, {n}) array apart from x, got "
                             f"{getattr(out, 'shape', type(out))}")
        if res is not None and (not isinstance(res, np.ndarray) or res.shape != out.shape or not res.flags.c_contiguous):
            raise ValueError(f"{who}: the residual must be a C-contiguous {out.shape} array, got "
                             f"{getattr(res, 'shape', type(res))}")
        _weights(&self.g.args, packed, n, k, comp, mult, bias, who)
        _epilogue(&self.g.args, out.reshape(-1, n), nb * oh * ow, n, zo, relu, lo, hi,
                  None if res is None else res.reshape(-1, n), rmult, who, rzp, mid)
        if not 0 <= fill <= 255:
            raise ValueError(f"{who}: the fill must lie in [0, 255], got {fill}")
        self.direct, self.tile, self.rows = direct, tile, nb * oh
        self.pixels_in = nb * h * w
        self.out0, self.out_row = <char*> cnp.PyArray_DATA(<cnp.ndarray> out), ow * n * out.itemsize
        self.res0 = NULL if res is None else <const char*> cnp.PyArray_DATA(<cnp.ndarray> res)
        self.res_row = 0 if res is None else ow * n * res.itemsize
        if direct:
            self.g.args.a, self.g.args.lda = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x), c
            self.refs = (x, packed, comp, mult, bias, out, res)
            return
        if (not isinstance(workspace, np.ndarray) or workspace.dtype != np.uint8 or not workspace.flags.c_contiguous
                or workspace.size < need or np.shares_memory(workspace, x) or np.shares_memory(workspace, out)
                or (res is not None and np.shares_memory(workspace, res))):
            raise ValueError(f"{who}: the workspace must be a C-contiguous uint8 array of at least {need} bytes "
                             f"apart from x, out and the residual, got {getattr(workspace, 'dtype', type(workspace))} "
                             f"{getattr(workspace, 'size', '')}")
        self.col.x = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x)
        self.col.out = <uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> workspace)
        self.col.H, self.col.W, self.col.C = h, w, c
        self.col.KH, self.col.KW = kernel
        self.col.SH, self.col.SW = strides
        self.col.DH, self.col.DW = dilations
        self.col.PT, self.col.PL = pads[0], pads[1]
        self.col.OH, self.col.OW, self.col.ldo, self.col.fill = oh, ow, k, fill
        self.g.args.a, self.g.args.lda = self.col.out, k
        self.refs = (x, packed, comp, mult, bias, out, res, workspace)

    def __call__(self, int num_threads=1):
        cdef Py_ssize_t r0, t
        cdef int nt = max(num_threads, 1)
        with nogil:
            if self.direct:
                _run_gemm(&self.g, self.pixels_in, nt)
            r0 = self.rows if self.direct else 0
            while r0 < self.rows:
                t = min(self.tile, self.rows - r0)
                self.col.r0, self.col.rows = r0, t
                self.col.per = wb_jobs_per_chunk(t, self.col.OW * self.g.args.K // 8 + 1, nt)
                wb_pool_run(_col_chunk, &self.col, (t + self.col.per - 1) // self.col.per, nt)
                self.g.args.out = <void*> (self.out0 + r0 * self.out_row)
                if self.res0 != NULL:
                    self.g.args.res = <const void*> (self.res0 + r0 * self.res_row)
                _run_gemm(&self.g, t * self.col.OW, nt)
                r0 += t
