# isa-variants: avx512
# cython: language_level=3
"""Our own SGEMM (``sgemm_avx512.h``) and the 1x1 convolutions built on it, for the AVX-512 variant.

The environment caps OpenBLAS at its Haswell kernels; this module's ``_avx512`` build carries an
AVX-512 micro-kernel instead.  The baseline build compiles the same C with a scalar micro-kernel
and says so with ``available = False``: routines use only ``gemm512_avx512``.  The convolutions
of other kernels on the same SGEMM are ``conv_im2col512``'s, ConvTranspose's pixel shuffle is
``conv_shuffle512``'s; the argument checks they share, ``_gemm512_args.pxi``'s.

Work is split between threads by output pixels where there are enough of them: each thread starts
on one contiguous range of C's rows (NHWC pixels) and takes from the others' only when its own is
done (the shared pool, ``wb_pool.h``), so that the next layer's thread, which owns about
the same pixels, reads what its own core just wrote (in its L2) instead of pulling lines from the
other core (conv1 -> maxpool of ResNet-50: 0.25 -> 0.16 ms; the whole model 19.7 -> 18.6 ms).
Small outputs fall back to (row tile, column tile) jobs on a dynamic schedule
(``_gemm512_jobs.pxd``).  A is read in place (each thread packs only a last short strip, into its own buffer);
B is packed once per call (or ahead, for weights) and shared.  The fused epilogue (bias,
residual, ReLU/clip/leaky/hard sigmoid/hard swish, and sigmoid/tanh/SiLU/GELU through
``wb_vmath512.h``) is applied in registers before each block's store; PRelu runs as a pass over
each block right after it is written, while it is in cache.
Shapes are checked in the Python-visible functions before any ``nogil`` code.
"""

import numpy as np
from workbench._kernels.buffers import aligned_empty
cimport numpy as cnp

from _gemm512_jobs cimport (WB512_NATIVE, WB512_NR, Job, gemm_jobs, pack_b_par, wb512_abuf_floats,
                            wb512_epi_handles, wb512_packed_b_floats)
from conv_gemm cimport Epi
from wb_pool cimport wb_pool_import

include "_gemm512_args.pxi"

cnp.import_array()
wb_pool_import()

#: True when this build runs the AVX-512 micro-kernel (only the ``_avx512`` variant does).
available = bool(WB512_NATIVE)
#: Columns per packed panel (packed B holds ``k * ceil(n / NR) * NR`` floats).
NR = WB512_NR


def abuf_floats(int num_threads=1):
    """Floats of the A-packing scratch a call with ``num_threads`` threads needs."""
    return wb512_abuf_floats() * num_threads


def packed_b_floats(Py_ssize_t k, Py_ssize_t n):
    return wb512_packed_b_floats(k, n)


def pack_b(b, bint trans_b=False, int num_threads=1):
    """``op(B)`` (k, n) packed into panels for :func:`conv1x1_nhwc` / ``conv_im2col512.conv_im2col``;
    ``trans_b``: ``b`` is stored (n, k).  Returns a 1-D float32 array."""
    b = _array(b, "b", 2)
    _threads(num_threads)
    k, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    out = aligned_empty(max(wb512_packed_b_floats(k, n), 1), np.float32)
    cdef const float* bp = _ptr(b)
    cdef float* dp = _ptr(out)
    cdef Py_ssize_t kk = k, nn = n, ldb = b.shape[1]
    with nogil:
        pack_b_par(kk, nn, bp, ldb, trans_b, dp, num_threads)
    return out


def sgemm(a, b, c, bint trans_b=False, bint accumulate=False, int num_threads=1):
    """Row-major ``c (+)= a @ op(b)``: ``a`` (m, k), ``b`` (k, n) or (n, k) with ``trans_b``,
    ``c`` (m, n), all float32 and C-contiguous; ``c`` overwritten unless ``accumulate``.

    Returns
    -------
    ndarray
        ``c``.
    """
    a, b, c = _array(a, "a", 2), _array(b, "b", 2), _array(c, "c", 2, writeable=True)
    _threads(num_threads)
    m, k = a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if kb != k or c.shape != (m, n):
        raise ValueError(f"gemm512: a {a.shape} @ b{'^T' if trans_b else ''} {b.shape} does not give c {c.shape}")
    if _may_overlap(c, a) or _may_overlap(c, b):
        raise ValueError("gemm512: c overlaps an input")
    if m == 0 or n == 0:
        return c
    pb = aligned_empty(max(wb512_packed_b_floats(k, n), 1), np.float32)
    abufs = aligned_empty(abuf_floats(num_threads), np.float32)
    cdef Job j
    j.m, j.n, j.k, j.lda, j.ldc, j.ld_res = m, n, k, k, n, 0
    j.a, j.pb, j.c = _ptr(a), _ptr(pb), _ptr(c)
    j.accumulate, j.channel_is_row, j.e, j.res = accumulate, -1, NULL, NULL
    cdef const float* bp = _ptr(b)
    cdef float* pbp = _ptr(pb)
    cdef float* ab = _ptr(abufs)
    cdef Py_ssize_t ldb = b.shape[1]
    with nogil:
        pack_b_par(j.k, j.n, bp, ldb, trans_b, pbp, num_threads)
        gemm_jobs(&j, ab, num_threads)
    return c


cdef int _conv1x1_nhwc_job(Job* j, Epi* e, x, wp, bias, residual, out, int act, double p0, double p1,
                           slope, post, list keep, bint res_post=False) except -1:
    """Check a :func:`conv1x1_nhwc` call and fill its job (``j.e`` = ``e``); ``keep`` gets the
    arrays the job points into."""
    (x, ldx), (out, ldo) = _pixels(x, "input"), _pixels(out, "output", writeable=True)
    wp = _array(wp, "packed weights", 1)
    n, h, w, c = x.shape
    m = out.shape[3]
    ld_res = m
    if out.shape[:3] != (n, h, w):
        raise ValueError(f"gemm512: a 1x1 stride-1 conv of input {x.shape} gives (N, H, W) = {(n, h, w)}, "
                         f"output is {out.shape}")
    if wp.size < wb512_packed_b_floats(c, m):
        raise ValueError(f"gemm512: packed weights hold {wp.size} floats, {c}x{m} needs "
                         f"{wb512_packed_b_floats(c, m)}")
    if residual is not None:
        residual, ld_res = _pixels(residual, "residual")
        if residual.shape != out.shape:
            raise ValueError(f"gemm512: residual {residual.shape} must have the output's shape {out.shape}")
    _epi(e, m, bias, slope, act, p0, p1, post, res_post, wb512_epi_handles(act))
    cdef bint in_place = _in_place(out, residual, res_post)
    if in_place:
        residual = None
    _no_overlap(out, (x, wp, bias, residual, slope))
    j.m, j.n, j.k, j.lda, j.ldc, j.ld_res = n * h * w, m, c, ldx, ldo, ld_res
    j.a, j.pb, j.c = _ptr(x), _ptr(wp), _ptr(out)
    j.accumulate, j.channel_is_row, j.e, j.res = in_place, 0, e, _ptr(residual)
    keep.extend((x, wp, bias, residual, out, slope, post))
    return 0


cdef int _run_job(Job* j, int num_threads, scratch) except -1:
    if j.m == 0 or j.n == 0:
        return 0
    keep = []
    cdef float* ab = _floats(scratch, abuf_floats(num_threads), keep)
    with nogil:
        gemm_jobs(j, ab, num_threads)
    return 0


def conv1x1_scratch_bytes(int num_threads=1):
    """Bytes of the ``scratch`` that :func:`conv1x1_nhwc` needs with up to ``num_threads``
    threads: each thread's packed block of A."""
    return 4 * abuf_floats(max(num_threads, 1))


def conv1x1_nhwc(x, wp, bias, residual, out, int act=0, double p0=0, double p1=0, slope=None,
                 int num_threads=1, post=None, bint res_post=False, scratch=None):
    """1x1 stride-1 unpadded NHWC convolution ``out = act(x @ W^T + bias + residual)``.

    ``x`` (N, H, W, C), ``out`` (N, H, W, M); ``wp`` the weights (C, M) packed by :func:`pack_b`;
    ``bias``/``slope`` (M,) or None, ``residual`` as ``out`` or None, or ``out`` itself (the
    product is then added onto it in place); ``post`` None or (scale, shift), (M,) each:
    ``out = act(...) * scale + shift``.  ``res_post``: the residual is added last, after the
    activation (and the affine), and may not be ``out``.  ``scratch``: a workspace of at least
    :func:`conv1x1_scratch_bytes` (None: this call allocates one).  Returns ``out``.
    """
    _threads(num_threads)
    cdef Job j
    cdef Epi e
    _conv1x1_nhwc_job(&j, &e, x, wp, bias, residual, out, act, p0, p1, slope, post, [], res_post)
    _run_job(&j, num_threads, scratch)
    return out


cdef class Conv1x1Nhwc:
    """:func:`conv1x1_nhwc` on fixed arrays, checked once when made; each call
    ``(num_threads)`` runs the product on them (an executor's step on its own buffers, where the
    checks cost as much as a small layer's product)."""
    cdef Job j
    cdef Epi e
    cdef list keep
    cdef object scratch

    def __init__(self, x, wp, bias, residual, out, int act=0, double p0=0, double p1=0, slope=None, post=None,
                 bint res_post=False, scratch=None):
        self.keep = []
        _conv1x1_nhwc_job(&self.j, &self.e, x, wp, bias, residual, out, act, p0, p1, slope, post, self.keep,
                          res_post)
        self.scratch = scratch

    def __call__(self, int num_threads):
        _threads(num_threads)
        cdef Job j = self.j   # gemm_jobs records its partition in the job: a copy per call
        _run_job(&j, num_threads, self.scratch)


def conv1x1_nchw_scratch_bytes(Py_ssize_t c, Py_ssize_t pixels, int num_threads=1):
    """Bytes of the ``scratch`` that :func:`conv1x1_nchw` needs for ``c`` channels of ``pixels``
    pixels with up to ``num_threads`` threads: an image's packed pixels and the threads' packed A."""
    return 4 * (max(wb512_packed_b_floats(c, pixels), 1) + abuf_floats(max(num_threads, 1)))


def conv1x1_nchw(x, w, bias, residual, out, int act=0, double p0=0, double p1=0, slope=None,
                 int num_threads=1, bint res_post=False, scratch=None):
    """1x1 stride-1 unpadded NCHW convolution ``out[n] = act(W @ x[n] + bias + residual[n])``.

    ``x`` (N, C, H, W), ``w`` (M, C) (or (M, C, 1, 1)), ``out`` (N, M, H, W); each image's pixels
    are packed as B, then the jobs of that image run in parallel.  ``residual`` may be ``out``
    itself (added onto in place), unless ``res_post`` (added after the activation).  ``scratch``:
    at least :func:`conv1x1_nchw_scratch_bytes` (None: this call allocates one).  Returns ``out``.
    """
    x, out, w = _array(x, "input", 4), _array(out, "output", 4, writeable=True), _array(w, "weights")
    _threads(num_threads)
    n, c, h, wd = x.shape
    m = out.shape[1]
    if (out.shape[0], out.shape[2], out.shape[3]) != (n, h, wd):
        raise ValueError(f"gemm512: a 1x1 stride-1 conv of input {x.shape} gives {(n, m, h, wd)}, "
                         f"output is {out.shape}")
    if w.shape not in ((m, c), (m, c, 1, 1)):
        raise ValueError(f"gemm512: weights must have shape ({m}, {c}), got {w.shape}")
    if residual is not None and _array(residual, "residual").shape != out.shape:
        raise ValueError(f"gemm512: residual {residual.shape} must have the output's shape {out.shape}")
    cdef Epi e
    _epi(&e, m, bias, slope, act, p0, p1, None, res_post, wb512_epi_handles(act))
    cdef bint in_place = _in_place(out, residual, res_post)
    if in_place:
        residual = None
    _no_overlap(out, (x, w, bias, residual, slope))
    if out.size == 0:
        return out
    cdef Py_ssize_t p = h * wd, i
    cdef Py_ssize_t npb = max(wb512_packed_b_floats(c, p), 1)
    keep = []
    cdef float* work = _floats(scratch, npb + abuf_floats(num_threads), keep)
    cdef Job j
    j.m, j.n, j.k, j.lda, j.ldc, j.ld_res = m, p, c, c, p, p
    j.a, j.pb = _ptr(w), work
    j.accumulate, j.channel_is_row, j.e = in_place, 1, &e
    cdef const float* xp = _ptr(x)
    cdef float* op = _ptr(out)
    cdef const float* rp = _ptr(residual)
    cdef float* ab = work + npb
    cdef float* pbp = work
    cdef Py_ssize_t images = n, cc = c, mm = m
    with nogil:
        for i in range(images):
            pack_b_par(cc, p, xp + i * cc * p, p, 0, pbp, num_threads)
            j.c = op + i * mm * p
            j.res = rp + i * mm * p if rp != NULL else NULL
            gemm_jobs(&j, ab, num_threads)
    return out
