/* The bfloat16 GEMM's epilogue on its float32 sums: bias, a residual (bfloat16 or float32, before
 * the activation or after it and the affine), the activation and the post-activation affine of
 * sgemm_epi512.h, then the rounding to bfloat16 or a float32 store (wbb_finish); and the staged
 * form of it the micro-kernels use for transcendental activations (wbb_stage, wbb_finish_staged). */
#ifndef WB_EPI_BF16_H
#define WB_EPI_BF16_H

#include "wb_bf16.h"

/* The epilogue: wb512_epi's activation and affine (its bias_per_row 0, res NULL) plus a
 * residual of C's shape (leading dimension ld_res; bfloat16, or float32 when res_f32) and the bias. */
typedef struct {
    wb512_epi e;
    const float* bias;
    const void* res;
    ptrdiff_t ld_res;
    int res_post, res_f32;
} wbb_epi;

/* Element `at` of the residual, as float32. */
static inline float wbb_res1(const wbb_epi* ep, ptrdiff_t at) {
    return ep->res_f32 ? ((const float*)ep->res)[at] : wbb_widen(((const uint16_t*)ep->res)[at]);
}

#if WBB_NATIVE
WBB_AI void wbb_store_row(void* c, int f32, __m512 v0, __m512 v1, __mmask16 m0, __mmask16 m1) {
    if (f32) {
        _mm512_mask_storeu_ps((float*)c, m0, v0);
        _mm512_mask_storeu_ps((float*)c + 16, m1, v1);
    } else {
        _mm256_mask_storeu_epi16((uint16_t*)c, m0, (__m256i)_mm512_cvtneps_pbh(v0));
        _mm256_mask_storeu_epi16((uint16_t*)c + 16, m1, (__m256i)_mm512_cvtneps_pbh(v1));
    }
}

/* The epilogue on row `row` (absolute) of a block, columns col0.., then the store; `cheap`: the
 * activation is one of codes 0-5 (the transcendental ones' code left out). */
WBB_AI void wbb_finish(__m512 v0, __m512 v1, const wbb_epi* ep, ptrdiff_t row, ptrdiff_t col0, __m512 bv0,
                       __m512 bv1, __mmask16 m0, __mmask16 m1, void* c, int f32, const int cheap) {
    __m512 r0 = _mm512_setzero_ps(), r1 = r0;
    if (ep->res != NULL) {
        ptrdiff_t at = row * ep->ld_res + col0;
        if (ep->res_f32) {
            r0 = _mm512_maskz_loadu_ps(m0, (const float*)ep->res + at);
            r1 = _mm512_maskz_loadu_ps(m1, (const float*)ep->res + at + 16);
        } else {
            r0 = wbb_load16((const uint16_t*)ep->res + at, m0);
            r1 = wbb_load16((const uint16_t*)ep->res + at + 16, m1);
        }
    }
    if (ep->bias != NULL) {
        v0 = _mm512_add_ps(v0, bv0);
        v1 = _mm512_add_ps(v1, bv1);
    }
    if (ep->res != NULL && !ep->res_post) {
        v0 = _mm512_add_ps(v0, r0);
        v1 = _mm512_add_ps(v1, r1);
    }
    if (cheap)   /* codes 0-5 only: the micro-kernels stage the others (wbb_staged) */
        wb512_act_cheap(&v0, &v1, &ep->e);
    else
        wbb_act(&v0, &v1, &ep->e, m1);
    if (ep->e.post_scale != NULL)
        wb512_post(&v0, &v1, &ep->e, row, col0, m0, m1);
    if (ep->res != NULL && ep->res_post) {
        v0 = _mm512_add_ps(v0, r0);
        v1 = _mm512_add_ps(v1, r1);
    }
    wbb_store_row(c, f32, v0, v1, m0, m1);
}

/* A transcendental activation (sigmoid, tanh, SiLU, GELU, erf, exp: codes 6 and up) takes some
 * forty vector operations and a dozen registers.  Applied row by row in the micro-kernel, with the
 * other rows' accumulators live, it spilled them, and inlined for each of the twelve rows it
 * made the kernel too large for the instruction cache: such an epilogue cost as much as a K = 48
 * product.  So the kernel stages the rows (bias and a leading residual added) in a float32 tile,
 * and one out-of-line pass over the tile applies the rest. */
static inline int wbb_staged(const wbb_epi* ep) { return ep->e.act >= 6; }

/* The part of the epilogue before the activation, into `dst` (32 floats). */
WBB_AI void wbb_stage(__m512 v0, __m512 v1, const wbb_epi* ep, ptrdiff_t row, ptrdiff_t col0, __m512 bv0,
                      __m512 bv1, __mmask16 m0, __mmask16 m1, float* dst) {
    if (ep->bias != NULL) {
        v0 = _mm512_add_ps(v0, bv0);
        v1 = _mm512_add_ps(v1, bv1);
    }
    if (ep->res != NULL && !ep->res_post) {
        ptrdiff_t at = row * ep->ld_res + col0;
        v0 = _mm512_add_ps(v0, ep->res_f32 ? _mm512_maskz_loadu_ps(m0, (const float*)ep->res + at)
                                           : wbb_load16((const uint16_t*)ep->res + at, m0));
        v1 = _mm512_add_ps(v1, ep->res_f32 ? _mm512_maskz_loadu_ps(m1, (const float*)ep->res + at + 16)
                                           : wbb_load16((const uint16_t*)ep->res + at + 16, m1));
    }
    _mm512_storeu_ps(dst, v0);
    _mm512_storeu_ps(dst + 16, v1);
}

/* The rest of the epilogue on mr staged rows (tile: 32 floats a row), then the stores. */
__attribute__((noinline)) static void wbb_finish_staged(const float* tile, int mr, const wbb_epi* ep,
                                                        ptrdiff_t row0, ptrdiff_t col0, __mmask16 m0,
                                                        __mmask16 m1, void* c, ptrdiff_t ldc, int f32) {
    wbb_epi rest = *ep;   /* bias and a leading residual are in the tile already */
    rest.bias = NULL;
    if (!rest.res_post)
        rest.res = NULL;
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < mr; i++)
        wbb_finish(_mm512_loadu_ps(tile + 32 * i), _mm512_loadu_ps(tile + 32 * i + 16), &rest, row0 + i, col0,
                   zero, zero, m0, m1, (char*)c + i * ldc * (f32 ? 4 : 2), f32, 0);
}

#endif

#endif
