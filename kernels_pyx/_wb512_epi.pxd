# The fused epilogue of our AVX-512 kernels (sgemm_epi512.h), declared once for the modules
# whose own headers include it (no include here: each header defines WB512_NATIVE first).
cdef extern from * nogil:
    ctypedef struct wb512_epi:
        const float* bias
        int bias_per_row
        const float* res
        Py_ssize_t ld_res
        int act
        float p0, p1
        const float* post_scale
        const float* post_shift
        int res_post
    int wb512_epi_handles(int act)
