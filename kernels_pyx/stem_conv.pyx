# isa-variants: avx512, avx512bf16
# cython: language_level=3
"""A network's first convolution from the caller's float32 NCHW image to an NHWC output (float32
or bfloat16), for images of at most 4 channels and up to 64 output channels (``wb_stem512.h``).
The ``_avx512bf16`` build rounds a bfloat16 output with one instruction a vector.

Jobs are output rows on the shared pool (``wb_pool.h``), each thread with its own padded-rows
scratch.  Only the ``_avx512`` build computes (``available``); shapes, dtypes and scratch are
checked here, before any ``nogil`` code.
"""
import numpy as np
from workbench._kernels.buffers import aligned_empty, aligned_zeros
cimport numpy as cnp

from _wb512_epi cimport wb512_epi, wb512_epi_handles
from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()


cdef extern from "wb_stem512.h" nogil:
    int WBS_MAX_C
    int WBS_MAX_NZ
    ctypedef struct wbs_geo:
        const float* x
        const float* wp
        const Py_ssize_t* toff
        void* y
        Py_ssize_t n, c, h, w, m, oh, ow, wpad, taps
        int kh, kw, sh, sw, pt, pl, nz, y_bf16
        wb512_epi ep
    int wbs_native()
    Py_ssize_t wbs_scratch_floats(const wbs_geo* g)
    void wbs_rows(const wbs_geo* g, float* rows, Py_ssize_t r0, Py_ssize_t r1)


#: True when this build computes (only the ``_avx512`` variant does).
available = bool(wbs_native())

BFLOAT16_NAMES = ("bfloat16", "uint16")


def handles(int act):
    """Whether the epilogue applies activation code ``act`` (routines/epilogue.py's codes)."""
    return bool(wb512_epi_handles(act))


def applies(Py_ssize_t c, Py_ssize_t m):
    """Whether an image of ``c`` channels into ``m`` output channels is this kernel's."""
    return 1 <= c <= WBS_MAX_C and 1 <= m <= 16 * WBS_MAX_NZ


def pack(w):
    """Weights (M, C, KH, KW) float32 as the kernel reads them: (C * KH * KW, NZ * 16), tap by tap,
    zero past M."""
    w = np.asarray(w, np.float32)
    if w.ndim != 4 or not applies(w.shape[1], w.shape[0]):
        raise ValueError(f"stem_conv: weights must be (M <= {16 * WBS_MAX_NZ}, C <= {WBS_MAX_C}, KH, KW), "
                         f"got {w.shape}")
    m = w.shape[0]
    nz = (m + 15) // 16
    out = aligned_zeros((w.shape[1] * w.shape[2] * w.shape[3], nz * 16), np.float32)
    out[:, :m] = w.reshape(m, -1).T
    return out


def scratch_floats(shape, kernel, strides, out_w, int num_threads=1):
    """float32 elements of the ``scratch`` :func:`conv` needs for an NCHW input ``shape``."""
    cdef wbs_geo g
    g.c, g.kh, g.sw = shape[1], kernel[0], strides[1]
    g.wpad = (out_w - 1) * strides[1] + kernel[1]
    return max(num_threads, 1) * wbs_scratch_floats(&g)


cdef struct _Ctx:
    wbs_geo g
    float* scratch
    Py_ssize_t per_slot, rows_per_chunk


cdef void _chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _Ctx* c = <_Ctx*> ctx
    cdef Py_ssize_t r0 = i * c.rows_per_chunk, r1 = min(r0 + c.rows_per_chunk, c.g.n * c.g.oh)
    wbs_rows(&c.g, c.scratch + slot * c.per_slot, r0, r1)


cdef inline void* _ptr(a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray> a)


def _f32(a, what, shape=None):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        raise TypeError(f"stem_conv: {what} must be a C-contiguous float32 array")
    if shape is not None and a.shape != shape:
        raise ValueError(f"stem_conv: {what} must have shape {shape}, got {a.shape}")
    return a


def conv(x, wp, out, kernel, strides, pads, bias=None, int act=0, double p0=0, double p1=0, post=None,
         scratch=None, int num_threads=1):
    """``out`` (N, OH, OW, M), float32 or bfloat16 (or its uint16 bits) = the convolution of
    ``x`` (N, C, H, W) float32 with :func:`pack`'s ``wp``; ``kernel`` (KH, KW), ``strides``,
    ``pads`` (top, left, bottom, right); ``bias``, ``post = (scale, shift)`` float32 (M,) or None;
    activation codes as ``routines/epilogue.py``.  ``scratch``: float32, at least
    :func:`scratch_floats` (None: a new one)."""
    if not available:
        raise RuntimeError("stem_conv: this build has no AVX-512 kernels (use stem_conv_avx512)")
    x = _f32(x, "input")
    wp = _f32(wp, "packed weights")
    if not isinstance(out, np.ndarray) or not out.flags.c_contiguous or not out.flags.writeable or (
            out.dtype != np.float32 and out.dtype.name not in BFLOAT16_NAMES):
        raise TypeError("stem_conv: the output must be a writeable C-contiguous float32 or bfloat16 array")
    if x.ndim != 4 or out.ndim != 4 or num_threads < 1:
        raise ValueError(f"stem_conv: input {x.shape} and output {out.shape} must be 4-D; num_threads >= 1")
    n, c, h, w = x.shape
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in strides)
    pt, pl, pb, pr = (int(p) for p in pads)
    if min(kh, kw, sh, sw) < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError(f"stem_conv: bad kernel {kernel}, strides {strides} or pads {pads}")
    oh, ow, m = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1, out.shape[3]
    if not applies(c, m) or out.shape != (n, oh, ow, m) or min(n, oh, ow) < 1:
        raise ValueError(f"stem_conv: input {x.shape}, kernel {kernel}, strides {strides}, pads {pads} give "
                         f"(N, OH, OW) = {(n, oh, ow)}; output is {out.shape} (C <= {WBS_MAX_C}, M <= {16 * WBS_MAX_NZ})")
    nz = (m + 15) // 16
    _f32(wp, "packed weights", (c * kh * kw, nz * 16))
    if not wb512_epi_handles(act):
        raise ValueError(f"stem_conv: activation code {act} is not handled")
    if bias is not None:
        bias = _f32(bias, "bias", (m,))
    if post is not None:
        post = (_f32(post[0], "post scale", (m,)), _f32(post[1], "post shift", (m,)))
    if np.may_share_memory(out, x):
        raise ValueError("stem_conv: the output overlaps the input")
    cdef _Ctx ctx
    cdef wbs_geo* g = &ctx.g
    g.x, g.wp, g.y = <const float*> _ptr(x), <const float*> _ptr(wp), _ptr(out)
    g.n, g.c, g.h, g.w, g.m, g.oh, g.ow = n, c, h, w, m, oh, ow
    g.kh, g.kw, g.sh, g.sw, g.pt, g.pl, g.nz = kh, kw, sh, sw, pt, pl, nz
    g.wpad = (ow - 1) * sw + kw
    g.y_bf16 = out.dtype != np.float32
    g.ep.bias, g.ep.bias_per_row, g.ep.res, g.ep.ld_res, g.ep.res_post = <const float*> _ptr(bias), 0, NULL, 0, 0
    g.ep.act, g.ep.p0, g.ep.p1 = act, p0, p1
    g.ep.post_scale = <const float*> _ptr(None if post is None else post[0])
    g.ep.post_shift = <const float*> _ptr(None if post is None else post[1])
    ctx.per_slot = wbs_scratch_floats(g)
    # tap (ci, ky, kx)'s input: row ci * kh + ky of the padded rows, kx floats in
    toff = np.array([(ci * kh + ky) * (ctx.per_slot // (c * kh)) + kx for ci in range(c) for ky in range(kh)
                     for kx in range(kw)], np.intp)
    g.toff, g.taps = <const Py_ssize_t*> _ptr(toff), toff.size
    need = num_threads * ctx.per_slot
    if scratch is None:
        scratch = aligned_empty(need, np.float32)
    if not isinstance(scratch, np.ndarray) or scratch.dtype != np.float32 or not scratch.flags.c_contiguous \
            or not scratch.flags.writeable or scratch.size < need:
        raise ValueError(f"stem_conv: scratch must be a writeable C-contiguous float32 array of at least {need} "
                         f"elements")
    ctx.scratch = <float*> _ptr(scratch)
    cdef Py_ssize_t rows = n * oh
    ctx.rows_per_chunk = wb_jobs_per_chunk(rows, ow * m * c * kh * kw, num_threads)
    with nogil:
        wb_pool_run(_chunk, &ctx, (rows + ctx.rows_per_chunk - 1) // ctx.rows_per_chunk, num_threads)
    return out
