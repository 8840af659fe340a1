# isa-variants: avx512bf16
# cython: language_level=3
"""Max and average pools and the global pools of bfloat16 NHWC images (``wb_pool_bf16.h``): the
float32 pools' window tables (``pool._axis_tables``) and row kernel, on bfloat16 elements widened
to float32 in registers, each output rounded once.

Only the ``_avx512bf16`` build computes (``available``); arrays and shapes are checked here,
before any ``nogil`` code.  Arrays are bfloat16 (``ml_dtypes``), C-contiguous.
"""
import ml_dtypes
import threading

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint16_t

from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

from workbench._kernels.pool import _axis_tables

cnp.import_array()
wb_pool_import()

cdef extern from "wb_pool_bf16.h" nogil:
    int wbp_native()
    int wb_pool512_row_bf16(const uint16_t* x, uint16_t* y, Py_ssize_t b, Py_ssize_t oh, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t C, Py_ssize_t ldx, Py_ssize_t ldy, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t sh,
                            Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t pt, Py_ssize_t pl,
                            const int* kh_lo, const int* kh_hi, const int* kw_lo, const int* kw_hi,
                            const float* inv_h, const float* inv_w, int is_max)
    void wbp_global_part(const uint16_t* x, float* part, Py_ssize_t hw, Py_ssize_t C, Py_ssize_t b, Py_ssize_t p0,
                         Py_ssize_t p1, int is_max)
    void wbp_global_finish(const float* parts, Py_ssize_t nparts, uint16_t* y, Py_ssize_t hw, Py_ssize_t C,
                           int is_max)

#: True when this build computes (only the ``_avx512bf16`` variant does).
available = bool(wbp_native())
BF16 = np.dtype(ml_dtypes.bfloat16)

# Below this many elements of work handing chunks to other threads costs more than it saves.
cdef Py_ssize_t GRAIN = 32768


def set_grain(Py_ssize_t elements):
    """Set the work size below which kernels run on one thread; returns the previous one."""
    global GRAIN
    old, GRAIN = GRAIN, max(elements, 0)
    return old


cdef inline int _threads(Py_ssize_t work, int num_threads) noexcept:
    return 1 if work < GRAIN else max(num_threads, 1)


cdef inline void* _p(a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray> a)


def _image(a, what, writeable=False):
    if not available:
        raise RuntimeError("pool_bf16: this build does not compute (it needs the _avx512bf16 variant on a CPU "
                           "with AVX512-BF16)")
    if not isinstance(a, np.ndarray) or a.dtype != BF16 or a.ndim != 4:
        raise ValueError(f"pool_bf16: {what} must be a 4-D bfloat16 array, got "
                         f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    if not a.flags.c_contiguous:
        raise ValueError(f"pool_bf16: {what} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"pool_bf16: {what} is read-only")


cdef struct _RowsCtx:
    const uint16_t* x
    uint16_t* y
    Py_ssize_t H, W, C, OH, OW, sh, sw, dh, dw, pt, pl, jobs, group
    const int* kh_lo
    const int* kh_hi
    const int* kw_lo
    const int* kw_hi
    const float* inv_h
    const float* inv_w
    int is_max


cdef void _rows_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef const _RowsCtx* c = <const _RowsCtx*> ctx
    cdef Py_ssize_t job
    for job in range(i * c.group, min((i + 1) * c.group, c.jobs)):
        wb_pool512_row_bf16(c.x, c.y, job // c.OH, job % c.OH, c.H, c.W, c.C, c.C, c.C, c.OH, c.OW, c.sh, c.sw,
                            c.dh, c.dw, c.pt, c.pl, c.kh_lo, c.kh_hi, c.kw_lo, c.kw_hi, c.inv_h, c.inv_w, c.is_max)


cdef class Pool2dBf16:
    """A 2-D max or average pooling window over an (H, W) input giving (OH, OW), with its tables
    (the arguments of ``pool.Pool2d``); :meth:`nhwc` runs it.  Each output pixel folds its whole
    window: K^2 loads a pixel, which the 2x2 and 3x3 pools of CNNs favour over separable folds."""

    cdef readonly int H, W, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl
    cdef readonly bint is_max
    cdef cnp.ndarray kh_lo, kh_hi, kw_lo, kw_hi, inv_h, inv_w

    def __init__(self, in_hw, out_hw, kernel, strides, dilations, pads, bint is_max, bint count_include_pad=False):
        self.H, self.W = in_hw
        self.OH, self.OW = out_hw
        self.KH, self.KW = kernel
        self.sh, self.sw = strides
        self.dh, self.dw = dilations
        self.pt, self.pl = pads[0], pads[1]
        self.is_max = is_max
        if min(self.H, self.W, self.OH, self.OW, self.KH, self.KW, self.sh, self.sw, self.dh, self.dw) < 1:
            raise ValueError(f"Pool2dBf16: sizes, kernel, strides and dilations must be positive, got input "
                             f"{in_hw}, output {out_hw}, kernel {kernel}, strides {strides}, dilations {dilations}")
        self.kh_lo, self.kh_hi, _, _, self.inv_h = _axis_tables(self.H, self.OH, self.KH, self.sh, self.dh, pads[0],
                                                                 pads[2], count_include_pad)
        self.kw_lo, self.kw_hi, _, _, self.inv_w = _axis_tables(self.W, self.OW, self.KW, self.sw, self.dw, pads[1],
                                                                 pads[3], count_include_pad)

    def nhwc(self, x, y, int num_threads=1):
        """Pool ``x`` (N, H, W, C) into ``y`` (N, OH, OW, C), both bfloat16."""
        _image(x, "input")
        _image(y, "output", writeable=True)
        if x.shape[1:3] != (self.H, self.W) or tuple(y.shape) != (x.shape[0], self.OH, self.OW, x.shape[3]):
            raise ValueError(f"Pool2dBf16.nhwc: input {x.shape} and output {y.shape}; the window needs "
                             f"(N, {self.H}, {self.W}, C) -> (N, {self.OH}, {self.OW}, C)")
        if num_threads < 1:
            raise ValueError(f"Pool2dBf16.nhwc: num_threads must be >= 1, got {num_threads}")
        if not x.size:
            return y
        cdef _RowsCtx c
        c.x, c.y = <const uint16_t*> _p(x), <uint16_t*> _p(y)
        c.H, c.W, c.C, c.OH, c.OW = self.H, self.W, x.shape[3], self.OH, self.OW
        c.sh, c.sw, c.dh, c.dw, c.pt, c.pl = self.sh, self.sw, self.dh, self.dw, self.pt, self.pl
        c.kh_lo, c.kh_hi = <const int*> _p(self.kh_lo), <const int*> _p(self.kh_hi)
        c.kw_lo, c.kw_hi = <const int*> _p(self.kw_lo), <const int*> _p(self.kw_hi)
        c.inv_h, c.inv_w = <const float*> _p(self.inv_h), <const float*> _p(self.inv_w)
        c.is_max = self.is_max
        c.jobs = x.shape[0] * self.OH
        cdef int nt = _threads(x.size + y.size, num_threads)
        c.group = wb_jobs_per_chunk(c.jobs, self.OW * c.C * self.KH * self.KW, nt)
        with nogil:
            wb_pool_run(_rows_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)
        return y


_local = threading.local()   # global_pool_nhwc's partial results


cdef struct _GlobalCtx:
    const uint16_t* x
    uint16_t* y
    float* parts          # (N, chunks, C): each job's max or sum over its pixels
    Py_ssize_t hw, C, chunks, jobs
    int is_max


cdef void _global_chunk(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    cdef const _GlobalCtx* c = <const _GlobalCtx*> ctx
    cdef Py_ssize_t k = job % c.chunks
    wbp_global_part(c.x, c.parts + job * c.C, c.hw, c.C, job // c.chunks, k * c.hw // c.chunks,
                    (k + 1) * c.hw // c.chunks, c.is_max)


def global_pool_nhwc(x, y, bint is_max, int num_threads=1):
    """Mean or max over H and W of ``x`` (N, H, W, C) into ``y`` (N, 1, 1, C), both bfloat16.
    Each image's pixels are shared out in chunks (a 96-channel map's two blocks of channels gave
    one thread two thirds of it, and each read every line), their maxima or sums combined last."""
    _image(x, "input")
    _image(y, "output", writeable=True)
    if tuple(y.shape) != (x.shape[0], 1, 1, x.shape[3]):
        raise ValueError(f"global_pool_nhwc: input {x.shape} needs output {(x.shape[0], 1, 1, x.shape[3])}, got {y.shape}")
    if num_threads < 1:
        raise ValueError(f"global_pool_nhwc: num_threads must be >= 1, got {num_threads}")
    if not y.size:
        return y
    cdef _GlobalCtx c
    c.x, c.y, c.hw, c.C, c.is_max = <const uint16_t*> _p(x), <uint16_t*> _p(y), x.shape[1] * x.shape[2], x.shape[3], is_max
    cdef int nt = _threads(x.size, num_threads)
    cdef Py_ssize_t n = x.shape[0], b
    # about 3 jobs a thread over all the images, none of fewer than 4096 elements
    c.chunks = max(1, min(c.hw, min((3 * nt + n - 1) // n, x.size // n // 4096)))
    c.jobs = n * c.chunks
    parts = getattr(_local, "parts", None)
    if parts is None or parts.size < c.jobs * c.C:   # one buffer a Python thread, grown and reused
        parts = _local.parts = np.empty(c.jobs * c.C, np.float32)
    c.parts = <float*> _p(parts)
    with nogil:
        wb_pool_run(_global_chunk, &c, c.jobs, nt)
        for b in range(n):
            wbp_global_finish(c.parts + b * c.chunks * c.C, c.chunks, c.y + b * c.C, c.hw, c.C, c.is_max)
    return y
