# Included by gemm_q8.pyx: windows gathered into rows (im2col) and the bound convolution that
# runs the GEMM on them a tile of output rows at a time.

cdef struct _ColCtx:
    const uint8_t* x
    uint8_t* out
    Py_ssize_t H, W, C, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW, ldo, r0, rows, per
    uint8_t fill


cdef void _col_chunk(void* ctx, Py_ssize_t chunk, int slot) noexcept nogil:
    """Output rows (image, oh) r0 + [chunk's] of the chunk: each pixel's window, tap by tap, C bytes
    a tap, into the rows of ``out`` from row r0's first pixel on."""
    cdef _ColCtx* c = <_ColCtx*> ctx
    cdef Py_ssize_t r, n, oh, ow, i, j, ih, iw
    cdef uint8_t* dst
    for r in range(c.r0 + chunk * c.per, c.r0 + min((chunk + 1) * c.per, c.rows)):
        n, oh = r // c.OH, r % c.OH
        for ow in range(c.OW):
            dst = c.out + ((r - c.r0) * c.OW + ow) * c.ldo
            for i in range(c.KH):
                ih = oh * c.SH - c.PT + i * c.DH
                for j in range(c.KW):
                    iw = ow * c.SW - c.PL + j * c.DW
                    if 0 <= ih < c.H and 0 <= iw < c.W:
                        memcpy(dst, c.x + ((n * c.H + ih) * c.W + iw) * c.C, c.C)
                    else:
                        memset(dst, c.fill, c.C)
                    dst += c.C


def out_size(Py_ssize_t size, Py_ssize_t k, Py_ssize_t s, Py_ssize_t d, Py_ssize_t pb, Py_ssize_t pe):
    """Output positions of a window of ``k`` taps ``d`` apart at stride ``s`` (0 where none fits)."""
    cdef Py_ssize_t span = size + pb + pe - (k - 1) * d
    return 0 if span < 1 else (span - 1) // s + 1


def im2col(x, kernel, strides, dilations, pads, int fill, out, int num_threads=1):
    """The windows of uint8 NHWC ``x`` (N, H, W, C) as rows of ``out`` (N * OH * OW, >= KH * KW * C,
    uint8, unit column stride): taps in (row, column, channel) order, those in the padding
    ``fill`` (the image's zero point); ``pads`` (top, left, bottom, right)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or not x.flags.c_contiguous:
        raise ValueError(f"gemm_q8.im2col: x must be a C-contiguous uint8 (N, H, W, C) array, got "
                         f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
    cdef _ColCtx c
    n, c.H, c.W, c.C = x.shape
    c.KH, c.KW = (int(v) for v in kernel)
    c.SH, c.SW = (int(v) for v in strides)
    c.DH, c.DW = (int(v) for v in dilations)
    c.PT, c.PL, pb, pr = (int(v) for v in pads)
    if min(c.KH, c.KW, c.SH, c.SW, c.DH, c.DW) < 1 or min(c.PT, c.PL, pb, pr) < 0 or min(n, c.H, c.W, c.C) < 1:
        raise ValueError(f"gemm_q8.im2col: bad geometry kernel {kernel} strides {strides} dilations {dilations} "
                         f"pads {pads} for x {x.shape}")
    c.OH, c.OW = out_size(c.H, c.KH, c.SH, c.DH, c.PT, pb), out_size(c.W, c.KW, c.SW, c.DW, c.PL, pr)
    if c.OH < 1 or c.OW < 1:
        raise ValueError(f"gemm_q8.im2col: the output of x {x.shape} with kernel {kernel} is empty")
    k = c.KH * c.KW * c.C
    if (not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 2 or out.shape[0] != n * c.OH * c.OW
            or out.shape[1] < k or out.strides[1] != 1 or np.shares_memory(x, out)):
        raise ValueError(f"gemm_q8.im2col: out must be uint8 ({n * c.OH * c.OW}, >= {k}) with unit column stride, "
                         f"apart from x, got {getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if not 0 <= fill <= 255:
        raise ValueError(f"gemm_q8.im2col: the fill must lie in [0, 255], got {fill}")
    c.x = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x)
    c.out = <uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> out)
    c.ldo, c.fill, c.r0, c.rows = out.strides[0], fill, 0, n * c.OH
    c.per = wb_jobs_per_chunk(c.rows, c.OW * k // 8 + 1, num_threads)
    with nogil:
        wb_pool_run(_col_chunk, &c, (c.rows + c.per - 1) // c.per, num_threads)
    return out


#: Bytes of gathered windows one tile of :class:`Conv` holds: the tile is still in the caches
#: when the GEMM reads it.
TILE_BYTES = 1 << 20


def conv_geometry(x_shape, kernel, strides, dilations, pads):
    """``(direct, OH, OW, K, tile rows, workspace bytes)`` of :class:`Conv` on NHWC ``x_shape``:
    direct (a 1x1 kernel, unit strides, no padding: the GEMM reads the image itself) or else
    tiles of whole output rows gathered into the workspace."""
    n, h, w, c = (int(v) for v in x_shape)
    kh, kw = (int(v) for v in kernel)
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilations)
    pt, pl, pb, pr = (int(v) for v in pads)
    oh, ow = out_size(h, kh, sh, dh, pt, pb), out_size(w, kw, sw, dw, pl, pr)
    k = kh * kw * c
    direct = (kh, kw, sh, sw, pt, pl, pb, pr) == (1, 1, 1, 1, 0, 0, 0, 0)
    tile = max(1, min(n * oh, TILE_BYTES // max(ow * k, 1)))
    return direct, oh, ow, k, tile, 0 if direct else tile * ow * k


cdef class Conv:
    """A qint8 convolution of uint8 NHWC ``x`` (N, H, W, C) bound to its arrays, checked once:
    each call gathers the windows of a tile of output rows into ``workspace`` (``fill``: the
    image's zero point in the padding; none for a direct 1x1) and runs :func:`gemm` on them with
    ``packed`` from :func:`pack` of weights (n, KH * KW * C) in (row, column, channel) order,
    into float32 or uint8 ``out`` (N, OH, OW, n); ``res`` (same shape, or None) the residual,
    ``act`` an activation (:func:`gemm`)."""

    cdef _Ctx g
    cdef _ColCtx col
    cdef bint direct
    cdef Py_ssize_t tile, rows, pixels_in, out_row, res_row
    cdef char* out0
    cdef const char* res0
    cdef object refs

    def __init__(self, x, packed, Py_ssize_t n, comp, mult, bias, out, kernel, strides, dilations, pads,
                 int fill=0, workspace=None, int zo=0, bint relu=False, lo=None, hi=None, res=None,
                 float rmult=1.0, int rzp=0, mid=None, act=None):
        who = "gemm_q8.Conv"
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or not x.flags.c_contiguous:
            raise ValueError(f"{who}: x must be a C-contiguous uint8 (N, H, W, C) array, got "
                             f"{getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')}")
        nb, h, w, c = x.shape
        kernel, strides, dilations, pads = (tuple(int(v) for v in t) for t in (kernel, strides, dilations, pads))
        if (len(kernel) != 2 or len(strides) != 2 or len(dilations) != 2 or len(pads) != 4
                or min(kernel + strides + dilations) < 1 or min(pads) < 0 or min(x.shape) < 1):
            raise ValueError(f"{who}: bad geometry kernel {kernel} strides {strides} dilations {dilations} "
                             f"pads {pads} for x {x.shape}")
        direct, oh, ow, k, tile, need = conv_geometry(x.shape, kernel, strides, dilations, pads)
        if oh < 1 or ow < 1:
            raise ValueError(f"{who}: the output of x {x.shape} with kernel {kernel} is empty")
        if (not isinstance(out, np.ndarray) or out.shape != (nb, oh, ow, n) or not out.flags.c_contiguous
                or np.shares_memory(x, out)):
            raise ValueError(f"{who}: out must be a C-contiguous ({nb}, {oh}, {ow}, {n}) array apart from x, got "
                             f"{getattr(out, 'shape', type(out))}")
        if res is not None and (not isinstance(res, np.ndarray) or res.shape != out.shape or not res.flags.c_contiguous):
            raise ValueError(f"{who}: the residual must be a C-contiguous {out.shape} array, got "
                             f"{getattr(res, 'shape', type(res))}")
        _weights(&self.g.args, packed, n, k, comp, mult, bias, who)
        _epilogue(&self.g.args, out.reshape(-1, n), nb * oh * ow, n, zo, relu, lo, hi,
                  None if res is None else res.reshape(-1, n), rmult, who, rzp, mid, act)
        if not 0 <= fill <= 255:
            raise ValueError(f"{who}: the fill must lie in [0, 255], got {fill}")
        self.direct, self.tile, self.rows = direct, tile, nb * oh
        self.pixels_in = nb * h * w
        self.out0, self.out_row = <char*> cnp.PyArray_DATA(<cnp.ndarray> out), ow * n * out.itemsize
        self.res0 = NULL if res is None else <const char*> cnp.PyArray_DATA(<cnp.ndarray> res)
        self.res_row = 0 if res is None else ow * n * res.itemsize
        if direct:
            self.g.args.a, self.g.args.lda = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x), c
            self.refs = (x, packed, comp, mult, bias, out, res)
            return
        if (not isinstance(workspace, np.ndarray) or workspace.dtype != np.uint8 or not workspace.flags.c_contiguous
                or workspace.size < need or np.shares_memory(workspace, x) or np.shares_memory(workspace, out)
                or (res is not None and np.shares_memory(workspace, res))):
            raise ValueError(f"{who}: the workspace must be a C-contiguous uint8 array of at least {need} bytes "
                             f"apart from x, out and the residual, got {getattr(workspace, 'dtype', type(workspace))} "
                             f"{getattr(workspace, 'size', '')}")
        self.col.x = <const uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> x)
        self.col.out = <uint8_t*> cnp.PyArray_DATA(<cnp.ndarray> workspace)
        self.col.H, self.col.W, self.col.C = h, w, c
        self.col.KH, self.col.KW = kernel
        self.col.SH, self.col.SW = strides
        self.col.DH, self.col.DW = dilations
        self.col.PT, self.col.PL = pads[0], pads[1]
        self.col.OH, self.col.OW, self.col.ldo, self.col.fill = oh, ow, k, fill
        self.g.args.a, self.g.args.lda = self.col.out, k
        self.refs = (x, packed, comp, mult, bias, out, res, workspace)

    def __call__(self, int num_threads=1):
        cdef Py_ssize_t r0, t
        cdef int nt = max(num_threads, 1)
        with nogil:
            if self.direct:
                _run_gemm(&self.g, self.pixels_in, nt)
            r0 = self.rows if self.direct else 0
            while r0 < self.rows:
                t = min(self.tile, self.rows - r0)
                self.col.r0, self.col.rows = r0, t
                self.col.per = wb_jobs_per_chunk(t, self.col.OW * self.g.args.K // 8 + 1, nt)
                wb_pool_run(_col_chunk, &self.col, (t + self.col.per - 1) // self.col.per, nt)
                self.g.args.out = <void*> (self.out0 + r0 * self.out_row)
                if self.res0 != NULL:
                    self.g.args.res = <const void*> (self.res0 + r0 * self.res_row)
                _run_gemm(&self.g, t * self.col.OW, nt)
                r0 += t
