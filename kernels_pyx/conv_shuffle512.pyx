# isa-variants: avx512
# cython: language_level=3
"""ConvTranspose with kernel == stride, no padding, group 1, NHWC, on our AVX-512 SGEMM
(``gemm512``'s): one GEMM per input row with the bias and activation fused per column, then a
pixel shuffle that copies each (kernel row, pixel) run to its place in the output.  Like
``gemm512``, only the ``_avx512`` build runs the AVX-512 kernel (``available``).  Shapes are
checked (``_gemm512_args``) before any ``nogil`` code.
"""

cimport numpy as cnp
from libc.string cimport memcpy

from _gemm512_jobs cimport WB512_NATIVE, Job, _rows, wb512_abuf_floats, wb512_epi_handles, wb512_packed_b_floats
from conv_gemm cimport Epi
from wb_pool cimport wb_pool_import, wb_pool_run

include "_gemm512_args.pxi"

cnp.import_array()
wb_pool_import()

#: True when this build runs the AVX-512 micro-kernel (only the ``_avx512`` variant does).
available = bool(WB512_NATIVE)


cdef void _shuffle_row(const float* x, const float* wp, float* out, const Epi* e, float* cols, float* abuf,
                       Py_ssize_t row, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t M,
                       Py_ssize_t KH, Py_ssize_t KW) noexcept nogil:
    """Input row ``row`` (image-major) of W pixels: its GEMM (W x KH*KW*M, epilogue fused with the
    bias and slope expanded per column), then each (kh, pixel) run of KW*M floats to its place in
    output row ``i * KH + kh`` (KW == stride: the runs of one output row are contiguous)."""
    cdef Job j
    cdef Py_ssize_t n = row // H, i = row % H, OW = W * KW, ld = KH * KW * M, run = KW * M, kh, p, q
    cdef float* orow
    cdef const float* src
    j.m, j.n, j.k, j.lda, j.ldc, j.ld_res = W, ld, C, C, ld, 0
    j.a, j.pb, j.c = x + row * W * C, wp, cols
    j.accumulate, j.channel_is_row, j.e, j.res = 0, 0, e, NULL
    _rows(&j, abuf, 0, W)
    for kh in range(KH):
        orow = out + ((n * H + i) * KH + kh) * OW * M
        if run >= 16:
            for p in range(W):
                memcpy(orow + p * run, cols + p * ld + kh * run, run * sizeof(float))
        else:   # a few floats per pixel (a 1-channel head): a call per run would cost more than the copy
            for p in range(W):
                src = cols + p * ld + kh * run
                for q in range(run):
                    orow[p * run + q] = src[q]


def shuffle_scratch_bytes(Py_ssize_t w, Py_ssize_t cols, int num_threads=1):
    """Bytes of the ``scratch`` that :func:`conv_transpose_shuffle_nhwc` needs for input rows of
    ``w`` pixels and ``cols`` = kh*kw*M GEMM columns with up to ``num_threads`` threads."""
    return 4 * (w * cols + wb512_abuf_floats()) * max(num_threads, 1)


def conv_transpose_shuffle_nhwc(x, wp, out, bias, int kh, int kw, int act=0, double p0=0, double p1=0,
                                slope=None, int num_threads=1, scratch=None):
    """ConvTranspose with kernel == stride (``kh`` x ``kw``), no padding, group 1, NHWC:
    ``out (N, H*kh, W*kw, M)`` from ``x (N, H, W, C)`` and ``wp``, the weights (C, kh, kw, M)
    packed by ``gemm512.pack_b`` as a (C, kh*kw*M) matrix.  ``bias`` and ``slope`` (PRelu) are
    expanded per GEMM column: (kh*kw*M,) each, or None.  ``scratch``: at least
    :func:`shuffle_scratch_bytes` (None: this call allocates one).  Returns ``out``."""
    x, out = _array(x, "input", 4), _array(out, "output", 4, writeable=True)
    wp = _array(wp, "packed weights", 1)
    _threads(num_threads)
    n, h, w, c = x.shape
    if kh < 1 or kw < 1:
        raise ValueError(f"gemm512: kernel {kh}x{kw} must be positive")
    m = out.shape[3]
    if out.shape[:3] != (n, h * kh, w * kw):
        raise ValueError(f"gemm512: a {kh}x{kw} stride-{kh}x{kw} ConvTranspose of {x.shape} gives "
                         f"{(n, h * kh, w * kw, m)}, output is {out.shape}")
    ld = kh * kw * m
    if wp.size < wb512_packed_b_floats(c, ld):
        raise ValueError(f"gemm512: packed weights hold {wp.size} floats, {c}x{ld} needs "
                         f"{wb512_packed_b_floats(c, ld)}")
    cdef Epi e
    _epi(&e, ld, bias, slope, act, p0, p1, None, False, wb512_epi_handles(act))
    _no_overlap(out, (x, wp, bias, slope))
    if out.size == 0 or x.size == 0:
        out[...] = 0
        return out
    cdef _ShuffleCtx job
    job.per = w * ld + wb512_abuf_floats()
    keep = []
    job.buf = _floats(scratch, job.per * max(1, num_threads), keep)
    job.x, job.wp, job.out, job.e = _ptr(x), _ptr(wp), _ptr(out), &e
    job.H, job.W, job.C, job.M, job.KH, job.KW = h, w, c, m, kh, kw
    cdef Py_ssize_t rows = n * h
    with nogil:
        wb_pool_run(_shuffle_chunk, &job, rows, num_threads)
    return out


cdef struct _ShuffleCtx:
    const float* x
    const float* wp
    float* out
    const Epi* e
    float* buf
    Py_ssize_t per, H, W, C, M, KH, KW


cdef void _shuffle_chunk(void* ctx, Py_ssize_t r, int slot) noexcept nogil:
    cdef _ShuffleCtx* c = <_ShuffleCtx*> ctx
    cdef float* b = c.buf + slot * c.per
    _shuffle_row(c.x, c.wp, c.out, c.e, b, b + c.W * c.KH * c.KW * c.M, r, c.H, c.W, c.C, c.M, c.KH, c.KW)
