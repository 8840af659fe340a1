# Shared by depthwise.pyx's builds: pointer types the GCC vectoriser trusts not to alias.
cdef extern from *:
    ctypedef float* fptr "float * __restrict__"
    ctypedef const float* cfptr "const float * __restrict__"
