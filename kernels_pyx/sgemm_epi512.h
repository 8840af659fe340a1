/* The fused epilogue of our AVX-512 SGEMM (sgemm_avx512.h, which includes this after defining
 * WB512_NATIVE): bias, residual and activation on a block of C, in registers before the
 * micro-kernel's store (wb512_epi_regs) or as a pass right after it (wb512_epi_block), and the
 * column masks of a panel of up to 32 columns. */
#ifndef WB_SGEMM_EPI512_H
#define WB_SGEMM_EPI512_H

#include "wb_vmath512.h"

#if WB512_NATIVE
/* Masks of the two 16-column halves of a panel with nr (<= 32) live columns. */
static inline __mmask16 wb512_mask_lo(int nr) { return nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1); }
static inline __mmask16 wb512_mask_hi(int nr) {
    return nr >= 32 ? (__mmask16)0xFFFF : nr <= 16 ? (__mmask16)0 : (__mmask16)((1u << (nr - 16)) - 1);
}
#endif

/* A fused epilogue applied to each block of C on its last K block, in registers before the
 * store (wb512_micro_da) or right after it (short tail strips, wb512_epi_block): bias (per
 * column, or per row when bias_per_row), a residual of C's
 * layout (leading dimension ld_res), then an activation: 0 none, 1 ReLU, 2 clip to [p0, p1],
 * 3 leaky ReLU with slope p0, 4 hard sigmoid max(0, min(1, p0 * x + p1)), 5 hard swish
 * x * max(0, min(1, x / 6 + 1 / 2)), and in AVX-512 builds 6 sigmoid, 8 tanh, 9 SiLU, 10 GELU,
 * 11 GELU (tanh form) (the codes of conv_gemm's Epi; wb512_epi_handles says which); with
 * res_post the residual comes last instead, after the activation and the affine.
 * bias and res point at C's row 0 (the caller offsets them), columns are absolute. */
typedef struct {
    const float* bias;
    int bias_per_row;
    const float* res;
    ptrdiff_t ld_res;
    int act;
    float p0, p1;
    /* after the activation, per column (per row when bias_per_row): v * post_scale + post_shift;
     * NULL: none (a learnable affine after a convolution's activation, PP-LCNetV3's) */
    const float* post_scale;
    const float* post_shift;
    /* the residual is added last, after the activation (and the affine): act(conv + bias) + res,
     * a YOLO bottleneck's shortcut */
    int res_post;
} wb512_epi;

#if WB512_NATIVE
static inline int wb512_epi_handles(int act) { return (act >= 0 && act <= 5) || wbm512_has(act); }
#else
static inline int wb512_epi_handles(int act) { return act >= 0 && act <= 5; }
#endif

#if WB512_NATIVE
/* Hard sigmoid (act 4) and hard swish (act 5) of v, the same operations in the same order on
 * every path (MAXPS/MINPS with the value second keep a NaN). */
static inline __attribute__((always_inline)) __m512 wb512_hard(__m512 v, int act, float p0, float p1) {
    __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
    __m512 a = act == 4 ? _mm512_set1_ps(p0) : _mm512_set1_ps(1.0f / 6.0f);
    __m512 b = act == 4 ? _mm512_set1_ps(p1) : _mm512_set1_ps(0.5f);
    __m512 t = _mm512_min_ps(one, _mm512_max_ps(zero, _mm512_add_ps(_mm512_mul_ps(v, a), b)));
    return act == 4 ? t : _mm512_mul_ps(v, t);
}
#endif

#if WB512_NATIVE
/* wb512_act for codes 0 to 5 only (none, ReLU, clip, leaky ReLU, hard sigmoid, hard swish). */
static inline __attribute__((always_inline)) void wb512_act_cheap(__m512* v0, __m512* v1, const wb512_epi* ep) {
    __m512 zero = _mm512_setzero_ps(), lo = _mm512_set1_ps(ep->p0), hi = _mm512_set1_ps(ep->p1);
    if (ep->act == 1) {
        *v0 = _mm512_max_ps(zero, *v0);
        *v1 = _mm512_max_ps(zero, *v1);
    } else if (ep->act == 2) {
        *v0 = _mm512_min_ps(hi, _mm512_max_ps(lo, *v0));
        *v1 = _mm512_min_ps(hi, _mm512_max_ps(lo, *v1));
    } else if (ep->act == 3) {
        *v0 = _mm512_mask_mul_ps(*v0, _mm512_cmp_ps_mask(*v0, zero, _CMP_LT_OQ), *v0, lo);
        *v1 = _mm512_mask_mul_ps(*v1, _mm512_cmp_ps_mask(*v1, zero, _CMP_LT_OQ), *v1, lo);
    } else if (ep->act == 4 || ep->act == 5) {
        *v0 = wb512_hard(*v0, ep->act, ep->p0, ep->p1);
        *v1 = wb512_hard(*v1, ep->act, ep->p0, ep->p1);
    }
}

/* The activation of one row of a block (two registers; m1 == 0: the second is padding, and the
 * transcendental functions skip it).  MAXPS/MINPS return their second operand when either is
 * NaN: the value goes second, so NaN propagates as in ONNX Runtime. */
static inline __attribute__((always_inline)) void wb512_act(__m512* v0, __m512* v1, const wb512_epi* ep,
                                                            __mmask16 m1) {
    if (ep->act <= 5) {
        wb512_act_cheap(v0, v1, ep);
    } else {
        *v0 = wbm512_act(ep->act, *v0);
        if (m1) *v1 = wbm512_act(ep->act, *v1);
    }
}
#endif

#if WB512_NATIVE
/* The post-activation affine of one row of a block (two registers, masks of the live columns). */
static inline __attribute__((always_inline)) void wb512_post(__m512* v0, __m512* v1, const wb512_epi* ep,
                                                             ptrdiff_t row, ptrdiff_t col0, __mmask16 m0,
                                                             __mmask16 m1) {
    if (ep->bias_per_row) {
        __m512 s = _mm512_set1_ps(ep->post_scale[row]), t = _mm512_set1_ps(ep->post_shift[row]);
        *v0 = _mm512_add_ps(_mm512_mul_ps(*v0, s), t);
        *v1 = _mm512_add_ps(_mm512_mul_ps(*v1, s), t);
    } else {
        *v0 = _mm512_add_ps(_mm512_mul_ps(*v0, _mm512_maskz_loadu_ps(m0, ep->post_scale + col0)),
                            _mm512_maskz_loadu_ps(m0, ep->post_shift + col0));
        *v1 = _mm512_add_ps(_mm512_mul_ps(*v1, _mm512_maskz_loadu_ps(m1, ep->post_scale + col0 + 16)),
                            _mm512_maskz_loadu_ps(m1, ep->post_shift + col0 + 16));
    }
}
#endif

#if WB512_NATIVE
/* The epilogue on one row of a block held in two registers (bv0/bv1: the per-column bias). */
static inline __attribute__((always_inline)) void wb512_epi_regs(__m512* v0, __m512* v1, const wb512_epi* ep,
                                                                 ptrdiff_t row, ptrdiff_t col0, __m512 bv0,
                                                                 __m512 bv1, __mmask16 m0, __mmask16 m1) {
    if (ep->bias != NULL) {
        if (ep->bias_per_row) {
            __m512 b = _mm512_set1_ps(ep->bias[row]);
            *v0 = _mm512_add_ps(*v0, b);
            *v1 = _mm512_add_ps(*v1, b);
        } else {
            *v0 = _mm512_add_ps(*v0, bv0);
            *v1 = _mm512_add_ps(*v1, bv1);
        }
    }
    if (ep->res != NULL && !ep->res_post) {
        const float* rr = ep->res + row * ep->ld_res + col0;
        *v0 = _mm512_add_ps(*v0, _mm512_maskz_loadu_ps(m0, rr));
        *v1 = _mm512_add_ps(*v1, _mm512_maskz_loadu_ps(m1, rr + 16));
    }
    wb512_act(v0, v1, ep, m1);
    if (ep->post_scale != NULL)
        wb512_post(v0, v1, ep, row, col0, m0, m1);
    if (ep->res != NULL && ep->res_post) {
        const float* rr = ep->res + row * ep->ld_res + col0;
        *v0 = _mm512_add_ps(*v0, _mm512_maskz_loadu_ps(m0, rr));
        *v1 = _mm512_add_ps(*v1, _mm512_maskz_loadu_ps(m1, rr + 16));
    }
}
#endif

/* Activation codes 0-5 on one float, for the scalar paths of baseline builds. */
static inline float wb512_act1(float t, const wb512_epi* ep) {
    if (ep->act == 1) t = t < 0 ? 0 : t;   /* NaN stays NaN */
    else if (ep->act == 2) t = t < ep->p0 ? ep->p0 : (t > ep->p1 ? ep->p1 : t);
    else if (ep->act == 3) t = t >= 0 ? t : t * ep->p0;
    else if (ep->act == 4 || ep->act == 5) {
        float h = ep->act == 4 ? t * ep->p0 + ep->p1 : t * (1.0f / 6.0f) + 0.5f;
        h = h < 0 ? 0 : h;
        h = h > 1 ? 1 : h;
        t = ep->act == 4 ? h : t * h;
    }
    return t;
}

static inline void wb512_epi_block(float* c, ptrdiff_t ldc, int mr, int nr, const wb512_epi* ep,
                                   ptrdiff_t row0, ptrdiff_t col0) {
    int i;
#if WB512_NATIVE
    __mmask16 m0 = wb512_mask_lo(nr), m1 = wb512_mask_hi(nr);
    __m512 bv0 = _mm512_setzero_ps(), bv1 = bv0;
    if (ep->bias != NULL && !ep->bias_per_row) {
        bv0 = _mm512_maskz_loadu_ps(m0, ep->bias + col0);
        bv1 = _mm512_maskz_loadu_ps(m1, ep->bias + col0 + 16);
    }
    for (i = 0; i < mr; i++) {
        float* cr = c + i * ldc;
        __m512 v0 = _mm512_maskz_loadu_ps(m0, cr), v1 = _mm512_maskz_loadu_ps(m1, cr + 16);
        wb512_epi_regs(&v0, &v1, ep, row0 + i, col0, bv0, bv1, m0, m1);
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
#else
    int j;
    for (i = 0; i < mr; i++)
        for (j = 0; j < nr; j++) {
            float t = c[i * ldc + j];
            if (ep->bias != NULL) t += ep->bias_per_row ? ep->bias[row0 + i] : ep->bias[col0 + j];
            if (ep->res != NULL && !ep->res_post) t += ep->res[(row0 + i) * ep->ld_res + col0 + j];
            t = wb512_act1(t, ep);
            if (ep->post_scale != NULL) {
                ptrdiff_t ch = ep->bias_per_row ? row0 + i : col0 + j;
                t = t * ep->post_scale[ch] + ep->post_shift[ch];
            }
            if (ep->res != NULL && ep->res_post) t += ep->res[(row0 + i) * ep->ld_res + col0 + j];
            c[i * ldc + j] = t;
        }
#endif
}


#endif
