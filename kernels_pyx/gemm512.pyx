# isa-variants: avx512
# cython: language_level=3
"""Our own SGEMM (``sgemm_avx512.h``) and the 1x1 convolutions built on it, for the AVX-512 variant.

The environment caps OpenBLAS at its Haswell kernels; this module's ``_avx512`` build carries an
AVX-512 micro-kernel instead.  The baseline build compiles the same C with a scalar micro-kernel
and says so with ``available = False``: routines use only ``gemm512_avx512``.

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
cimport numpy as cnp
from libc.string cimport memcpy

from _gemm512_jobs cimport (IM2COL_PIXELS, IM2COL_ROWS, WB512_NATIVE, WB512_NR, Job, _im2col_nchw_job, _rows,
                            im2col_nhwc_pixels, _im2col_whole, _whole,
                            gemm_jobs, pack_b_par, wb512_abuf_floats, wb512_epi_handles, wb512_packed_b_floats)
from _implicit512 cimport _implicit_ok, implicit_span
from conv_gemm cimport ACT_RUN_LAST, Epi, Geo, _imin
from wb_pool cimport wb_pool_import, wb_pool_run

from workbench._kernels.checks import scratch_array
from workbench._kernels.conv_gemm import pixel_rows

cnp.import_array()
wb_pool_import()

#: True when this build runs the AVX-512 micro-kernel (only the ``_avx512`` variant does).
available = bool(WB512_NATIVE)
#: Columns per packed panel (packed B holds ``k * ceil(n / NR) * NR`` floats).
NR = WB512_NR


def _array(a, what, ndim=None, writeable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"gemm512: {what} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"gemm512: {what} must be float32, got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"gemm512: {what} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"gemm512: {what} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"gemm512: {what} is read-only")
    return a


def _pixels(a, what, writeable=False):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        _array(a, what, 4, writeable)   # the TypeError naming what it is
    return pixel_rows(a, f"gemm512: {what}", writeable)


cdef float* _ptr(a):
    return NULL if a is None else <float*> cnp.PyArray_DATA(<cnp.ndarray> a)


def _threads(int num_threads):
    if num_threads < 1:
        raise ValueError(f"gemm512: num_threads must be >= 1, got {num_threads}")
    return num_threads


def abuf_floats(int num_threads=1):
    """Floats of the A-packing scratch a call with ``num_threads`` threads needs."""
    return wb512_abuf_floats() * num_threads


def packed_b_floats(Py_ssize_t k, Py_ssize_t n):
    return wb512_packed_b_floats(k, n)


def pack_b(b, bint trans_b=False, int num_threads=1):
    """``op(B)`` (k, n) packed into panels for :func:`conv1x1_nhwc` / :func:`conv_im2col`;
    ``trans_b``: ``b`` is stored (n, k).  Returns a 1-D float32 array."""
    b = _array(b, "b", 2)
    _threads(num_threads)
    k, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    out = np.empty(max(wb512_packed_b_floats(k, n), 1), np.float32)
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
    pb = np.empty(max(wb512_packed_b_floats(k, n), 1), np.float32)
    abufs = np.empty(abuf_floats(num_threads), np.float32)
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


cdef int _epi(Epi* e, Py_ssize_t m, bias, slope, int act, double p0, double p1, post=None,
              bint res_post=False) except -1:
    """Fill ``e``; ``post``: None or (scale, shift), (m,) each, applied after the activation (in
    the register epilogue, so only with an activation it handles, codes 1 to 5)."""
    if bias is not None and _array(bias, "bias").shape != (m,):
        raise ValueError(f"gemm512: bias must have shape ({m},), got {bias.shape}")
    if not 0 <= act <= ACT_RUN_LAST:
        raise ValueError(f"gemm512: unknown activation code {act}")
    if act == 7 and (slope is None or _array(slope, "slope").shape != (m,)):
        raise ValueError(f"gemm512: PRelu needs a float32 slope of shape ({m},)")
    e.bias, e.slope = _ptr(bias), _ptr(slope if act == 7 else None)
    e.res, e.act, e.p0, e.p1 = NULL, act, p0, p1
    e.post_scale = e.post_shift = NULL
    e.res_post = res_post
    if post is not None:
        scale, shift = post
        if _array(scale, "post scale").shape != (m,) or _array(shift, "post shift").shape != (m,):
            raise ValueError(f"gemm512: the post-activation scale and shift must have shape ({m},), got "
                             f"{scale.shape} and {shift.shape}")
        if not wb512_epi_handles(act):
            raise ValueError(f"gemm512: a post-activation affine needs an activation the register epilogue "
                             f"runs (codes 0 to 5), got {act}")
        e.post_scale, e.post_shift = _ptr(scale), _ptr(shift)
    return 0


cdef bint _may_overlap(cnp.ndarray a, cnp.ndarray b):
    """``np.may_share_memory`` (bounds overlap) without its call overhead for contiguous arrays:
    it ran six times per layer per inference, a tenth of a small model's run."""
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b)):
        return np.shares_memory(a, b)   # exact: channel slices of one buffer interleave
    cdef char* pa = <char*> cnp.PyArray_DATA(a)
    cdef char* pb = <char*> cnp.PyArray_DATA(b)
    cdef Py_ssize_t na = cnp.PyArray_NBYTES(a), nb = cnp.PyArray_NBYTES(b)
    return na > 0 and nb > 0 and pa < pb + nb and pb < pa + na


def _no_overlap(out, *others):
    for o in others:
        if o is not None and _may_overlap(out, o):
            raise ValueError("gemm512: the output overlaps an input")


def _in_place(out, residual, bint res_post=False):
    """Whether ``residual`` is ``out`` itself (same memory, shape and strides): the product is
    then accumulated onto it, which saves reading one tensor and fetching the other for
    writing (refused for a residual added after the activation).  Any other overlap is refused
    by :func:`_no_overlap`."""
    same = (residual is not None and residual.shape == out.shape and residual.strides == out.strides
            and residual.__array_interface__["data"][0] == out.__array_interface__["data"][0])
    if same and res_post:
        raise ValueError("gemm512: a residual added after the activation cannot be the output itself")
    return same


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
    _epi(e, m, bias, slope, act, p0, p1, post, res_post)
    cdef bint in_place = _in_place(out, residual, res_post)
    if in_place:
        residual = None
    _no_overlap(out, x, wp, bias, residual, slope)
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
    _epi(&e, m, bias, slope, act, p0, p1, None, res_post)
    cdef bint in_place = _in_place(out, residual, res_post)
    if in_place:
        residual = None
    _no_overlap(out, x, w, bias, residual, slope)
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


def im2col_scratch_floats(bint nhwc, Py_ssize_t kg, int num_threads=1, Py_ssize_t n=0, Py_ssize_t p=0,
                          Py_ssize_t m=0):
    """Floats of the per-call scratch of :func:`conv_im2col` for ``n`` images of ``p`` output
    pixels and ``m`` channels (column and packing buffers, per thread or for the whole output)."""
    if _whole(nhwc, n, p, kg, m, num_threads):
        if nhwc:
            return n * p * kg + wb512_abuf_floats() * num_threads
        return p * kg + wb512_packed_b_floats(kg, p) + wb512_abuf_floats() * num_threads
    if nhwc:
        per = IM2COL_ROWS * kg + wb512_abuf_floats()
    else:
        per = IM2COL_PIXELS * kg + wb512_packed_b_floats(kg, IM2COL_PIXELS) + wb512_abuf_floats()
    return per * num_threads


def conv_im2col_scratch_bytes(bint nhwc, Py_ssize_t kg, Py_ssize_t m, Py_ssize_t n, Py_ssize_t p, bint implicit,
                              int num_threads=1):
    """Bytes of the ``scratch`` that :func:`conv_im2col` needs with up to ``num_threads`` threads
    for depth ``kg``, ``m`` output channels and ``n`` images of ``p`` output pixels."""
    if implicit:
        return 4 * (IM2COL_ROWS * kg + m) * max(num_threads, 1)
    return 4 * max(im2col_scratch_floats(nhwc, kg, t, n, p, m) for t in range(1, max(num_threads, 1) + 1))


cdef float* _floats(scratch, Py_ssize_t need, list keep) except NULL:
    """``need`` floats of the caller's ``scratch``, or (None) of a new array kept in ``keep``."""
    buf = scratch_array(scratch, 4 * need, "gemm512")
    keep.append(buf)
    return <float*> cnp.PyArray_DATA(<cnp.ndarray> buf)


def conv_im2col(bint nhwc, x, w, bias, residual, out, kernel, strides, dilations, pads, int act=0,
                double p0=0, double p1=0, slope=None, int num_threads=1, bint implicit=False, post=None,
                bint res_post=False, scratch=None):
    """Group-1 convolution by im2col on our SGEMM, either layout.

    ``x`` (N, C, H, W) or (N, H, W, C), ``out`` likewise; ``w`` for NCHW the weights (M, C*KH*KW),
    for NHWC ``pack_b`` of the weights (KH*KW*C, M) ordered (ki, kj, channel).  ``pads`` are
    (top, left, bottom, right).  ``implicit`` (NHWC, unit horizontal dilation): no im2col
    buffer where the taps lie inside the input; the GEMM reads them in place, one output row
    per job.  ``post`` and ``res_post`` as for :func:`conv1x1_nhwc`.  ``scratch``: a workspace of
    at least :func:`conv_im2col_scratch_bytes` (None: this call allocates one).  Returns ``out``.
    """
    cdef Geo g
    cdef Epi e
    _threads(num_threads)
    _im2col_init(&g, &e, nhwc, x, w, bias, residual, out, kernel, strides, dilations, pads, act, p0, p1, slope,
                 implicit, post, [], res_post)
    _im2col_go(&g, &e, nhwc, implicit, x, w, out, num_threads, scratch)
    return out


cdef class ConvIm2col:
    """:func:`conv_im2col` on fixed arrays, checked once when made; each call ``(num_threads)``
    runs the convolution on them (an executor's step on its own buffers)."""
    cdef Geo g
    cdef Epi e
    cdef bint nhwc, implicit
    cdef object x, w, out, scratch
    cdef list keep

    def __init__(self, bint nhwc, x, w, bias, residual, out, kernel, strides, dilations, pads, int act=0,
                 double p0=0, double p1=0, slope=None, bint implicit=False, post=None, bint res_post=False,
                 scratch=None):
        self.keep = []
        _im2col_init(&self.g, &self.e, nhwc, x, w, bias, residual, out, kernel, strides, dilations, pads, act,
                     p0, p1, slope, implicit, post, self.keep, res_post)
        self.nhwc, self.implicit, self.x, self.w, self.out, self.scratch = nhwc, implicit, x, w, out, scratch

    def __call__(self, int num_threads):
        _threads(num_threads)
        _im2col_go(&self.g, &self.e, self.nhwc, self.implicit, self.x, self.w, self.out, num_threads, self.scratch)


cdef int _im2col_init(Geo* gp, Epi* e, bint nhwc, x, w, bias, residual, out, kernel, strides, dilations, pads,
                      int act, double p0, double p1, slope, bint implicit, post, list keep,
                      bint res_post=False) except -1:
    """Check a :func:`conv_im2col` call and fill its geometry and epilogue."""
    cdef Geo g
    w = _array(w, "weights")
    if nhwc:   # channel slices of wider buffers (Concat parts, Split views); implicit reads whole pixels
        x, g.ldx = (_array(x, "input", 4), x.shape[3]) if implicit else _pixels(x, "input")
        out, g.ldo = _pixels(out, "output", writeable=True)
        (g.n, g.h, g.w, g.c), (on, g.oh, g.ow, g.m) = x.shape, out.shape
    else:
        x, out = _array(x, "input", 4), _array(out, "output", 4, writeable=True)
        (g.n, g.c, g.h, g.w), (on, g.m, g.oh, g.ow) = x.shape, out.shape
        g.ldo, g.ldx = g.m, g.c
    g.kh, g.kw = kernel
    g.sh, g.sw = strides
    g.dh, g.dw = dilations
    g.pt, g.pl, pb_, pr = pads
    if min(g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) < 1 or min(g.pt, g.pl, pb_, pr) < 0 or g.c < 1:
        raise ValueError(f"gemm512: bad geometry kernel {kernel} strides {strides} dilations {dilations} "
                         f"pads {pads} for input {x.shape}")
    g.g, g.cg, g.mg = 1, g.c, g.m
    g.kg = g.c * g.kh * g.kw
    oh = (g.h + g.pt + pb_ - (g.kh - 1) * g.dh - 1) // g.sh + 1
    ow = (g.w + g.pl + pr - (g.kw - 1) * g.dw - 1) // g.sw + 1
    if on != g.n or (oh, ow) != (g.oh, g.ow) or oh <= 0 or ow <= 0:
        raise ValueError(f"gemm512: input {x.shape} with this kernel/strides/pads gives {g.n} images of "
                         f"{oh}x{ow} pixels, but the output is {out.shape}")
    g.p = g.oh * g.ow
    if nhwc:
        if w.ndim != 1 or w.size < wb512_packed_b_floats(g.kg, g.m):
            raise ValueError(f"gemm512: NHWC weights must be pack_b of ({g.kg}, {g.m}), got {w.shape}")
    elif w.shape != (g.m, g.kg):
        raise ValueError(f"gemm512: weights must have shape ({g.m}, {g.kg}), got {w.shape}")
    if residual is not None and _array(residual, "residual").shape != out.shape:
        raise ValueError(f"gemm512: residual {residual.shape} must have the output's shape {out.shape}")
    if implicit and not (nhwc and _implicit_ok(&g)):
        raise ValueError(f"gemm512: implicit GEMM needs NHWC and unit horizontal dilation, got "
                         f"{'NHWC' if nhwc else 'NCHW'} with dilations {dilations}")
    if post is not None and not nhwc:
        raise ValueError("gemm512: a post-activation affine is for NHWC convolutions")
    _epi(e, g.m, bias, slope, act, p0, p1, post, res_post)
    e.res = _ptr(residual)
    _no_overlap(out, x, w, bias, residual, slope)
    gp[0] = g
    keep.extend((x, w, bias, residual, out, slope, post))
    return 0


cdef _im2col_go(Geo* gp, Epi* e, bint nhwc, bint implicit, x, w, out, int num_threads, scratch):
    """Run a convolution :func:`_im2col_init` checked, with ``num_threads`` threads."""
    cdef Geo g = gp[0]   # the jobs below point at this copy
    if g.n * g.p * g.m == 0:
        return
    if implicit:
        _conv_implicit(&g, x, w, out, e, num_threads, scratch)
        return
    keep = []
    cdef float* bp = _floats(scratch, im2col_scratch_floats(nhwc, g.kg, num_threads, g.n, g.p, g.m), keep)
    cdef const float* xp = _ptr(x)
    cdef const float* wp = _ptr(w)
    cdef float* op = _ptr(out)
    cdef Py_ssize_t per = im2col_scratch_floats(nhwc, g.kg, 1), tiles
    cdef Py_ssize_t ncols = (IM2COL_ROWS if nhwc else IM2COL_PIXELS) * g.kg
    cdef Py_ssize_t npb = 0 if nhwc else wb512_packed_b_floats(g.kg, IM2COL_PIXELS)
    cdef bint nh = nhwc
    if nhwc:
        tiles = (g.n * g.p + IM2COL_ROWS - 1) // IM2COL_ROWS
    else:
        tiles = g.n * ((g.p + IM2COL_PIXELS - 1) // IM2COL_PIXELS)
    cdef int nt = num_threads
    if _whole(nhwc, g.n, g.p, g.kg, g.m, num_threads):
        with nogil:
            _im2col_whole(&g, nh, xp, wp, op, e, bp, bp + (g.n * g.p * g.kg if nh else g.p * g.kg),
                          bp + (g.n * g.p * g.kg if nh else g.p * g.kg + wb512_packed_b_floats(g.kg, g.p)), nt)
        return
    cdef _ConvCtx c
    c.g, c.x, c.w, c.out, c.e, c.buf, c.per, c.ncols, c.npb = &g, xp, wp, op, e, bp, per, ncols, npb
    with nogil:
        wb_pool_run(_im2col_nhwc_chunk if nh else _im2col_nchw_chunk, &c, tiles, nt)


cdef struct _ConvCtx:
    const Geo* g
    const float* x
    const float* w
    float* out
    const Epi* e
    float* buf
    Py_ssize_t per, ncols, npb   # scratch floats a thread: columns, then packed B
    Py_ssize_t span, cparts, cw  # implicit GEMM: pixels a job; column parts of cw channels


cdef void _im2col_nhwc_chunk(void* ctx, Py_ssize_t t, int slot) noexcept nogil:
    cdef _ConvCtx* c = <_ConvCtx*> ctx
    cdef float* b = c.buf + slot * c.per
    im2col_nhwc_pixels(c.g, c.x, c.w, c.out, c.e, b, b + c.ncols, t * IM2COL_ROWS,
                       _imin(c.g.n * c.g.p, (t + 1) * IM2COL_ROWS))


cdef void _im2col_nchw_chunk(void* ctx, Py_ssize_t t, int slot) noexcept nogil:
    cdef _ConvCtx* c = <_ConvCtx*> ctx
    cdef float* b = c.buf + slot * c.per
    _im2col_nchw_job(c.g, c.x, c.w, c.out, c.e, b, b + c.ncols, b + c.ncols + c.npb, t)


cdef void _implicit_chunk(void* ctx, Py_ssize_t t, int slot) noexcept nogil:
    cdef _ConvCtx* c = <_ConvCtx*> ctx
    cdef float* b = c.buf + slot * c.per
    cdef Py_ssize_t r = t // c.cparts, j0 = (t % c.cparts) * c.cw
    implicit_span(c.g, c.x, c.w, c.out, c.e, b, b + IM2COL_ROWS * c.g.kg, r * c.span,
                  _imin((r + 1) * c.span, c.g.n * c.g.p), j0, _imin(j0 + c.cw, c.g.m))


cdef _conv_implicit(Geo* g, x, w, out, Epi* e, int nt, scratch):
    """:func:`conv_im2col` with ``implicit``: jobs of equal spans of output pixels
    (:c:func:`implicit_span`), at least 96 each and up to four a thread, so that a thread held
    up by another process leaves work to the others (eight cost 3-5% more: every job ends on a
    part-filled strip); outputs too small for four jobs a thread split their channels too."""
    cdef Py_ssize_t per = IM2COL_ROWS * g.kg + g.m
    keep = []
    cdef float* bp = _floats(scratch, per * nt, keep)
    cdef Py_ssize_t pixels = g.n * g.p, panels = (g.m + WB512_NR - 1) // WB512_NR
    cdef Py_ssize_t rparts = max(1, min(4 * nt, pixels // 96)), cparts = 1
    if rparts < nt:
        rparts = min(nt, max(1, pixels // 36))
    if rparts < 4 * nt:
        cparts = min(panels, (4 * nt + rparts - 1) // rparts)
    cdef _ConvCtx c
    c.g, c.x, c.w, c.out, c.e, c.buf, c.per = g, _ptr(x), _ptr(w), _ptr(out), e, bp, per
    c.span = (pixels + rparts - 1) // rparts
    c.cw = (panels + cparts - 1) // cparts * WB512_NR
    c.cparts = (panels * WB512_NR + c.cw - 1) // c.cw
    with nogil:
        wb_pool_run(_implicit_chunk, &c, ((pixels + c.span - 1) // c.span) * c.cparts, nt)
    return out


# -- ConvTranspose with kernel == stride, NHWC: GEMM per input row, then a pixel shuffle ------------

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
    packed by :func:`pack_b` as a (C, kh*kw*M) matrix.  ``bias`` and ``slope`` (PRelu) are
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
    _epi(&e, ld, bias, slope, act, p0, p1)
    _no_overlap(out, x, wp, bias, slope)
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
