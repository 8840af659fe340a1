# isa-variants: avx512
# cython: language_level=3
"""Group-1 convolutions of any kernel, stride, dilation and padding on our AVX-512 SGEMM
(``gemm512``'s), either layout: im2col tiles (per pixel tile, or everything gathered first for
small outputs, ``_gemm512_jobs.pxd``), or, NHWC, an implicit GEMM that reads the taps in place
(``_implicit512.pxd``).  Like ``gemm512``, only the ``_avx512`` build runs the AVX-512 kernel
(``available``).  Shapes are checked (``_gemm512_args.pxi``) before any ``nogil`` code.
"""

cimport numpy as cnp

from _gemm512_jobs cimport (IM2COL_PIXELS, IM2COL_ROWS, WB512_NATIVE, WB512_NR, _im2col_nchw_job, _im2col_whole,
                            _whole, im2col_nhwc_pixels, wb512_abuf_floats, wb512_epi_handles, wb512_packed_b_floats)
from _implicit512 cimport _implicit_ok, implicit_span
from conv_gemm cimport Epi, Geo, _imin
from wb_pool cimport wb_pool_import, wb_pool_run

include "_gemm512_args.pxi"

cnp.import_array()
wb_pool_import()

#: True when this build runs the AVX-512 micro-kernel (only the ``_avx512`` variant does).
available = bool(WB512_NATIVE)


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


def conv_im2col(bint nhwc, x, w, bias, residual, out, kernel, strides, dilations, pads, int act=0,
                double p0=0, double p1=0, slope=None, int num_threads=1, bint implicit=False, post=None,
                bint res_post=False, scratch=None):
    """Group-1 convolution by im2col on our SGEMM, either layout.

    ``x`` (N, C, H, W) or (N, H, W, C), ``out`` likewise; ``w`` for NCHW the weights (M, C*KH*KW),
    for NHWC ``gemm512.pack_b`` of the weights (KH*KW*C, M) ordered (ki, kj, channel).  ``pads`` are
    (top, left, bottom, right).  ``implicit`` (NHWC, unit horizontal dilation): no im2col
    buffer where the taps lie inside the input; the GEMM reads them in place, one output row
    per job.  ``post`` and ``res_post`` as for ``gemm512.conv1x1_nhwc``.  ``scratch``: a workspace of
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
    _epi(e, g.m, bias, slope, act, p0, p1, post, res_post, wb512_epi_handles(act))
    e.res = _ptr(residual)
    _no_overlap(out, (x, w, bias, residual, slope))
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
