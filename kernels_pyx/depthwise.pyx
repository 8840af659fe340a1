# isa-variants: avx2, avx512
# cython: language_level=3
"""Direct depthwise convolution (one KHxKW filter per channel, dilation 1), float32, fused epilogue.

NHWC: the innermost loop runs over channels, which are contiguous in both the input and the
packed (KH*KW, C) weights.  The AVX-512 build keeps eight output pixels of a 16-channel block in
registers over all taps (``wb_dw512.h``); the others sum one kernel row per pass (in chunks of
5, 3 and 1 taps) for four adjacent output pixels at once, so each weight load serves four pixels
and each output is loaded and stored about KH * KW / 5 times, not KH * KW.  Parallel over
(image, output row).

NCHW: each (image, channel) plane is copied into a per-thread scratch of zero-bordered
sub-planes, its rows and columns split by their residue modulo the stride; every tap then sits
at a fixed offset, so the whole plane is one contiguous loop (see the NCHW section).  Parallel
over (image, channel).

The row and plane kernels are in ``_depthwise_nhwc.pxd`` and ``_depthwise_nchw.pxd``; this module
drives them on the shared thread pool and checks every shape.  Pointers carry ``__restrict__``
(through the ``fptr`` typedefs of ``_depthwise_types.pxd``) so that GCC vectorises the
multi-stream inner loops without run-time alias checks, which it gives up on past ~10 streams.
"""
import numpy as np
cimport numpy as cnp
from libc.string cimport memcpy, memset
from _depthwise_nchw cimport _finish_row, _flat9, _flat_row, _split, _tap
from _depthwise_nhwc cimport _add, _nhwc_row, _prelu_cols
from conv_gemm cimport ACT_RUN_LAST, act_run   # NaN-propagating (the shared activate_run turns a NaN into 0)
from wb_pool cimport wb_pool_import, wb_pool_run

cdef extern from "wb_dw512.h" nogil:
    int wb_dw512_row(const float* x, const float* w, const float* bias, float* yrow, Py_ssize_t n, Py_ssize_t oh,
                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t OW, Py_ssize_t KH, Py_ssize_t KW,
                     Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, int act, float p0, float p1)

cnp.import_array()
wb_pool_import()


cdef struct _Dw:
    const float* x
    const float* w
    const float* bias
    const float* res
    float* y
    const float* slope
    float* scratch
    Py_ssize_t plane, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, Hp, Wp
    int act
    float p0, p1


cdef void _nhwc_chunk(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    """Output row ``job`` (image-major) of an NHWC depthwise convolution, epilogue included."""
    cdef _Dw* d = <_Dw*> ctx
    cdef Py_ssize_t row = d.OW * d.C
    cdef float* yrow = d.y + job * row
    # The register kernel applies the activation itself when no residual comes before it.
    cdef int fused = d.act if d.res == NULL and d.act <= 5 else 0
    if wb_dw512_row(d.x, d.w, d.bias, yrow, job // d.OH, job % d.OH, d.H, d.W, d.C, d.OW, d.KH, d.KW,
                    d.sh, d.sw, d.pt, d.pl, fused, d.p0, d.p1):
        if d.res == NULL and (fused or d.act == 0):
            return
    else:
        _nhwc_row(d.x, d.w, d.bias, yrow, job // d.OH, job % d.OH, d.H, d.W, d.C, d.OW, d.KH, d.KW, d.sh,
                  d.sw, d.pt, d.pl)
    if d.res != NULL:
        _add(yrow, d.res + job * row, row)
    if d.act == 7:
        _prelu_cols(yrow, d.slope, d.OW, d.C)
    else:
        act_run(yrow, row, d.act, d.p0, d.p1, 0)


# -- NCHW ---------------------------------------------------------------------------------------
#
# The plane is copied into sh*sw zero-bordered sub-planes (rows and columns split by their
# residue modulo the stride), each with row stride Wq.  Tap (kh, kw) of output (oh, ow) then
# sits at a fixed offset from index oh*Wq + ow of its sub-plane, so the whole plane is ONE
# contiguous loop over i = oh*Wq + ow: long vectors even for 7x7 planes, at the price of
# computing Wq - OW unused columns per row, which the epilogue pass skips.

cdef void _nchw_chunk(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    """Plane ``job`` (image-major) of an NCHW depthwise convolution, in scratch slice ``slot``."""
    cdef _Dw* d = <_Dw*> ctx
    cdef Py_ssize_t sh = d.sh, sw = d.sw, KH = d.KH, KW = d.KW, W = d.W, pt = d.pt, pl = d.pl
    cdef Py_ssize_t Wq = (d.Wp + sw - 1) // sw, Hq = (d.Hp + sh - 1) // sh
    cdef Py_ssize_t SP = Hq * Wq + max(KH, KW)               # sub-plane (+ slack for the tail)
    cdef Py_ssize_t n_out = d.OH * Wq
    cdef Py_ssize_t r0 = pt, r1 = min(d.Hp, pt + d.H)         # scratch rows holding input
    cdef Py_ssize_t q0 = pl, q1 = min(d.Wp, pl + W)           # scratch cols holding input
    cdef Py_ssize_t c = job % d.C, r, oh, kh, OH = d.OH, OW = d.OW
    cdef float* pad = d.scratch + slot * d.plane
    cdef float* t = pad + sh * sw * SP
    cdef const float* src = d.x + job * d.H * W
    cdef float* dst
    cdef float* o
    cdef const float* wc
    cdef float b
    for r in range(r0, r1):
        dst = pad + (r % sh) * sw * SP + (r // sh) * Wq
        if sw == 1:
            memcpy(dst + q0, src + (r - pt) * W, (q1 - q0) * sizeof(float))
        else:
            _split(dst, dst + SP, src + (r - pt) * W, q0, q1, pl)
    wc = d.w + c * KH * KW
    b = d.bias[c]
    if KH == 3 and KW == 3:
        _flat9(t, pad + _tap(0, 0, sh, sw, SP, Wq), pad + _tap(0, 1, sh, sw, SP, Wq),
               pad + _tap(0, 2, sh, sw, SP, Wq), pad + _tap(1, 0, sh, sw, SP, Wq),
               pad + _tap(1, 1, sh, sw, SP, Wq), pad + _tap(1, 2, sh, sw, SP, Wq),
               pad + _tap(2, 0, sh, sw, SP, Wq), pad + _tap(2, 1, sh, sw, SP, Wq),
               pad + _tap(2, 2, sh, sw, SP, Wq), wc, b, n_out)
    else:
        for kh in range(KH):
            _flat_row(t, pad, wc + kh * KW, b, kh, KW, sh, sw, SP, Wq, n_out, kh > 0)
    o = d.y + job * OH * OW
    for oh in range(OH):
        _finish_row(o + oh * OW, t + oh * Wq, d.res + (job * OH + oh) * OW if d.res != NULL else NULL, OW)
    act_run(o, OH * OW, d.act, d.p0, d.p1, d.slope[c] if d.slope != NULL else 0)


# -- Python-visible twins: every shape checked before the nogil code ---------------------------

def _f32(a, what, shape=None, writeable=False):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{what} must be float32, got {a.dtype}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {a.shape}, expected {tuple(shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{what} is read-only")
    return a


#: The largest kernel side the kernels take (a bound on the per-row scratch, not on the method).
MAX_KERNEL = 31


def _geometry(kernel, strides, pads, H, W):
    KH, KW = (int(kernel), int(kernel)) if np.ndim(kernel) == 0 else (int(kernel[0]), int(kernel[1]))
    sh, sw = int(strides[0]), int(strides[1])
    pt, pl, pb, pr = (int(p) for p in pads)
    if not (1 <= KH <= MAX_KERNEL and 1 <= KW <= MAX_KERNEL) or sh < 1 or sw < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError(f"bad geometry: kernel {(KH, KW)}, strides {tuple(strides)}, pads {tuple(pads)}")
    if sw > 2 or sh > 2:
        raise ValueError(f"strides {(sh, sw)} not supported (1 or 2)")
    OH, OW = (H + pt + pb - KH) // sh + 1, (W + pl + pr - KW) // sw + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"empty output {OH}x{OW} for input {H}x{W}, kernel {(KH, KW)}, pads {tuple(pads)}")
    return KH, KW, sh, sw, pt, pl, OH, OW


def _epilogue_args(act, slope, C, out, residual):
    if not 0 <= act <= ACT_RUN_LAST:
        raise ValueError(f"unknown activation code {act}")
    if act == 7 and slope is None:
        raise ValueError("PRelu (code 7) needs a per-channel slope")
    if slope is not None:
        _f32(slope, "slope", (C,))
    if residual is not None:
        _f32(residual, "residual", out.shape)


cdef float* _ptr(a):
    return NULL if a is None else <float*> cnp.PyArray_DATA(<cnp.ndarray> a)


cdef int _nhwc_job(_Dw* d, x, w, bias, out, kernel, strides, pads, residual, int act, float p0, float p1,
                   slope, list keep) except -1:
    """Check a :func:`nhwc` call and fill its job; ``keep`` gets the arrays it points into."""
    _f32(x, "input")
    if x.ndim != 4:
        raise ValueError(f"input must be 4-D (N, H, W, C), got shape {x.shape}")
    N, H, W, C = x.shape
    KH, KW, sh, sw, pt, pl, OH, OW = _geometry(kernel, strides, pads, H, W)
    _f32(w, "weights", (KH * KW, C))
    _f32(bias, "bias", (C,))
    _f32(out, "output", (N, OH, OW, C), writeable=True)
    _epilogue_args(act, slope, C, out, residual)
    _fill(d, x, w, bias, residual, out, slope, None, 0, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl, 0, 0,
          act, p0, p1)
    keep.extend((x, w, bias, out, residual, slope))
    return 0


def nhwc(x, w, bias, out, kernel, strides, pads, residual=None, int act=0, float p0=0, float p1=0,
         slope=None, int num_threads=1):
    """Depthwise convolution of an NHWC tensor, written into ``out``.

    Parameters
    ----------
    x : ndarray, float32, (N, H, W, C)
    w : ndarray, float32, (KH*KW, C)
        Filter taps row-major over (kh, kw), channels innermost.
    bias : ndarray, float32, (C,)
    out : ndarray, float32, (N, OH, OW, C)
    kernel : int or (int, int)
        K for a square kernel, or (KH, KW); each side 1 to :data:`MAX_KERNEL`.
    strides : (int, int)
        Vertical stride, horizontal stride (1 or 2).
    pads : (int, int, int, int)
        Top, left, bottom, right.
    residual : ndarray, float32, shape of ``out``, optional
        Added after the bias, before the activation.
    act, p0, p1, slope
        Activation code and parameters (see ``_epilogue.pxd``); ``slope`` (C,) for PRelu.
    num_threads : int
        Threads (the shared pool, ``wb_pool.h``).
    """
    _check_threads(num_threads)
    cdef _Dw d
    _nhwc_job(&d, x, w, bias, out, kernel, strides, pads, residual, act, p0, p1, slope, [])
    with nogil:
        wb_pool_run(_nhwc_chunk, &d, d.N * d.OH, num_threads)
    return out


cdef class Nhwc:
    """:func:`nhwc` on fixed arrays, checked once when made; each call ``(num_threads)`` runs the
    convolution on them (an executor's step on its own buffers)."""
    cdef _Dw d
    cdef list keep

    def __init__(self, x, w, bias, out, kernel, strides, pads, residual=None, int act=0, float p0=0,
                 float p1=0, slope=None):
        self.keep = []
        _nhwc_job(&self.d, x, w, bias, out, kernel, strides, pads, residual, act, p0, p1, slope, self.keep)

    def __call__(self, int num_threads):
        _check_threads(num_threads)
        with nogil:
            wb_pool_run(_nhwc_chunk, &self.d, self.d.N * self.d.OH, num_threads)


def _check_threads(int num_threads):
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")


cdef void _fill(_Dw* d, x, w, bias, residual, out, slope, scratch, Py_ssize_t plane, Py_ssize_t N,
                Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t KH,
                Py_ssize_t KW, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t Hp,
                Py_ssize_t Wp, int act, float p0, float p1):
    d.x, d.w, d.bias, d.res, d.y, d.slope, d.scratch = _ptr(x), _ptr(w), _ptr(bias), _ptr(residual), _ptr(out), \
        _ptr(slope), _ptr(scratch)
    d.plane, d.N, d.C, d.H, d.W, d.OH, d.OW, d.KH, d.KW = plane, N, C, H, W, OH, OW, KH, KW
    d.sh, d.sw, d.pt, d.pl, d.Hp, d.Wp, d.act, d.p0, d.p1 = sh, sw, pt, pl, Hp, Wp, act, p0, p1


def nchw_scratch_floats(kernel, strides, pads, H, W):
    """Floats of scratch one thread of :func:`nchw` needs for an ``H`` x ``W`` input plane."""
    KH, KW, sh, sw, pt, pl, OH, OW = _geometry(kernel, strides, pads, H, W)
    Hp, Wp = (OH - 1) * sh + KH, (OW - 1) * sw + KW
    Hq, Wq = -(-Hp // sh), -(-Wp // sw)
    return sh * sw * (Hq * Wq + max(KH, KW)) + OH * Wq


def nchw(x, w, bias, out, scratch, kernel, strides, pads, residual=None, int act=0, float p0=0,
         float p1=0, slope=None, int num_threads=1):
    """Depthwise convolution of an NCHW tensor, written into ``out``.

    As :func:`nhwc`, with ``x`` (N, C, H, W), ``w`` (C, KH*KW), ``out`` (N, C, OH, OW) and a float32
    ``scratch`` of at least ``num_threads * nchw_scratch_floats(...)`` elements.
    """
    _f32(x, "input")
    if x.ndim != 4:
        raise ValueError(f"input must be 4-D (N, C, H, W), got shape {x.shape}")
    N, C, H, W = x.shape
    KH, KW, sh, sw, pt, pl, OH, OW = _geometry(kernel, strides, pads, H, W)
    _f32(w, "weights", (C, KH * KW))
    _f32(bias, "bias", (C,))
    _f32(out, "output", (N, C, OH, OW), writeable=True)
    _epilogue_args(act, slope, C, out, residual)
    _check_threads(num_threads)
    plane = nchw_scratch_floats(kernel, strides, pads, H, W)
    _f32(scratch, "scratch", writeable=True)
    if scratch.size < num_threads * plane:
        raise ValueError(f"scratch has {scratch.size} floats, {num_threads} threads need {num_threads * plane}")
    Hp, Wp = (OH - 1) * sh + KH, (OW - 1) * sw + KW
    cdef _Dw d
    _fill(&d, x, w, bias, residual, out, slope, scratch, plane, N, C, H, W, OH, OW, KH, KW, sh, sw, pt, pl,
          Hp, Wp, act, p0, p1)
    cdef Py_ssize_t nt = min(num_threads, N * C)
    with nogil:
        memset(d.scratch, 0, nt * d.plane * sizeof(float))   # the zero borders every plane keeps
        wb_pool_run(_nchw_chunk, &d, d.N * d.C, nt)
    return out
