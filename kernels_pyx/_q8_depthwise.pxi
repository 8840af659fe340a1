# Included by gemm_q8.pyx: the qint8 depthwise convolution (wb_dw_q8.h) on its epilogue.

cdef extern from "wb_dw_q8.h" nogil:
    ctypedef struct wbd_args:
        const uint8_t* x
        Py_ssize_t H, W, C
        const int8_t* w
        const uint8_t* zrow
        Py_ssize_t pairs, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW
        wbq_args epi
    void wbd_row(const wbd_args* p, Py_ssize_t n, Py_ssize_t oh)


def pack_depthwise(w):
    """Depthwise int8 weights ``w`` (C, 1, KH, KW) -> ``(packed, sums)``: int8 (ceil(C / 64),
    ceil(KH * KW / 2), 4, 64), 64-byte aligned, the four VPDPBUSD operands of each 64-channel block
    and pair of taps (in row, column order) that ``wb_dw_q8.h`` describes (zero past C and past
    the last tap), and each channel's weight sum (int32 (C,), for the image's zero point)."""
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 4 or w.shape[1] != 1 or min(w.shape) < 1:
        raise ValueError(f"gemm_q8.pack_depthwise: weights must be int8 (C, 1, KH, KW), got {w.dtype} {w.shape}")
    c, _, kh, kw = w.shape
    pairs, blocks = (kh * kw + 1) // 2, (c + 63) // 64
    taps = np.zeros((pairs * 2, blocks * 64), np.int8)
    taps[:kh * kw, :c] = w[:, 0].reshape(c, kh * kw).T
    # (tap pair, tap of the pair, block, lane L, lane channel j): channel 64b + 16L + j
    t = taps.reshape(pairs, 2, blocks, 4, 16)
    out = np.zeros((blocks, pairs, 4, 4, 4, 4), np.int8)   # (block, pair, vector, lane, dword i, byte)
    for hi in (0, 1):
        for odd in (0, 1):
            j = 8 * hi + 2 * np.arange(4) + odd            # the lane channels of dwords i = 0..3
            for e in (0, 1):                                # the pair's first or second tap
                out[:, :, 2 * hi + odd, :, :, 2 * odd + e] = t[:, e][..., j].transpose(1, 0, 2, 3)
    packed = aligned_zeros((blocks, pairs, 4, 64), np.int8)
    packed[...] = out.reshape(blocks, pairs, 4, 64)
    return packed, w.reshape(c, -1).sum(axis=1, dtype=np.int32)


#: The most taps a depthwise window may have (wb_dw_q8.h's WBD_MAX_TAPS, less the odd one's partner).
MAX_TAPS = 63


cdef struct _DwCtx:
    wbd_args args
    Py_ssize_t rows, per


cdef void _dw_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    cdef _DwCtx* c = <_DwCtx*> ctx
    cdef Py_ssize_t r
    for r in range(chunk * c.per, min((chunk + 1) * c.per, c.rows)):
        wbd_row(&c.args, r // c.args.OH, r % c.args.OH)


cdef class Depthwise:
    """A qint8 depthwise convolution of uint8 NHWC ``x`` (N, H, W, C) bound to its arrays, checked
    once: ``wp`` from :func:`pack_depthwise`, ``comp`` int32 (C,) the image's zero point times
    the weight sums, ``zrow`` at least C bytes of that zero point (what taps in the padding read),
    then :func:`gemm`'s epilogue (no residual; ``act`` an activation) per channel into float32 or uint8 ``out``
    (N, OH, OW, C); ``pads`` (top, left, bottom, right)."""

    cdef _DwCtx d
    cdef object refs

    def __init__(self, x, wp, kernel, strides, dilations, pads, comp, mult, bias, out, zrow, int zo=0,
                 bint relu=False, lo=None, hi=None, act=None):
        who = "gemm_q8.depthwise"
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or not x.flags.c_contiguous:
            raise ValueError(f"{who}: x must be a C-contiguous uint8 (N, H, W, C) array, got "
                             f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
        n, h, w, c = x.shape
        kh, kw = (int(v) for v in kernel)
        sh, sw = (int(v) for v in strides)
        dh, dw = (int(v) for v in dilations)
        pt, pl, pb, pr = (int(v) for v in pads)
        if min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0 or min(n, h, w, c) < 1:
            raise ValueError(f"{who}: bad geometry kernel {kernel} strides {strides} dilations {dilations} "
                             f"pads {pads} for x {x.shape}")
        oh, ow = out_size(h, kh, sh, dh, pt, pb), out_size(w, kw, sw, dw, pl, pr)
        if oh < 1 or ow < 1:
            raise ValueError(f"{who}: the output of x {x.shape} with kernel {kernel} is empty")
        pairs = (kh * kw + 1) // 2
        if kh * kw > MAX_TAPS:
            raise ValueError(f"{who}: a {kh}x{kw} window has more than {MAX_TAPS} taps")
        if (not isinstance(wp, np.ndarray) or wp.dtype != np.int8 or wp.shape != ((c + 63) // 64, pairs, 4, 64)
                or not wp.flags.c_contiguous or wp.ctypes.data % 64):
            raise ValueError(f"{who}: packed weights must be int8 {((c + 63) // 64, pairs, 4, 64)}, C-contiguous and "
                             f"64-byte aligned (pack_depthwise), got {getattr(wp, 'shape', type(wp))}")
        if (not isinstance(zrow, np.ndarray) or zrow.dtype != np.uint8 or zrow.ndim != 1 or zrow.size < c
                or not zrow.flags.c_contiguous):
            raise ValueError(f"{who}: zrow must be a contiguous uint8 array of at least {c} bytes")
        if (not isinstance(out, np.ndarray) or out.shape != (n, oh, ow, c) or not out.flags.c_contiguous
                or np.shares_memory(x, out)):
            raise ValueError(f"{who}: out must be a C-contiguous ({n}, {oh}, {ow}, {c}) array apart from x, "
                             f"got {getattr(out, 'shape', type(out))}")
        for name, v, dt in (("comp", comp, np.int32), ("mult", mult, np.float32), ("bias", bias, np.float32)):
            if not isinstance(v, np.ndarray) or v.dtype != dt or v.shape != (c,) or not v.flags.c_contiguous:
                raise ValueError(f"{who}: {name} must be {np.dtype(dt)} ({c},) contiguous")
        _epilogue(&self.d.args.epi, out.reshape(-1, c), n * oh * ow, c, zo, relu, lo, hi, None, 1.0, who, 0, None, act)
        self.d.args.epi.comp = <const int32_t*> cnp.PyArray_DATA(<cnp.ndarray> comp)
        self.d.args.epi.mult = <const float*> cnp.PyArray_DATA(<cnp.ndarray> mult)
        self.d.args.epi.bias = <const float*> cnp.PyArray_DATA(<cnp.ndarray> bias)
        self.d.args.epi.N = c
        self.d.args.x = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x)
        self.d.args.H, self.d.args.W, self.d.args.C = h, w, c
        self.d.args.w = <const int8_t*> cnp.PyArray_DATA(<cnp.ndarray> wp)
        self.d.args.zrow = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> zrow)
        self.d.args.pairs, self.d.args.KH, self.d.args.KW = pairs, kh, kw
        self.d.args.SH, self.d.args.SW, self.d.args.DH, self.d.args.DW = sh, sw, dh, dw
        self.d.args.PT, self.d.args.PL, self.d.args.OH, self.d.args.OW = pt, pl, oh, ow
        self.d.rows = n * oh
        self.refs = (x, wp, comp, mult, bias, out, zrow)

    def __call__(self, int num_threads=1):
        cdef int nt = max(num_threads, 1)
        with nogil:
            self.d.per = wb_jobs_per_chunk(self.d.rows, self.d.args.OW * self.d.args.C * self.d.args.KH * self.d.args.KW, nt)
            wb_pool_run(_dw_chunk, &self.d, (self.d.rows + self.d.per - 1) // self.d.per, nt)


def depthwise(x, wp, kernel, strides, dilations, pads, comp, mult, bias, out, zrow, int zo=0, bint relu=False,
              lo=None, hi=None, int num_threads=1, act=None):
    """:class:`Depthwise` bound and run once; returns ``out``."""
    Depthwise(x, wp, kernel, strides, dilations, pads, comp, mult, bias, out, zrow, zo, relu, lo, hi, act)(num_threads)
    return out
