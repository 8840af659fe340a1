# Argument checks of the modules on our AVX-512 SGEMM (gemm512, conv_im2col512, conv_shuffle512),
# included by each (an ISA variant's copy included): the arrays' types, shapes and overlaps, the
# epilogue's parameters and the caller's scratch, all before any nogil code, so that a bad shape
# is a ValueError naming the kernel family (``gemm512:``), never a crash.  Included, not
# cimported: a cimported function would be looked up at import under the module's bare name.
import numpy as np
cimport numpy as cnp

from conv_gemm cimport ACT_RUN_LAST, Epi

from workbench._kernels.checks import scratch_array
from workbench._kernels.conv_gemm import pixel_rows


cdef inline float* _ptr(a):
    return NULL if a is None else <float*> cnp.PyArray_DATA(<cnp.ndarray> a)


cdef inline object _array(a, what, ndim=None, bint writeable=False):
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


cdef inline tuple _pixels(a, what, bint writeable=False):
    """``(a, floats from one pixel to the next)`` of a 4-D float32 NHWC array (C-contiguous, or a
    channel slice of a larger buffer)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        _array(a, what, 4, writeable)   # the TypeError naming what it is
    return pixel_rows(a, f"gemm512: {what}", writeable)


cdef inline int _threads(int num_threads) except -1:
    if num_threads < 1:
        raise ValueError(f"gemm512: num_threads must be >= 1, got {num_threads}")
    return 0


cdef inline int _epi(Epi* e, Py_ssize_t m, bias, slope, int act, double p0, double p1, post, bint res_post,
              bint handles) except -1:
    """Fill ``e``; ``post``: None or (scale, shift), (m,) each, applied after the activation (in
    the register epilogue, so only with an activation it handles: ``handles``, the calling
    build's answer for ``act``)."""
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
        if not handles:
            raise ValueError(f"gemm512: a post-activation affine needs an activation the register epilogue "
                             f"runs (codes 0 to 5), got {act}")
        e.post_scale, e.post_shift = _ptr(scale), _ptr(shift)
    return 0


cdef inline bint _may_overlap(cnp.ndarray a, cnp.ndarray b) except? True:
    """``np.may_share_memory`` (bounds overlap) without its call overhead for contiguous arrays:
    it ran six times per layer per inference, a tenth of a small model's run."""
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_IS_C_CONTIGUOUS(b)):
        return np.shares_memory(a, b)   # exact: channel slices of one buffer interleave
    cdef char* pa = <char*> cnp.PyArray_DATA(a)
    cdef char* pb = <char*> cnp.PyArray_DATA(b)
    cdef Py_ssize_t na = cnp.PyArray_NBYTES(a), nb = cnp.PyArray_NBYTES(b)
    return na > 0 and nb > 0 and pa < pb + nb and pb < pa + na


cdef inline int _no_overlap(out, tuple others) except -1:
    for o in others:
        if o is not None and _may_overlap(out, o):
            raise ValueError("gemm512: the output overlaps an input")
    return 0


cdef inline bint _in_place(out, residual, bint res_post=False) except? True:
    """Whether ``residual`` is ``out`` itself (same memory, shape and strides): the product is
    then accumulated onto it, which saves reading one tensor and fetching the other for
    writing (refused for a residual added after the activation).  Any other overlap is refused
    by :func:`_no_overlap`."""
    same = (residual is not None and residual.shape == out.shape and residual.strides == out.strides
            and residual.__array_interface__["data"][0] == out.__array_interface__["data"][0])
    if same and res_post:
        raise ValueError("gemm512: a residual added after the activation cannot be the output itself")
    return same


cdef inline float* _floats(scratch, Py_ssize_t need, list keep) except NULL:
    """``need`` floats of the caller's ``scratch``, or (None) of a new array kept in ``keep``."""
    buf = scratch_array(scratch, 4 * need, "gemm512")
    keep.append(buf)
    return <float*> cnp.PyArray_DATA(<cnp.ndarray> buf)
