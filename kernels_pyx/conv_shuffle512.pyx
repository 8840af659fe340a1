# isa-variants: avx512
# cython: language_level=3
"""ConvTranspose with kernel == stride, no padding, group 1, NHWC, on our AVX-512 SGEMM
(``gemm512``'s): output row ``i * KH + kh`` is input row ``i`` times kernel row ``kh``'s weights,
(C, KW * M) packed on their own, a GEMM whose C rows (the input pixels) lie KW * M apart in that
output row; each is written in place with the bias and activation fused, with no column buffer
to copy out.  Where all KH * KW * M columns fit one 32-column panel (a head's last, 1-channel
layer) the KH products would each fill a few lanes of the same panel: there one GEMM of all the
columns goes to the thread's scratch and its runs are copied out (``narrow``).  Like
``gemm512``, only the ``_avx512`` build runs the AVX-512 kernel (``available``).  Shapes are
checked (``_gemm512_args``) before any ``nogil`` code.
"""

cimport numpy as cnp
from workbench._kernels.buffers import aligned_empty

from _gemm512_jobs cimport (WB512_NATIVE, WB512_NR, Job, _rows, pack_b_par, wb512_abuf_floats, wb512_epi_handles,
                            wb512_packed_b_floats)
from conv_gemm cimport Epi
from wb_pool cimport wb_pool_import, wb_pool_run

include "_gemm512_args.pxi"

cnp.import_array()
wb_pool_import()

#: True when this build runs the AVX-512 micro-kernel (only the ``_avx512`` variant does).
available = bool(WB512_NATIVE)


cdef inline bint _narrow(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t m) noexcept nogil:
    """Whether all the kernel's columns fit one panel: one GEMM, then a copy (see the module)."""
    return kh > 1 and kh * kw * m <= WB512_NR


cdef void _narrow_row(const float* x, const float* wp, float* out, const Epi* e, float* cols, float* abuf,
                      Py_ssize_t row, Py_ssize_t W, Py_ssize_t C, Py_ssize_t M, Py_ssize_t KH,
                      Py_ssize_t KW) noexcept nogil:
    """Input row ``row`` times all KH * KW * M columns into ``cols`` (W rows), then each (kh,
    pixel) run of KW * M floats to its place in output row ``row * KH + kh``."""
    cdef Job j
    cdef Py_ssize_t ld = KH * KW * M, run = KW * M, kh, p, q
    cdef float* orow
    j.m, j.n, j.k, j.lda, j.ldc, j.ld_res = W, ld, C, C, ld, 0
    j.a, j.pb, j.c = x + row * W * C, wp, cols
    j.accumulate, j.channel_is_row, j.e, j.res = 0, 0, e, NULL
    _rows(&j, abuf, 0, W)
    for kh in range(KH):
        orow = out + (row * KH + kh) * W * run
        for p in range(W):
            for q in range(run):
                orow[p * run + q] = cols[p * ld + kh * run + q]


cdef void _shuffle_row(const float* x, const float* wp, float* out, const Epi* e, float* abuf, Py_ssize_t row,
                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t M, Py_ssize_t KH, Py_ssize_t KW,
                       Py_ssize_t per) noexcept nogil:
    """Input row ``row`` (image-major) of W pixels times each kernel row's packed weights (``per``
    floats apart), into output rows ``row * KH + kh`` (the KW taps of a pixel are KW * M
    consecutive floats there, so each is a GEMM with C's rows KW * M apart), epilogue fused."""
    cdef Job j
    cdef Py_ssize_t run = KW * M, kh
    j.m, j.n, j.k, j.lda, j.ldc, j.ld_res = W, run, C, C, run, 0
    j.a = x + row * W * C
    j.accumulate, j.channel_is_row, j.e, j.res = 0, 0, e, NULL
    for kh in range(KH):
        j.pb, j.c = wp + kh * per, out + (row * KH + kh) * W * run
        _rows(&j, abuf, 0, W)


def packed_floats(Py_ssize_t c, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t m):
    """Floats of ``c`` x (``kh`` x ``kw``) x ``m`` weights packed by :func:`pack`."""
    if _narrow(kh, kw, m):
        return wb512_packed_b_floats(c, kh * kw * m)
    return kh * wb512_packed_b_floats(c, kw * m)


def pack(w, int num_threads=1):
    """float32 weights ``w`` (C, KH, KW, M) packed for :func:`conv_transpose_shuffle_nhwc`: KH
    matrices, kernel row kh's (C, KW * M), packed one after the other; or, ``narrow``, the one
    (C, KH * KW * M) matrix."""
    w = _array(w, "weights", 4)
    _threads(num_threads)
    cdef Py_ssize_t c = w.shape[0], kh = w.shape[1], run = w.shape[2] * w.shape[3], r
    cdef Py_ssize_t per = wb512_packed_b_floats(c, run)
    if _narrow(kh, w.shape[2], w.shape[3]):
        kh, run, per = 1, kh * run, wb512_packed_b_floats(c, kh * run)
    out = aligned_empty(max(kh * per, 1), np.float32)
    cdef const float* src = _ptr(w)
    cdef float* dst = _ptr(out)
    with nogil:
        for r in range(kh):   # row kh of every input channel: a (C, KW * M) matrix, rows KH * KW * M apart
            pack_b_par(c, run, src + r * run, kh * run, False, dst + r * per, num_threads)
    return out


def shuffle_scratch_bytes(Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t m, int num_threads=1):
    """Bytes of the ``scratch`` that :func:`conv_transpose_shuffle_nhwc` needs for input rows of
    ``w`` pixels, a ``kh`` x ``kw`` kernel and ``m`` outputs with up to ``num_threads`` threads:
    each thread's A-packing buffer (and, ``narrow``, its GEMM's columns of a row)."""
    return 4 * (wb512_abuf_floats() + (w * kh * kw * m if _narrow(kh, kw, m) else 0)) * max(num_threads, 1)


def conv_transpose_shuffle_nhwc(x, wp, out, bias, int kh, int kw, int act=0, double p0=0, double p1=0,
                                slope=None, int num_threads=1, scratch=None):
    """ConvTranspose with kernel == stride (``kh`` x ``kw``), no padding, group 1, NHWC:
    ``out (N, H*kh, W*kw, M)`` from ``x (N, H, W, C)`` and ``wp``, the weights (C, kh, kw, M)
    packed by :func:`pack`.  ``bias`` and ``slope`` (PRelu) are expanded per GEMM column, (kw*M,)
    in (kw, m) order each (M's repeated kw times), or None.  ``scratch``: at least
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
    cdef bint narrow = _narrow(kh, kw, m)
    cdef Py_ssize_t run = kw * m, per = wb512_packed_b_floats(c, run)
    if wp.size != max(packed_floats(c, kh, kw, m), 1):
        raise ValueError(f"gemm512: packed weights hold {wp.size} floats; {c} input channels, a {kh}x{kw} "
                         f"kernel and {m} outputs need {packed_floats(c, kh, kw, m)}")
    cdef Epi e
    # per GEMM column: (kw, m) in place; (kh, kw, m) when narrow, so M's values repeated kh times more
    if narrow and bias is not None:
        bias = np.tile(_array(bias, "bias", 1), kh)
    if narrow and slope is not None:
        slope = np.tile(_array(slope, "slope", 1), kh)
    _epi(&e, kh * run if narrow else run, bias, slope, act, p0, p1, None, False, wb512_epi_handles(act))
    _no_overlap(out, (x, wp, bias, slope))
    if out.size == 0 or x.size == 0:
        out[...] = 0
        return out
    cdef _ShuffleCtx job
    job.per = wb512_abuf_floats() + (w * kh * run if narrow else 0)
    job.narrow = narrow
    keep = []
    job.buf = _floats(scratch, job.per * max(1, num_threads), keep)
    job.x, job.wp, job.out, job.e = _ptr(x), _ptr(wp), _ptr(out), &e
    job.H, job.W, job.C, job.M, job.KH, job.KW, job.wper = h, w, c, m, kh, kw, per
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
    Py_ssize_t per, wper, H, W, C, M, KH, KW
    bint narrow


cdef void _shuffle_chunk(void* ctx, Py_ssize_t r, int slot) noexcept nogil:
    cdef _ShuffleCtx* c = <_ShuffleCtx*> ctx
    cdef float* b = c.buf + slot * c.per
    if c.narrow:
        _narrow_row(c.x, c.wp, c.out, c.e, b + wb512_abuf_floats(), b, r, c.W, c.C, c.M, c.KH, c.KW)
    else:
        _shuffle_row(c.x, c.wp, c.out, c.e, b, r, c.H, c.W, c.C, c.M, c.KH, c.KW, c.wper)
