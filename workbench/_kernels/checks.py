"""The argument checks the kernel modules run in Python before any ``nogil`` code, in one place so
that every kernel refuses a bad array with the same words."""
import numpy as np


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
