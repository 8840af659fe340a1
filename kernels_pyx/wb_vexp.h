/* Vectorised exp and the row reductions of Softmax, for the baseline, AVX2 and AVX-512 builds.
 *
 * exp is Cephes' expf: x = n ln2 + r with |r| <= ln2/2, a degree-6 polynomial in r, 2^n put
 * into the exponent bits (relative error ~1e-7, no libm call).  Inputs below -87.3 give 0 (the
 * true value is a denormal or smaller, and 2^n would leave the exponent range); NaN stays NaN
 * (min/max take the input as their second operand, which the instructions return on NaN).
 * Sums run in float lanes, which keeps the rounding error of a 10^4-long row near 1e-6.
 * The same source compiles to each ISA; the baseline gets plain loops GCC vectorises for SSE2.
 */
#ifndef WB_VEXP_H
#define WB_VEXP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define WB_EXP_LO (-87.3f)
#define WB_EXP_HI (88.3f)
#define WB_LOG2E 1.44269504088896341f
#define WB_LN2_HI 0.693359375f
#define WB_LN2_LO (-2.12194440e-4f)
#define WB_P0 1.9875691500e-4f
#define WB_P1 1.3981999507e-3f
#define WB_P2 8.3334519073e-3f
#define WB_P3 4.1665795894e-2f
#define WB_P4 1.6666665459e-1f
#define WB_P5 5.0000001201e-1f

static inline float wb_expf(float x) {
    float c = x < WB_EXP_HI ? x : WB_EXP_HI, fx, r, y;
    int32_t e;
    uint32_t bits;
    if (x != x) return x;
    if (c < WB_EXP_LO) return 0.0f;
    fx = c * WB_LOG2E;
    fx = (float)(int32_t)(fx + (fx >= 0 ? 0.5f : -0.5f));
    r = c - fx * WB_LN2_HI - fx * WB_LN2_LO;
    y = ((((WB_P0 * r + WB_P1) * r + WB_P2) * r + WB_P3) * r + WB_P4) * r + WB_P5;
    y = y * r * r + r + 1.0f;
    e = (int32_t)fx + 127;
    bits = (uint32_t)e << 23;
    memcpy(&c, &bits, sizeof c);
    return y * c;
}

#if defined(__AVX512F__)
#define WB_VW 16
static inline __m512 wb_exp16(__m512 x) {
    __m512 c = _mm512_min_ps(_mm512_set1_ps(WB_EXP_HI), x);
    __mmask16 under = _mm512_cmp_ps_mask(c, _mm512_set1_ps(WB_EXP_LO), _CMP_LT_OQ);
    c = _mm512_max_ps(_mm512_set1_ps(WB_EXP_LO), c);
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(WB_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(WB_LN2_HI), c);
    r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(WB_LN2_LO), r);
    __m512 y = _mm512_fmadd_ps(_mm512_set1_ps(WB_P0), r, _mm512_set1_ps(WB_P1));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(WB_P2));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(WB_P3));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(WB_P4));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(WB_P5));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    return _mm512_mask_mov_ps(y, under, _mm512_setzero_ps());
}
#elif defined(__AVX2__)
#define WB_VW 8
static inline __m256 wb_exp8(__m256 x) {
    __m256 c = _mm256_min_ps(_mm256_set1_ps(WB_EXP_HI), x);
    __m256 under = _mm256_cmp_ps(c, _mm256_set1_ps(WB_EXP_LO), _CMP_LT_OQ);
    c = _mm256_max_ps(_mm256_set1_ps(WB_EXP_LO), c);
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(c, _mm256_set1_ps(WB_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(WB_LN2_HI), c);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(WB_LN2_LO), r);
    __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(WB_P0), r, _mm256_set1_ps(WB_P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(WB_P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(WB_P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(WB_P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(WB_P5));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}
static inline float wb_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline float wb_hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#else
#define WB_VW 1
#endif

/* max of x[0..n) (n >= 1); a NaN may or may not win, which Softmax does not mind: the NaN
 * reaches the sum through exp either way. */
static inline float wb_row_max(const float* x, ptrdiff_t n) {
    ptrdiff_t i = 0;
    float m = x[0];
#if defined(__AVX512F__)
    __m512 a = _mm512_set1_ps(x[0]), b = a;
    for (; i + 32 <= n; i += 32) {
        a = _mm512_max_ps(a, _mm512_loadu_ps(x + i));
        b = _mm512_max_ps(b, _mm512_loadu_ps(x + i + 16));
    }
    if (i < n) a = _mm512_max_ps(a, _mm512_mask_loadu_ps(a, (__mmask16)((1u << (n - i < 16 ? n - i : 16)) - 1), x + i));
    if (i + 16 < n) b = _mm512_max_ps(b, _mm512_mask_loadu_ps(b, (__mmask16)((1u << (n - i - 16)) - 1), x + i + 16));
    return _mm512_reduce_max_ps(_mm512_max_ps(a, b));
#elif defined(__AVX2__)
    __m256 a = _mm256_set1_ps(x[0]), b = a;
    for (; i + 16 <= n; i += 16) {
        a = _mm256_max_ps(a, _mm256_loadu_ps(x + i));
        b = _mm256_max_ps(b, _mm256_loadu_ps(x + i + 8));
    }
    m = wb_hmax8(_mm256_max_ps(a, b));
#endif
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* out[i] = exp(x[i] - shift); returns the sum of out (out may be x). */
static inline float wb_exp_shift_sum(const float* x, float shift, float* out, ptrdiff_t n) {
    ptrdiff_t i = 0;
    float total = 0;
#if defined(__AVX512F__)
    __m512 s = _mm512_set1_ps(shift), a = _mm512_setzero_ps(), b = a;
    for (; i + 32 <= n; i += 32) {
        __m512 e0 = wb_exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), s));
        __m512 e1 = wb_exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), s));
        _mm512_storeu_ps(out + i, e0);
        _mm512_storeu_ps(out + i + 16, e1);
        a = _mm512_add_ps(a, e0);
        b = _mm512_add_ps(b, e1);
    }
    for (; i < n; i += 16) {
        __mmask16 k = (__mmask16)((1u << (n - i < 16 ? n - i : 16)) - 1);
        __m512 e0 = wb_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), s));
        _mm512_mask_storeu_ps(out + i, k, e0);
        a = _mm512_add_ps(a, _mm512_maskz_mov_ps(k, e0));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
#elif defined(__AVX2__)
    __m256 s = _mm256_set1_ps(shift), a = _mm256_setzero_ps(), b = a;
    for (; i + 16 <= n; i += 16) {
        __m256 e0 = wb_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        __m256 e1 = wb_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), s));
        _mm256_storeu_ps(out + i, e0);
        _mm256_storeu_ps(out + i + 8, e1);
        a = _mm256_add_ps(a, e0);
        b = _mm256_add_ps(b, e1);
    }
    total = wb_hsum8(_mm256_add_ps(a, b));
#else
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    ptrdiff_t l;
    for (; i + 8 <= n; i += 8)
        for (l = 0; l < 8; l++) {
            out[i + l] = wb_expf(x[i + l] - shift);
            lanes[l] += out[i + l];
        }
    for (l = 0; l < 8; l++) total += lanes[l];
#endif
    for (; i < n; i++) {
        out[i] = wb_expf(x[i] - shift);
        total += out[i];
    }
    return total;
}

/* out[i] = exp(x[i] - shift[i]); acc[i] += out[i] (out may be x). */
static inline void wb_exp_shiftv_acc(const float* x, const float* shift, float* out, float* acc, ptrdiff_t n) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    for (; i < n; i += 16) {
        __mmask16 k = (__mmask16)((1u << (n - i < 16 ? n - i : 16)) - 1);
        __m512 e = wb_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, shift + i)));
        _mm512_mask_storeu_ps(out + i, k, e);
        _mm512_mask_storeu_ps(acc + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, acc + i), e));
    }
#elif defined(__AVX2__)
    for (; i + 8 <= n; i += 8) {
        __m256 e = wb_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(shift + i)));
        _mm256_storeu_ps(out + i, e);
        _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), e));
    }
#endif
    for (; i < n; i++) {
        out[i] = wb_expf(x[i] - shift[i]);
        acc[i] += out[i];
    }
}

#endif
