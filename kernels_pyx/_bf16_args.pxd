# cython: language_level=3
# Argument checks shared by the bfloat16 kernel modules (gemm_bf16, depthwise_bf16, winograd_bf16): each
# runs before any nogil code, so a bad shape is a ValueError naming the kernel, never a crash.
cimport numpy as cnp

from wb_gemm_bf16 cimport wbb_geo


cdef inline void* _ptr(a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray> a)


cdef inline Py_ssize_t _span(a):
    """Bytes from ``a``'s first element to the end of its last (arrays with non-negative strides:
    C-contiguous ones, and the channel slices an output may be); 0 when it is empty."""
    cdef cnp.ndarray arr = <cnp.ndarray> a
    if cnp.PyArray_SIZE(arr) == 0:
        return 0
    if cnp.PyArray_IS_C_CONTIGUOUS(arr):
        return cnp.PyArray_NBYTES(arr)
    cdef Py_ssize_t span = cnp.PyArray_ITEMSIZE(arr)
    cdef int k
    for k in range(cnp.PyArray_NDIM(arr)):
        span += (cnp.PyArray_DIM(arr, k) - 1) * cnp.PyArray_STRIDE(arr, k)
    return span


cdef inline Py_ssize_t _row_stride(a, who) except -1:
    """Elements from one row (all but the last axis) of ``a`` to the next: the last axis when
    C-contiguous, else the stride of a channel slice of a larger buffer (its last axis contiguous,
    the rows evenly spaced); ValueError otherwise."""
    cdef cnp.ndarray arr = <cnp.ndarray> a
    cdef int nd = cnp.PyArray_NDIM(arr), k
    cdef Py_ssize_t item = cnp.PyArray_ITEMSIZE(arr), ld = cnp.PyArray_DIM(arr, nd - 1) if nd else 1, span = 1
    cdef bint ok = True, inner = False
    if cnp.PyArray_IS_C_CONTIGUOUS(arr):
        return ld
    ok = nd >= 1 and cnp.PyArray_STRIDE(arr, nd - 1) == item
    for k in range(nd - 2, -1, -1):   # the innermost row axis of more than one entry sets the stride
        if cnp.PyArray_DIM(arr, k) > 1:
            if not inner:
                inner, ld = True, cnp.PyArray_STRIDE(arr, k) // item
                ok = ok and cnp.PyArray_STRIDE(arr, k) % item == 0 and ld >= cnp.PyArray_DIM(arr, nd - 1)
            elif cnp.PyArray_STRIDE(arr, k) != item * ld * span:
                ok = False
        if inner:
            span *= cnp.PyArray_DIM(arr, k)
    if not ok:
        raise ValueError(f"{who}: output must be C-contiguous or a channel slice of a larger buffer, "
                         f"got strides {a.strides} for shape {a.shape}")
    return ld


cdef inline bint _overlap(a, b):
    """Whether the byte ranges of ``a`` and ``b`` overlap: np.may_share_memory's answer without its
    cost, several times per layer per run."""
    if b is None:
        return False
    cdef char* pa = <char*> cnp.PyArray_DATA(<cnp.ndarray> a)
    cdef char* pb = <char*> cnp.PyArray_DATA(<cnp.ndarray> b)
    cdef Py_ssize_t na = _span(a), nb = _span(b)
    return na > 0 and nb > 0 and pa < pb + nb and pb < pa + na


cdef inline int _geometry(who, wbb_geo* g, x, out, kernel, strides, dilations, pads, what,
                          Py_ssize_t out_channels) except -1:
    """Check a convolution of NHWC ``x`` into ``out`` (``out_channels`` channels) and fill ``g``;
    errors start with ``who``."""
    if x.ndim != 4 or out.ndim != 4:
        raise ValueError(f"{who}: {what} {x.shape} and output {out.shape} must be 4-D (N, H, W, C)")
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = kernel, strides, dilations, pads
    if min(kh, kw, sh, sw, dh, dw) < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError(f"{who}: bad geometry kernel {kernel}, strides {strides}, dilations {dilations}, pads {pads}")
    n, h, w, c = x.shape
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if out.shape != (n, oh, ow, out_channels):
        raise ValueError(f"{who}: {what} {x.shape} with kernel {kernel}, strides {strides}, dilations {dilations}, "
                         f"pads {pads} gives (N, OH, OW) = {(n, oh, ow)}; output is {out.shape}")
    g.n, g.h, g.w, g.c, g.oh, g.ow = n, h, w, c, oh, ow
    g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.pt, g.pl = kh, kw, sh, sw, dh, dw, pt, pl
    return 0
