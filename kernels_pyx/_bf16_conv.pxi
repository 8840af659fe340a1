# gemm_bf16.pyx's convolutions (included there, after the GEMM): the im2col and implicit-GEMM
# entry points, their scratch sizes, and whether the AMX build reads runs of kernel rows.


def reads_runs(Py_ssize_t c, int kw, int dw):
    """Whether this build's :func:`conv_implicit` reads each kernel row's taps as one run (AMX,
    channels not a multiple of 32, ``wb_amx_runs.h``); where it does not, AMX tiles take whole
    32-channel pieces of each tap, and other channel counts go to the VDPBF16PS micro-kernel."""
    cdef wbb_geo geo
    geo.c, geo.kw, geo.dw = c, kw, dw
    return bool(WBB_AMX) and bool(wba_runs_apply(&geo))


def im2col_scratch_bytes(Py_ssize_t k, int num_threads=1):
    """Bytes of the ``scratch`` that :func:`conv_im2col` of GEMM depth ``k`` (and :func:`gemm`
    of a float32 input) needs with up to ``num_threads`` threads: each thread's gathered rows."""
    return 2 * max(num_threads, 1) * _gather_rows(k) * k


def implicit_scratch_bytes(shape, pads, bint f32_input, strides=(1, 1), kernel=None, dilations=(1, 1)):
    """Bytes of the ``scratch`` that :func:`conv_implicit` needs for an NHWC image of ``shape``
    (N, H, W, C) and ``strides``: its zero-bordered copy, none where it is read in place (bfloat16,
    no padding).  The AMX build copies, with room past the end for the 16 rows a tile loads at the
    last pixel (``wba_implicit_block``), except a bfloat16 image whose kernel rows it reads as
    runs (``wb_amx_runs.h``: give ``kernel`` and ``dilations`` to know)."""
    n, h, w, c = shape
    pt, pl, pb, pr = pads
    if kernel is not None and not f32_input and reads_runs(c, kernel[1], dilations[1]):
        return 0
    if WBB_AMX:
        return 2 * (n * (h + pt + pb) * (w + pl + pr) * c + _amx_slack(c, strides[1]))
    return 2 * n * (h + pt + pb) * (w + pl + pr) * c if f32_input or any(pads) else 0


cdef Py_ssize_t _amx_slack(Py_ssize_t c, Py_ssize_t sw):
    """Words past the bordered image that an AMX tile's rows past the last pixel may read."""
    return 16 * sw * c + 32


def conv_im2col(x, wp, out, kernel, strides, dilations, pads, bias=None, residual=None, int act=0, double p0=0,
                double p1=0, post=None, bint res_post=False, int num_threads=1, bint bind=False, scratch=None):
    """A group-1 NHWC convolution: each job gathers its rows of the im2col matrix (taps in the
    order kernel row, kernel column, channel) into its thread's part of ``scratch`` (at least
    :func:`im2col_scratch_bytes`), then :func:`gemm`'s
    product and epilogue.  ``x`` (N, H, W, C) bfloat16 or float32 (rounded as it is gathered); ``out`` (N, OH, OW, M) bfloat16 or
    float32; ``wp`` the (M, KH*KW*C) weights packed by :func:`pack`; ``pads`` (top, left, bottom,
    right); the rest (``bind`` too) as :func:`gemm`."""
    x, out = _input(x), _output(out)
    cdef _Ctx g
    _geometry("gemm_bf16", &g.geo, x, out, kernel, strides, dilations, pads, "input", out.shape[out.ndim - 1] if out.ndim else -1)
    n, oh, ow, c, kh, kw = g.geo.n, g.geo.oh, g.geo.ow, g.geo.c, g.geo.kh, g.geo.kw
    cdef Py_ssize_t k = kh * kw * c
    _setup(&g, x, wp, out, n * oh * ow, k, bias, residual, act, p0, p1, post, res_post, num_threads, _gather_rows(k))
    _workspace(&g, scratch)
    return _finish(&g, num_threads, _gather_rows(k), True, bind, [out, x, wp, bias, residual, post, scratch])


def conv_implicit(x, wp, out, kernel, strides, dilations, pads, bias=None, residual=None, int act=0, double p0=0,
                  double p1=0, post=None, bint res_post=False, int num_threads=1, bint bind=False, scratch=None):
    """A group-1 NHWC convolution as an implicit GEMM (``wb_implicit_bf16.h``): the image copied
    once into a zero-bordered one (rounded to bfloat16 if float32; read in place when bfloat16 and
    unpadded), each block of pixels of an output row reading its taps there.  Arguments as
    :func:`conv_im2col`, the same packed weights, ``scratch`` at least
    :func:`implicit_scratch_bytes`; the channel count must be even."""
    x, out = _input(x), _output(out)
    cdef _Ctx g
    _geometry("gemm_bf16", &g.geo, x, out, kernel, strides, dilations, pads, "input", out.shape[out.ndim - 1] if out.ndim else -1)
    n, oh, ow, c, kh, kw = g.geo.n, g.geo.oh, g.geo.ow, g.geo.c, g.geo.kh, g.geo.kw
    if c % 2:
        raise ValueError(f"gemm_bf16: the implicit convolution takes an even channel count, got {c}")
    _setup(&g, x, wp, out, n * oh * ow, kh * kw * c, bias, residual, act, p0, p1, post, res_post, num_threads, ANY_ROWS)
    g.a_row_bytes = 2 * c * g.geo.sh * g.geo.sw   # the image, not its taps: each pixel read from L2 by its neighbours' taps
    _schedule(&g, num_threads, ANY_ROWS)
    _workspace(&g, scratch)
    (pt, pl, pb, pr), (dh, dw) = pads, dilations
    g.hp, g.wpd = g.geo.h + pt + pb, g.geo.w + pl + pr
    toff = np.array([(i * dh * g.wpd + j * dw) * c for i in range(kh) for j in range(kw)], np.intp)
    g.ntaps, g.toff = kh * kw, <const Py_ssize_t*> _ptr(toff)
    # AMX tiles read past the last pixel: never the input itself, but where runs of kernel rows
    # are read, which copy the tiles that would
    g.in_place = WBB_AMX and not g.a_f32 and wba_runs_apply(&g.geo)
    g.pad = not g.in_place and (g.a_f32 or any(pads) or WBB_AMX)
    g.padded = NULL if g.pad else <uint16_t*> g.a
    return _finish(&g, num_threads, ANY_ROWS, False, bind, [out, x, wp, bias, residual, post, toff, scratch])
