# The bfloat16 GEMM of wb_gemm_bf16.h, for the modules built on it (gemm_bf16.pyx, winograd_bf16.pyx).
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint16_t

from _wb512_epi cimport wb512_epi

cdef extern from "wb_gemm_bf16.h" nogil:
    int WBB_NATIVE
    int WBB_NR
    int WBB_MR
    int WBB_AMX
    int WBB_ROWS
    int wbb_ready()
    ctypedef struct wbb_epi:
        wb512_epi e
        const float* bias
        const void* res
        Py_ssize_t ld_res
        int res_post, res_f32
    Py_ssize_t wbb_packed_words(Py_ssize_t k, Py_ssize_t n)
    void wbb_pack(Py_ssize_t k, Py_ssize_t n, const float* w, uint16_t* dst, Py_ssize_t p0, Py_ssize_t p1)
    int wbb_handles(int act)
    ctypedef struct wbb_geo:
        Py_ssize_t n, h, w, c, oh, ow
        int kh, kw, sh, sw, dh, dw, pt, pl
    void wbb_im2col(const wbb_geo* g, const void* x, int x_f32, Py_ssize_t i0, Py_ssize_t i1, uint16_t* dst)
    void wbb_block(Py_ssize_t n, Py_ssize_t k, const uint16_t* a, Py_ssize_t lda, const uint16_t* pb, void* c,
                   Py_ssize_t ldc, int f32, const wbb_epi* ep, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t p0,
                   Py_ssize_t p1)
    void wbb_narrow(const float* src, uint16_t* dst, Py_ssize_t n)


cdef inline void* _data(a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray> a)


cdef inline void fill_epilogue(wbb_epi* ep, bias, residual, Py_ssize_t ld_res, int act, double p0, double p1, post,
                               bint res_post):
    """``ep`` from arrays that ``check_epilogue`` (gemm_bf16.pyx) accepted."""
    ep.e.bias, ep.e.bias_per_row, ep.e.res, ep.e.ld_res = NULL, 0, NULL, 0
    ep.e.act, ep.e.p0, ep.e.p1, ep.e.res_post = act, p0, p1, 0
    ep.e.post_scale = <const float*> _data(None if post is None else post[0])
    ep.e.post_shift = <const float*> _data(None if post is None else post[1])
    ep.bias, ep.res, ep.ld_res, ep.res_post = <const float*> _data(bias), _data(residual), ld_res, res_post
    ep.res_f32 = residual is not None and residual.dtype == np.float32
