# isa-variants: avx512bf16
# cython: language_level=3
"""Depthwise NHWC convolutions on bfloat16 images (``wb_dw_bf16.h``): float32 weights and sums,
the epilogue in float32, one rounding at the store (or a float32 output).  Two forms: the sliding
one widens each input vector as it loads it; the wide one widens a band of input rows once into
the thread's scratch and runs the float32 AVX-512 register kernel on it (dilation 1).

Only the ``_avx512bf16`` build runs the vector code; the baseline build runs the sliding form's
scalar loop on the same packed weights.  Shapes, dtypes and overlaps are checked here, before any
``nogil`` code.
"""
import numpy as np
from workbench._kernels.buffers import aligned_empty
cimport numpy as cnp
from libc.stdint cimport uint16_t

from wb_gemm_bf16 cimport WBB_NATIVE, wb512_epi, wbb_geo, wbb_handles
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run
from _bf16_args cimport _geometry, _overlap, _ptr

# the array checks of the base build (no ISA-specific code in them)
from workbench._kernels.gemm_bf16 import BF16, _array, _output
from workbench._kernels.checks import scratch_array

cnp.import_array()
wb_pool_import()

available = bool(WBB_NATIVE)


cdef extern from "wb_dw_bf16.h" nogil:
    void wbd_row(const wbb_geo* g, const uint16_t* x, const float* w, const float* bias, void* out, int f32,
                 const wb512_epi* e, Py_ssize_t row)
    Py_ssize_t wbd_packed_floats(Py_ssize_t taps, Py_ssize_t c)
    Py_ssize_t wbd_wide_floats(const wbb_geo* g)
    void wbd_rows_wide(const wbb_geo* g, const uint16_t* x, const float* w, const float* bias, void* out, int f32,
                       const wb512_epi* e, Py_ssize_t r0, Py_ssize_t r1, float* scratch)
    void wbd_pack(Py_ssize_t taps, Py_ssize_t c, const float* w, float* dst)

cdef extern from "wb_dw_dot_bf16.h" nogil:
    Py_ssize_t wbdd_packed_words(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t c)
    void wbdd_pack(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t c, const float* w, uint16_t* dst)
    void wbdd_pack_bias(Py_ssize_t c, const float* b, float* dst)
    int wbdd_handles(const wbb_geo* g)
    void wbdd_row(const wbb_geo* g, const uint16_t* x, const uint16_t* w, const float* bias, void* out, int f32,
                  const wb512_epi* e, Py_ssize_t row)


cdef struct _DwCtx:
    wbb_geo geo
    const uint16_t* x
    const float* w
    const float* bias
    void* out
    int f32
    wb512_epi e
    Py_ssize_t rows_per_chunk
    float* scratch       # wide: wbd_wide_floats per thread slot; NULL: the sliding form, row by row
    Py_ssize_t scratch_floats
    bint dot             # the VDPBF16PS form: w is bfloat16 words (wbdd_pack)


cdef void _dw_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _DwCtx* d = <_DwCtx*> ctx
    cdef Py_ssize_t r, end = min((chunk + 1) * d.rows_per_chunk, d.geo.n * d.geo.oh)
    if d.scratch != NULL:
        wbd_rows_wide(&d.geo, d.x, d.w, d.bias, d.out, d.f32, &d.e, chunk * d.rows_per_chunk, end,
                      d.scratch + slot * d.scratch_floats)
        return
    if d.dot:
        for r in range(chunk * d.rows_per_chunk, end):
            wbdd_row(&d.geo, d.x, <const uint16_t*> d.w, d.bias, d.out, d.f32, &d.e, r)
        return
    for r in range(chunk * d.rows_per_chunk, end):
        wbd_row(&d.geo, d.x, d.w, d.bias, d.out, d.f32, &d.e, r)


def _weights_and_bias(w, bias):
    """The checked (KH, KW, C) float32 weights and (C,) bias (zeros for None) of a depthwise layer."""
    w = _array(w, "weights", np.float32)
    if w.ndim != 3:
        raise ValueError(f"depthwise_bf16: depthwise weights must be (KH, KW, C), got shape {w.shape}")
    c = w.shape[2]
    b = np.zeros(c, np.float32) if bias is None else _array(np.ascontiguousarray(bias, np.float32), "bias", np.float32)
    if b.shape != (c,):
        raise ValueError(f"depthwise_bf16: bias must have shape ({c},), got {b.shape}")
    return w, b


def pack_depthwise(w, bias=None, bint plain=False):
    """Depthwise weights ``w`` float32 (KH, KW, C) and ``bias`` (C,) or None, packed for
    :func:`conv_depthwise`: per tap and block of 32 channels, the even channels then the odd ones
    (``wb_dw_bf16.h``).  Returns ``(weights, bias)``, float32 (KH, KW, blocks * 32) and (blocks * 32,).
    ``plain``: as they are instead, (KH, KW, C) and (C,), what a convolution of dilation 1 takes."""
    w, b = _weights_and_bias(w, bias)
    kh, kw, c = w.shape
    if plain:
        return np.ascontiguousarray(w).copy(), b.copy()
    row = wbd_packed_floats(1, c)
    wp = aligned_empty((kh, kw, row), np.float32)
    bp = aligned_empty(row, np.float32)
    wbd_pack(kh * kw, c, <const float*> _ptr(w), <float*> _ptr(wp))
    wbd_pack(1, c, <const float*> _ptr(b), <float*> _ptr(bp))
    return wp, bp


def pack_depthwise_dot(w, bias=None):
    """Depthwise weights ``w`` float32 (KH, KW, C) and ``bias`` (C,) or None packed for the dot
    form of :func:`conv_depthwise` (``wb_dw_dot_bf16.h``): the weights rounded to bfloat16 (to
    nearest even) and interleaved in pairs of kernel rows, as raw uint16 words
    (``wbdd_packed_words``); the bias float32, per block of 32 channels in the kernel's lane order.
    Returns ``(weights, bias)``."""
    w, b = _weights_and_bias(w, bias)
    kh, kw, c = w.shape
    wp = aligned_empty(wbdd_packed_words(kh, kw, c), np.uint16)
    bp = aligned_empty(wbd_packed_floats(1, c), np.float32)
    wbdd_pack(kh, kw, c, <const float*> _ptr(w), <uint16_t*> _ptr(wp))
    wbdd_pack_bias(c, <const float*> _ptr(b), <float*> _ptr(bp))
    return wp, bp


def dot_handles(kernel, strides, dilations):
    """Whether the dot form (:func:`pack_depthwise_dot`) computes a layer of this geometry in this
    build: a square kernel of 3, 5 or 7, stride 1 or 2 across, dilations (1, 1), AVX512-BF16."""
    cdef wbb_geo g
    (g.kh, g.kw), (g.sh, g.sw), (g.dh, g.dw) = kernel, strides, dilations
    return bool(wbdd_handles(&g))


def wide_scratch_bytes(shape, kernel, strides, pads, int num_threads=1):
    """Bytes of the ``scratch`` the wide form of :func:`conv_depthwise` needs for an NHWC image
    of ``shape`` with up to ``num_threads`` threads: two bands of widened rows a thread."""
    cdef wbb_geo g
    (g.n, g.h, g.w, g.c), (g.kh, g.kw), (g.sh, g.sw) = shape, kernel, strides
    g.pt, g.pl, pb, pr = pads
    g.dh = g.dw = 1
    g.oh, g.ow = (g.h + g.pt + pb - g.kh) // g.sh + 1, (g.w + g.pl + pr - g.kw) // g.sw + 1
    return 4 * 2 * max(num_threads, 1) * wbd_wide_floats(&g)


def conv_depthwise(x, wp, bp, out, kernel, strides, dilations, pads, int act=0, double p0=0, double p1=0,
                   int num_threads=1, bint wide=False, scratch=None, bint dot=False):
    """A depthwise NHWC convolution (one filter per channel): ``x`` (N, H, W, C) bfloat16; ``wp``,
    ``bp`` the weights and bias from :func:`pack_depthwise`, packed, or plain for ``wide`` (dilation
    1 only: the input rows widened once into each thread's part of ``scratch``, at least
    :func:`wide_scratch_bytes`, or a new array where None; the float32 register kernel run on
    them), or from :func:`pack_depthwise_dot` for ``dot`` (where :func:`dot_handles`); ``out``
    (N, OH, OW, C) bfloat16 or float32; ``pads`` (top, left, bottom, right);
    activation codes as ``gemm_bf16.gemm``.  Returns ``out``."""
    x, out = _array(x, "input", BF16), _output(out)
    if not out.flags.c_contiguous:   # gemm_bf16's _output takes channel slices too; these kernels do not
        raise ValueError("depthwise_bf16: the output must be C-contiguous")
    if not dot:
        wp = _array(wp, "packed weights", np.float32)
    bp = _array(bp, "packed bias", np.float32)
    cdef _DwCtx d
    _geometry("depthwise_bf16", &d.geo, x, out, kernel, strides, dilations, pads, "depthwise input",
              x.shape[3] if x.ndim == 4 else -1)
    n, oh, ow, c, kh, kw = d.geo.n, d.geo.oh, d.geo.ow, d.geo.c, d.geo.kh, d.geo.kw
    if wide and not (WBB_NATIVE and d.geo.dh == 1 and d.geo.dw == 1):
        raise ValueError(f"depthwise_bf16: the wide depthwise form takes dilations (1, 1) in a native build; "
                         f"got dilations {tuple(dilations)}")
    if dot:
        if wide or not wbdd_handles(&d.geo):
            raise ValueError(f"depthwise_bf16: the dot form takes square kernels of 3, 5 and 7, strides 1 and 2 across and "
                             f"dilations (1, 1) in a native build, not both forms; got kernel {tuple(kernel)}, "
                             f"strides {tuple(strides)}, dilations {tuple(dilations)}")
        wp = _array(wp, "packed weights", np.uint16)
        if wp.shape != (wbdd_packed_words(kh, kw, c),) or bp.shape != (wbd_packed_floats(1, c),):
            raise ValueError(f"depthwise_bf16: dot-form weights of kernel {tuple(kernel)} and {c} channels come as "
                             f"({wbdd_packed_words(kh, kw, c)},) words and a bias of ({wbd_packed_floats(1, c)},) "
                             f"(pack_depthwise_dot); got {wp.shape} and {bp.shape}")
    row = c if wide else wbd_packed_floats(1, c)
    if not dot and (wp.shape != (kh, kw, row) or bp.shape != (row,)):
        raise ValueError(f"depthwise_bf16: depthwise weights of kernel {kernel}, dilations {tuple(dilations)} and {c} "
                         f"channels come as ({kh}, {kw}, {row}) and a bias of ({row},) (pack_depthwise, "
                         f"plain={wide}); got {wp.shape} and {bp.shape}")
    if not wbb_handles(act):
        raise ValueError(f"depthwise_bf16: activation code {act} is not applied by this build")
    if num_threads < 1:
        raise ValueError(f"depthwise_bf16: num_threads must be >= 1, got {num_threads}")
    for what, v in (("input", x), ("weights", wp), ("bias", bp)):
        if _overlap(out, v):
            raise ValueError(f"depthwise_bf16: the output overlaps the {what}")
    d.x, d.w, d.bias, d.out = <const uint16_t*> _ptr(x), <const float*> _ptr(wp), <const float*> _ptr(bp), _ptr(out)
    d.dot = dot
    d.f32 = out.dtype == np.float32
    d.e.bias, d.e.bias_per_row, d.e.res, d.e.ld_res, d.e.res_post = NULL, 0, NULL, 0, 0
    d.e.act, d.e.p0, d.e.p1, d.e.post_scale, d.e.post_shift = act, p0, p1, NULL, NULL
    cdef Py_ssize_t rows = n * oh
    # Chunks of rows worth wb_jobs_per_chunk's work each, every thread starting with several.
    d.rows_per_chunk = wb_jobs_per_chunk(rows, ow * c * kh * kw, num_threads)
    d.scratch, d.scratch_floats = NULL, 0
    if wide and rows and c:
        # Each chunk widens the KH - SH rows above its first output row again: two chunks a
        # thread keep that small and still let a thread that runs ahead take another's.
        d.rows_per_chunk = max(d.rows_per_chunk, (rows + 2 * num_threads - 1) // (2 * num_threads))
        d.scratch_floats = wbd_wide_floats(&d.geo)
        scratch = scratch_array(scratch, 4 * 2 * num_threads * d.scratch_floats, "depthwise_bf16")
        d.scratch = <float*> _ptr(scratch)
    if rows and c:
        with nogil:
            wb_pool_run(_dw_chunk, &d, (rows + d.rows_per_chunk - 1) // d.rows_per_chunk, num_threads)
    return out
