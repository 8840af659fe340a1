"""The argument checks the kernel modules run in Python before any ``nogil`` code, in one place so
that every kernel refuses a bad array with the same words."""
import numpy as np

from workbench._kernels.buffers import aligned_empty


def float32_array(a, name, what, shape=None, size=None, min_size=None, writeable=False):
    """Raise unless ``a`` is a C-contiguous float32 NumPy array (of ``shape``, of exactly ``size``
    or at least ``min_size`` elements, writable where ``writeable``); ``what`` names the kernel
    and ``name`` the argument in the message."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what}: {name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{what}: {name} must be float32, got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{what}: {name} must be C-contiguous")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{what}: {name} is read-only")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{what}: {name} has shape {a.shape}, expected {tuple(shape)}")
    if size is not None and a.size != size:
        raise ValueError(f"{what}: {name} has {a.size} elements, expected {size}")
    if min_size is not None and a.size < min_size:
        raise ValueError(f"{what}: {name} has {a.size} elements, needs {min_size}")


def conversion_pair(src, dst, src_dtype, dst_dtype, dst_shape, what):
    """Raise unless ``src`` and ``dst`` are C-contiguous NumPy arrays of ``src_dtype`` and
    ``dst_dtype``, ``dst`` writeable and of ``dst_shape`` (a conversion kernel's two arrays)."""
    if not isinstance(src, np.ndarray) or not isinstance(dst, np.ndarray):
        raise TypeError(f"{what}: expected NumPy arrays, got {type(src).__name__} -> {type(dst).__name__}")
    if src.dtype != src_dtype or dst.dtype != dst_dtype:
        raise TypeError(f"{what}: expected {np.dtype(src_dtype)} -> {np.dtype(dst_dtype)} arrays, got {src.dtype} -> {dst.dtype}")
    if tuple(dst.shape) != tuple(dst_shape):
        raise ValueError(f"{what}: source {src.shape} needs destination {tuple(dst_shape)}, got {dst.shape}")
    if not src.flags.c_contiguous or not dst.flags.c_contiguous:
        raise ValueError(f"{what}: source and destination must be C-contiguous")
    if not dst.flags.writeable:
        raise ValueError(f"{what}: destination is read-only")


def scratch_array(scratch, nbytes, what, align=4):
    """The caller's ``scratch`` (a routine's workspace), checked to be a writeable C-contiguous
    array of at least ``nbytes`` bytes starting on an ``align``-byte boundary; or, where None, a
    new array of that size for this call alone."""
    if scratch is None:
        return aligned_empty(max(nbytes, 1), np.uint8)
    if (not isinstance(scratch, np.ndarray) or not scratch.flags.c_contiguous or not scratch.flags.writeable
            or scratch.nbytes < nbytes or scratch.ctypes.data % align):
        raise ValueError(f"{what}: scratch must be a writeable C-contiguous array of at least {nbytes} bytes, "
                         f"{align}-byte aligned; got {getattr(scratch, 'nbytes', type(scratch).__name__)!r} bytes")
    return scratch
