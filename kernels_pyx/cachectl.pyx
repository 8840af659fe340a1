# cython: language_level=3
"""Evicting arrays from the CPU caches, so that the profiler can time a routine the way it runs
inside a model: its weights (and packed or transformed copies of them) come from memory, not from
the caches the previous repeat left them in.  x86-64 uses ``clflush`` (SSE2, in every x86-64 CPU);
elsewhere :data:`available` is False and :func:`evict` does nothing.
"""
import numpy as np
cimport numpy as cnp

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:   # NumPy < 2
    from numpy import byte_bounds

cnp.import_array()

cdef extern from *:
    """
    #if defined(__x86_64__) || defined(_M_X64)
    #include <emmintrin.h>
    #define WB_HAVE_CLFLUSH 1
    static void wb_evict(const char* p, Py_ssize_t n) {
        Py_ssize_t i;
        for (i = 0; i < n; i += 64) _mm_clflush(p + i);
        if (n > 0) _mm_clflush(p + n - 1);
        _mm_mfence();
    }
    #else
    #define WB_HAVE_CLFLUSH 0
    static void wb_evict(const char* p, Py_ssize_t n) { (void)p; (void)n; }
    #endif
    """
    int WB_HAVE_CLFLUSH
    void wb_evict(const char* p, Py_ssize_t n) nogil

#: True where :func:`evict` really flushes (x86-64).
available = bool(WB_HAVE_CLFLUSH)


def evict(arrays):
    """Flush every cache line of each NumPy array in ``arrays`` (any iterable) from all caches.
    Returns the number of bytes flushed.  Non-contiguous arrays are flushed over their whole
    memory span."""
    cdef Py_ssize_t total = 0, n
    cdef const char* p
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"evict: expected NumPy arrays, got {type(a).__name__}")
        if a.size == 0:
            continue
        lo, hi = byte_bounds(a)
        n = hi - lo
        p = <const char*> <size_t> lo
        with nogil:
            wb_evict(p, n)
        total += n
    return total
