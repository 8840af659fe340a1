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
        int act, act_first
        float ap0, ap1, amult, ainv
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


#: Activation codes (``workbench/routines/epilogue.py``) the epilogue computes (ReLU and clip too:
#: before a residual, where the clamp of the output cannot stand for them).
ACTIVATIONS = (1, 2, 3, 4, 5, 6, 8, 9, 10, 11)


cdef _epilogue(wbq_args* e, out, Py_ssize_t m, Py_ssize_t n, int zo, bint relu, lo, hi, res, float rmult, who,
               int rzp=0, mid=None, act=None):
    """Fill ``e``'s epilogue fields (all but comp, mult and bias) for ``out`` (m rows of n),
    checked: the clamp to [lo, hi] in output units (``relu``: lo = 0), the residual ``res``
    (``(res - rzp) * rmult``), ``mid``: ``(zero point, multiplier)`` of the intermediate uint8
    rounding before the residual (None: none), ``act``: ``(code, p0, p1, scale[, first])``, an
    activation of :data:`ACTIVATIONS` applied to ``y * scale`` (real values; 1 for float32 ``out``,
    the output's scale for uint8), its result divided by ``scale``, after the residual or with
    ``first`` true before it (None: none)."""
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
    e.act, e.act_first, e.ap0, e.ap1, e.amult, e.ainv = 0, 0, 0.0, 0.0, 1.0, 1.0
    if act is not None:
        if len(act) not in (4, 5):
            raise ValueError(f"{who}: the activation must be (code, p0, p1, scale[, first]), got {act!r}")
        code, p0, p1, scale = int(act[0]), float(act[1]), float(act[2]), float(act[3])
        e.act_first = len(act) == 5 and bool(act[4])
        if code not in ACTIVATIONS or not (np.isfinite(scale) and scale > 0) or not (np.isfinite(p0) and np.isfinite(p1)):
            raise ValueError(f"{who}: the activation must be (code in {ACTIVATIONS}, finite p0, p1, a positive "
                             f"finite scale), got {act!r}")
        e.act, e.ap0, e.ap1, e.amult, e.ainv = code, p0, p1, scale, 1.0 / scale
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
         float rmult=1.0, int num_threads=1, int rzp=0, mid=None, act=None):
    """``out = epilogue(a @ w.T - comp)`` for uint8 ``a`` (M, K) and ``packed`` from :func:`pack`
    of ``w`` (n, K): ``y = s * mult + bias (+ rmult * res)``, clamped to ``[lo, hi]`` (``relu``:
    lo = 0); float32 ``out`` gets ``y``, uint8 ``out`` ``clamp(round_even(y) + zo, 0, 255)``;
    ``comp``, int32 (n,) or None, is usually the activations' zero point times the weight sums,
    ``mult`` and ``bias`` float32 (n,); ``res``, float32 or uint8 (M, n), a residual (it may be
    ``out`` itself) added as ``(res - rzp) * rmult``, after the sums are rounded to an intermediate
    uint8 tensor where ``mid`` is ``(zero point, multiplier)``, and ``act`` (``(code, p0, p1,
    scale[, first])``) an activation before the clamp (:func:`_epilogue`, ``wb_gemm_q8.h``)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 2 or a.strides[1] != 1 or a.shape[0] < 1:
        raise ValueError(f"gemm_q8.gemm: a must be uint8 (M, K) with unit column stride, got "
                         f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1]
    cdef _Ctx c
    _weights(&c.args, packed, n, k, comp, mult, bias, "gemm_q8.gemm")
    _epilogue(&c.args, out, m, n, zo, relu, lo, hi, res, rmult, "gemm_q8.gemm", rzp, mid, act)
    if np.shares_memory(a, out):
        raise ValueError("gemm_q8.gemm: out overlaps a")
    c.args.a = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> a)
    c.args.lda = a.strides[0]
    with nogil:
        _run_gemm(&c, m, num_threads)
    return out


include "_q8_depthwise.pxi"
include "_q8_conv.pxi"
