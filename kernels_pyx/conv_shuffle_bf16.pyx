# isa-variants: avx512bf16
# cython: language_level=3
"""ConvTranspose with kernel == stride, no padding, group 1, on bfloat16 NHWC images
(``wb_gemm_bf16.h``'s GEMM): each output pixel is one tap of one input pixel, so output row
``i * KH + kh`` is input row ``i`` times the weights of kernel row ``kh``, (C, KW * M), a GEMM whose
C rows (the input pixels) lie KW * M apart in that output row.  Every job writes its output row in
place, bias and activation fused, with no column buffer and no shuffle pass.  Where all
KH * KW * M columns fit one 32-column panel (a head's last, 1-channel layer) the KH products would
each fill a few lanes of the same panel: there one GEMM of all the columns goes to the thread's
scratch and its runs are copied out (``narrow``), as ``conv_shuffle512`` does.

Only the ``_avx512bf16`` build runs the VDPBF16PS kernel (``available``); the baseline build runs
the same scalar loops as ``gemm_bf16``'s.  Shapes, dtypes and overlaps are checked here, before
any ``nogil`` code.
"""
import numpy as np
from workbench._kernels.buffers import aligned_empty
cimport numpy as cnp
from libc.stdint cimport uint16_t
from libc.string cimport memcpy

from wb_gemm_bf16 cimport (
    WBB_NATIVE, WBB_NR, fill_epilogue, wbb_epi, wbb_block, wbb_handles, wbb_pack, wbb_packed_words)
from wb_pool cimport wb_pool_import, wb_pool_run
from _bf16_args cimport _overlap, _ptr

# the array checks of the base build (no ISA-specific code in them)
from workbench._kernels.gemm_bf16 import BF16, _array

cnp.import_array()
wb_pool_import()

#: True when this build runs the AVX512-BF16 micro-kernel (only the ``_avx512bf16`` variant does).
available = bool(WBB_NATIVE)


def handles(int act):
    """Whether the epilogue applies activation code ``act`` (``routines/epilogue.py``) in this build."""
    return bool(wbb_handles(act))


cdef inline bint _narrow(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t m) noexcept nogil:
    """Whether all the kernel's columns fit one panel: one GEMM, then a copy (see the module)."""
    return kh > 1 and kh * kw * m <= WBB_NR


def packed_words(Py_ssize_t c, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t m):
    """16-bit words of ``c`` x (``kh`` x ``kw``) x ``m`` weights packed by :func:`pack`."""
    if _narrow(kh, kw, m):
        return wbb_packed_words(c, kh * kw * m)
    return kh * wbb_packed_words(c, kw * m)


def scratch_bytes(Py_ssize_t w, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t m, int num_threads=1):
    """Bytes of the ``scratch`` :func:`conv_transpose_shuffle` needs for input rows of ``w``
    pixels with up to ``num_threads`` threads: 0, or (``narrow``) each thread's GEMM columns of a
    row in float32."""
    return 4 * w * kh * kw * m * max(num_threads, 1) if _narrow(kh, kw, m) else 0


def pack(w):
    """float32 ConvTranspose weights ``w`` (C, M, KH, KW) rounded to bfloat16 and packed as KH
    matrices, kernel row kh's (C, KW * M) with columns in (kw, m) order, one after the other; or,
    ``narrow``, as the one (C, KH * KW * M) matrix, columns in (kh, kw, m) order.  A 1-D uint16
    array of :func:`packed_words` words."""
    w = _array(w, "weights", np.float32)
    if w.ndim != 4:
        raise ValueError(f"conv_shuffle_bf16: weights must be 4-D (C, M, KH, KW), got shape {w.shape}")
    cdef Py_ssize_t c = w.shape[0], m = w.shape[1], kh = w.shape[2], kw = w.shape[3]
    cdef Py_ssize_t cols = kw * m, per = wbb_packed_words(c, cols), panels = (cols + WBB_NR - 1) // WBB_NR
    if _narrow(kh, kw, m):   # one matrix of every column
        kh, cols = 1, kh * kw * m
        per, panels = wbb_packed_words(c, cols), 1
        # the packer takes (n, k): row j is output column j = (kh, kw, m), over the C inputs
        mats = [np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(cols, c))]
    else:   # row j of kernel row r's is output column j = (kw, m)
        mats = [np.ascontiguousarray(w[:, :, r, :].transpose(2, 1, 0).reshape(cols, c)) for r in range(kh)]
    out = aligned_empty(max(kh * per, 1), np.uint16)
    cdef uint16_t* dst = <uint16_t*> _ptr(out)
    cdef const float* src
    cdef Py_ssize_t r
    for r in range(kh):
        src = <const float*> _ptr(mats[r])
        with nogil:
            wbb_pack(c, cols, src, dst + r * per, 0, panels)
    return out


cdef struct _Ctx:
    const uint16_t* x
    const uint16_t* pb
    char* out
    Py_ssize_t H, W, C, KH, cols, per, panels, col_jobs, item
    int f32
    bint narrow
    char* scratch     # narrow: W * KH * cols elements of the output's type per thread slot
    wbb_epi ep


cdef void _job(void* ctx, Py_ssize_t job, int slot) noexcept nogil:
    """Input row ``job // (KH * col_jobs)`` (image-major) times kernel row ``kh``: output row
    ``row * KH + kh``, the panels of column group ``q``."""
    cdef _Ctx* g = <_Ctx*> ctx
    cdef Py_ssize_t ld, kh_, p, run
    cdef char* buf
    if g.narrow:   # all the columns of input row ``job``, then each (kh, pixel) run to its place
        ld, run = g.KH * g.cols, g.cols * g.item
        buf = g.scratch + slot * g.W * ld * g.item
        wbb_block(ld, g.C, g.x + job * g.W * g.C, g.C, g.pb, buf, ld, g.f32, &g.ep, 0, g.W, 0, 1)
        for kh_ in range(g.KH):
            for p in range(g.W):
                memcpy(g.out + ((job * g.KH + kh_) * g.W + p) * run, buf + (p * ld * g.item + kh_ * run), run)
        return
    cdef Py_ssize_t row = job // (g.KH * g.col_jobs), rest = job % (g.KH * g.col_jobs)
    cdef Py_ssize_t kh = rest // g.col_jobs, q = rest % g.col_jobs
    cdef Py_ssize_t p0 = q * g.panels // g.col_jobs, p1 = (q + 1) * g.panels // g.col_jobs
    wbb_block(g.cols, g.C, g.x + row * g.W * g.C, g.C, g.pb + kh * g.per,
              g.out + (row * g.KH + kh) * g.W * g.cols * g.item, g.cols, g.f32, &g.ep, 0, g.W, p0, p1)


def conv_transpose_shuffle(x, wp, out, int kh, int kw, bias=None, int act=0, double p0=0, double p1=0,
                           int num_threads=1, scratch=None):
    """``out (N, H*kh, W*kw, M)`` (bfloat16 or float32) from bfloat16 ``x (N, H, W, C)`` and ``wp``
    (weights packed by :func:`pack`): a ConvTranspose with kernel == stride ``kh`` x ``kw``, no
    padding, group 1; ``bias`` float32 per GEMM column, (kw * M,) in (kw, m) order (M's bias
repeated kw times), or None; activation code ``act`` (``routines/epilogue.py``)
    with its parameters.  ``scratch``: at least :func:`scratch_bytes` (None: this call allocates
what it needs).  Returns ``out``."""
    x = _array(x, "input", BF16)
    if not isinstance(out, np.ndarray) or out.dtype not in (BF16, np.float32):
        raise TypeError(f"conv_shuffle_bf16: output must be a bfloat16 or float32 NumPy array, got "
                        f"{getattr(out, 'dtype', type(out).__name__)}")
    out = _array(out, "output", out.dtype, writeable=True)
    wp = _array(wp, "packed weights", np.uint16)
    if num_threads < 1:
        raise ValueError(f"conv_shuffle_bf16: num_threads must be >= 1, got {num_threads}")
    if kh < 1 or kw < 1:
        raise ValueError(f"conv_shuffle_bf16: kernel {kh}x{kw} must be positive")
    if x.ndim != 4 or out.ndim != 4:
        raise ValueError(f"conv_shuffle_bf16: input {x.shape} and output {out.shape} must be 4-D (N, H, W, C)")
    n, h, w, c = x.shape
    m = out.shape[3]
    if out.shape[:3] != (n, h * kh, w * kw):
        raise ValueError(f"conv_shuffle_bf16: a {kh}x{kw} stride-{kh}x{kw} ConvTranspose of {x.shape} gives "
                         f"{(n, h * kh, w * kw, m)}, output is {out.shape}")
    cdef Py_ssize_t cols = kw * m, per = wbb_packed_words(c, cols)
    if wp.ndim != 1 or wp.size != max(packed_words(c, kh, kw, m), 1):
        raise ValueError(f"conv_shuffle_bf16: packed weights hold {wp.size} words; {c} input channels, a "
                         f"{kh}x{kw} kernel and {m} outputs need {packed_words(c, kh, kw, m)}")
    if not wbb_handles(act):
        raise ValueError(f"conv_shuffle_bf16: activation code {act} is not applied by this build")
    if bias is not None and _array(bias, "bias", np.float32).shape != (cols,):
        raise ValueError(f"conv_shuffle_bf16: bias must have shape ({cols},) (per GEMM column), got {bias.shape}")
    for what, v in (("input", x), ("packed weights", wp)):
        if _overlap(out, v):
            raise ValueError(f"conv_shuffle_bf16: the output overlaps the {what}")
    if out.size == 0:
        return out
    if c == 0:
        raise ValueError("conv_shuffle_bf16: depth 0 (the input has no channels)")
    cdef _Ctx g
    g.narrow = _narrow(kh, kw, m)
    if g.narrow and bias is not None:   # per column (kh, kw, m)
        bias = np.tile(bias, kh)
    if g.narrow:
        need = scratch_bytes(w, kh, kw, m, num_threads)
        if scratch is None:
            scratch = aligned_empty(need, np.uint8)
        elif not isinstance(scratch, np.ndarray) or not scratch.flags.c_contiguous or not scratch.flags.writeable \
                or scratch.nbytes < need:
            raise ValueError(f"conv_shuffle_bf16: scratch must be a writeable C-contiguous array of at least "
                             f"{need} bytes")
        g.scratch = <char*> _ptr(scratch)
    g.x, g.pb, g.out = <const uint16_t*> _ptr(x), <const uint16_t*> _ptr(wp), <char*> _ptr(out)
    g.H, g.W, g.C, g.KH, g.cols, g.per = h, w, c, kh, cols, per
    g.panels = (cols + WBB_NR - 1) // WBB_NR
    g.f32 = out.dtype == np.float32
    g.item = 4 if g.f32 else 2
    fill_epilogue(&g.ep, bias, None, 0, act, p0, p1, None, False)
    # Jobs are (input row, kernel row), rows outermost so each thread keeps a contiguous band of
    # the image; where they are too few to give every thread 3, the panels are split as well.
    cdef Py_ssize_t rows = n * h
    if g.narrow:
        with nogil:
            wb_pool_run(_job, &g, rows, num_threads)
        return out
    g.col_jobs = 1
    while rows * kh * g.col_jobs < 3 * num_threads and g.col_jobs < g.panels:
        g.col_jobs += 1
    with nogil:
        wb_pool_run(_job, &g, rows * kh * g.col_jobs, num_threads)
    return out
