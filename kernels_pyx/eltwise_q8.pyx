# isa-variants: avx2, avx512
# cython: language_level=3
"""Elementwise kernels of qint8 (uint8) tensors (``wb_eltwise_q8.h``): 256-entry tables (any
unary elementwise layer, a requantization, a dequantization) and binary operations of two uint8
tensors with their own parameters (add, subtract, multiply, one of them broadcast).

Shapes, strides and parameters are checked here before any ``nogil`` code; the work is split
over the shared thread pool (``wb_pool.h``).
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t

from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()


cdef extern from "wb_eltwise_q8.h" nogil:
    int wbe_vbmi()
    void wbe_lut_u8(const uint8_t* x, uint8_t* y, Py_ssize_t n, const uint8_t* t, int vbmi)
    void wbe_lut_f32(const uint8_t* x, float* y, Py_ssize_t n, const float* t)
    int WBE_ADD, WBE_MUL
    ctypedef struct wbe_binary:
        const uint8_t* a
        const uint8_t* b
        Py_ssize_t n[3]
        Py_ssize_t astr[3]
        Py_ssize_t bstr[3]
        int op
        float za, zb, ra, rb
        int act
        float ap0, ap1, amult, ainv
        void* out
        int out_u8
        float zo, qlo, qhi, flo, fhi
    void wbe_binary_run(const wbe_binary* p, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0, Py_ssize_t j1)

#: Whether the byte tables run on VPERMI2B (AVX512-VBMI) here.
vbmi = bool(wbe_vbmi())
#: Activation codes (``workbench/routines/epilogue.py``) :func:`binary` computes besides a clamp.
ACTIVATIONS = (3, 4, 5, 6, 8, 9, 10, 11)

cdef enum:
    BLOCK = 16384   # elements of a row a job takes at most


cdef struct _LutCtx:
    const char* x
    char* y
    Py_ssize_t rows, width, xld, yld, blocks, per
    const void* table
    bint out_u8
    int vbmi


cdef void _lut_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _LutCtx* c = <_LutCtx*> ctx
    cdef Py_ssize_t job, r, j0, n
    for job in range(chunk * c.per, min((chunk + 1) * c.per, c.rows * c.blocks)):
        r, j0 = job // c.blocks, (job % c.blocks) * BLOCK
        n = min(<Py_ssize_t> BLOCK, c.width - j0)
        if c.out_u8:
            wbe_lut_u8(<const uint8_t*> (c.x + r * c.xld + j0), <uint8_t*> (c.y + r * c.yld + j0), n,
                       <const uint8_t*> c.table, c.vbmi)
        else:
            wbe_lut_f32(<const uint8_t*> (c.x + r * c.xld + j0), <float*> (c.y + r * c.yld) + j0, n,
                        <const float*> c.table)


def _rows(a, name, who, dtypes):
    if (not isinstance(a, np.ndarray) or a.dtype not in dtypes or a.ndim != 2 or a.strides[1] != a.itemsize
            or a.strides[0] < 0 or a.strides[0] % a.itemsize):
        raise ValueError(f"{who}: {name} must be a 2-D {'/'.join(str(np.dtype(d)) for d in dtypes)} array of rows "
                         f"with unit element stride, got {getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')} "
                         f"{getattr(a, 'strides', '')}")


def lut(x, out, table, int num_threads=1):
    """``out[r, j] = table[x[r, j]]``: uint8 ``x`` (rows, width), ``out`` of the same shape,
    uint8 with a uint8 ``table`` of 256 entries or float32 with a float32 one; rows may be spaced
    apart (a Concat's part of its output) but not overlap ``x``'s."""
    who = "eltwise_q8.lut"
    _rows(x, "x", who, (np.uint8,))
    _rows(out, "out", who, (np.uint8, np.float32))
    if out.shape != x.shape:
        raise ValueError(f"{who}: out {out.shape} differs from x {x.shape}")
    if (not isinstance(table, np.ndarray) or table.dtype != out.dtype or table.shape != (256,)
            or not table.flags.c_contiguous):
        raise ValueError(f"{who}: the table must be a contiguous {out.dtype} array of 256 entries, got "
                         f"{getattr(table, 'dtype', type(table))} {getattr(table, 'shape', '')}")
    if np.shares_memory(x, out) and (out.dtype != np.uint8 or x.ctypes.data != out.ctypes.data or x.strides != out.strides):
        raise ValueError(f"{who}: out overlaps x other than as the same array")
    cdef _LutCtx c
    c.rows, c.width = x.shape[0], x.shape[1]
    if c.rows == 0 or c.width == 0:
        return out
    c.x = <const char*> cnp.PyArray_DATA(<cnp.ndarray> x)
    c.y = <char*> cnp.PyArray_DATA(<cnp.ndarray> out)
    c.xld, c.yld = x.strides[0], out.strides[0]
    c.table = cnp.PyArray_DATA(<cnp.ndarray> table)
    c.out_u8, c.vbmi = out.dtype == np.uint8, vbmi
    c.blocks = (c.width + BLOCK - 1) // BLOCK
    c.per = wb_jobs_per_chunk(c.rows * c.blocks, min(c.width, <Py_ssize_t> BLOCK) // 4 + 1, num_threads)
    with nogil:
        wb_pool_run(_lut_chunk, &c, (c.rows * c.blocks + c.per - 1) // c.per, num_threads)
    return out


cdef struct _BinCtx:
    wbe_binary p
    Py_ssize_t blocks, jobs, per


cdef void _bin_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _BinCtx* c = <_BinCtx*> ctx
    cdef Py_ssize_t job, r, j0
    for job in range(chunk * c.per, min((chunk + 1) * c.per, c.jobs)):
        r, j0 = job // c.blocks, (job % c.blocks) * BLOCK
        wbe_binary_run(&c.p, r // c.p.n[1], r % c.p.n[1], j0, min(j0 + <Py_ssize_t> BLOCK, c.p.n[2]))


cdef class Binary:
    """A binary operation of uint8 ``a`` and ``b`` into ``out`` (``wb_eltwise_q8.h``), bound to
    its arrays and checked once.  ``dims``: the output's (up to) three dimensions as
    ``(size, a's stride, b's stride)`` in elements, the last stride 0 or 1 (a broadcast operand
    has 0); ``out`` C-contiguous of their product, uint8 or float32.  ``op``: ``"add"``
    (``ra``, ``rb`` each operand's scale over the output's), ``"mul"`` (``ra`` the product of
    the scales over the output's); ``za``, ``zb`` the zero points; ``zo``, the clamp ``lo``/``hi``
    in output units and ``act`` ``(code, p0, p1, scale)`` as :func:`gemm_q8.gemm` takes them."""

    cdef _BinCtx c
    cdef object refs

    def __init__(self, a, b, out, dims, op, float ra, float rb, int za, int zb, int zo=0, lo=None, hi=None, act=None):
        who = "eltwise_q8.Binary"
        for name, v in (("a", a), ("b", b)):
            if not isinstance(v, np.ndarray) or v.dtype != np.uint8:
                raise ValueError(f"{who}: {name} must be a uint8 array, got {getattr(v, 'dtype', type(v))}")
        if (not isinstance(out, np.ndarray) or out.dtype not in (np.uint8, np.float32) or not out.flags.c_contiguous
                or not out.flags.writeable):
            raise ValueError(f"{who}: out must be a writeable C-contiguous uint8 or float32 array")
        dims = [tuple(int(v) for v in d) for d in dims]
        if not 1 <= len(dims) <= 3 or any(len(d) != 3 for d in dims):
            raise ValueError(f"{who}: dims must be one to three (size, a stride, b stride) triples, got {dims!r}")
        dims = [(1, 0, 0)] * (3 - len(dims)) + dims
        total = 1
        for d in dims:
            total *= d[0]
        if min(d[0] for d in dims) < 1 or total != out.size or min(min(d[1], d[2]) for d in dims) < 0:
            raise ValueError(f"{who}: dims {dims} do not make out's {out.size} elements")
        if dims[2][1] not in (0, 1) or dims[2][2] not in (0, 1):
            raise ValueError(f"{who}: the last dimension's strides must be 0 or 1, got {dims[2]}")
        for name, v, k in (("a", a, 1), ("b", b, 2)):
            if not v.flags.c_contiguous or sum((d[0] - 1) * d[k] for d in dims) >= v.size:
                raise ValueError(f"{who}: {name} ({v.size} elements, C-contiguous) does not hold dims {dims}")
            if np.shares_memory(v, out) and (out.dtype != np.uint8 or v.ctypes.data != out.ctypes.data or v.shape != out.shape
                                             or any(d[k] != s for d, s in zip(dims, (dims[1][0] * dims[2][0], dims[2][0], 1)))):
                raise ValueError(f"{who}: out overlaps {name} other than as the same elements")
        if op not in ("add", "mul"):
            raise ValueError(f"{who}: op must be 'add' or 'mul', got {op!r}")
        if not (0 <= za <= 255 and 0 <= zb <= 255 and 0 <= zo <= 255):
            raise ValueError(f"{who}: zero points must lie in [0, 255], got {za}, {zb}, {zo}")
        if not (np.isfinite(ra) and np.isfinite(rb)):
            raise ValueError(f"{who}: the scale ratios must be finite, got {ra}, {rb}")
        lo = float(-np.inf if lo is None else lo)
        hi = float(np.inf if hi is None else hi)
        if not lo <= hi:
            raise ValueError(f"{who}: the clamp [{lo}, {hi}] is empty")
        cdef wbe_binary* p = &self.c.p
        p.act, p.ap0, p.ap1, p.amult, p.ainv = 0, 0.0, 0.0, 1.0, 1.0
        if act is not None:
            code, p0, p1, scale = int(act[0]), float(act[1]), float(act[2]), float(act[3])
            if code not in ACTIVATIONS or not (np.isfinite(scale) and scale > 0) or not (np.isfinite(p0) and np.isfinite(p1)):
                raise ValueError(f"{who}: the activation must be (code in {ACTIVATIONS}, finite p0, p1, a positive "
                                 f"finite scale), got {act!r}")
            p.act, p.ap0, p.ap1, p.amult, p.ainv = code, p0, p1, scale, 1.0 / scale
        for i in range(3):
            p.n[i], p.astr[i], p.bstr[i] = dims[i]
        p.a = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> a)
        p.b = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> b)
        p.op = WBE_ADD if op == "add" else WBE_MUL
        p.za, p.zb, p.ra, p.rb = za, zb, ra, rb
        p.out = cnp.PyArray_DATA(<cnp.ndarray> out)
        p.out_u8 = out.dtype == np.uint8
        p.zo, p.flo, p.fhi = zo, lo, hi
        p.qlo = float(min(max(np.rint(lo) + zo, 0), 255)) if np.isfinite(lo) else 0.0
        p.qhi = float(min(max(np.rint(hi) + zo, 0), 255)) if np.isfinite(hi) else 255.0
        self.c.blocks = (dims[2][0] + BLOCK - 1) // BLOCK
        self.c.jobs = dims[0][0] * dims[1][0] * self.c.blocks
        self.c.per = 1
        self.refs = (a, b, out)

    def __call__(self, int num_threads=1):
        cdef int nt = max(num_threads, 1)
        with nogil:
            self.c.per = wb_jobs_per_chunk(self.c.jobs, min(self.c.p.n[2], <Py_ssize_t> BLOCK), nt)
            wb_pool_run(_bin_chunk, &self.c, (self.c.jobs + self.c.per - 1) // self.c.per, nt)
