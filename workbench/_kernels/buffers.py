"""Arrays that start on a cache line, for packed weights and scratch.

NumPy puts a large array 16 bytes past a page boundary (the allocator's header), so every
64-byte row of a packed panel straddles two cache lines.  AMX tile loads pay for that most: a
bfloat16 convolution whose weights and image were both 16 bytes off ran 3.3x slower than with
both on a line.  A copy of one of these arrays (``np.copy``, pickling) is an ordinary array again.
"""
import numpy as np

#: Bytes of a cache line, and of an AVX-512 register.
LINE = 64


def aligned_empty(shape, dtype, align=LINE):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` starting on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start: start + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype, align=LINE):
    """:func:`aligned_empty`, filled with zeros."""
    out = aligned_empty(shape, dtype, align)
    out[...] = 0
    return out


def aligned_array(a, dtype=None, align=LINE):
    """``a`` as a C-contiguous array (of ``dtype``) starting on an ``align``-byte boundary:
    ``a`` itself where it already is one, else a copy."""
    a = np.asarray(a, dtype)
    if a.flags.c_contiguous and a.ctypes.data % align == 0:
        return a
    out = aligned_empty(a.shape, a.dtype, align)
    out[...] = a
    return out
