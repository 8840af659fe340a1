/* bfloat16 basics shared by the bfloat16 kernels: whether this build computes with AVX512-BF16
 * (WBB_NATIVE), and the scalar and vector conversions between float32 and bfloat16. */
#ifndef WB_BF16_H
#define WB_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512BF16__)
#define WBB_NATIVE 1
#else
#define WBB_NATIVE 0
#endif

#ifdef __AVX512F__
#include <immintrin.h>
#define WB512_NATIVE 1
#else
#define WB512_NATIVE 0
#endif
#include "sgemm_epi512.h"

/* float32 -> bfloat16, round to nearest even; a NaN stays a NaN (quietened, sign kept). */
static inline uint16_t wbb_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float wbb_widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* n float32 values to bfloat16, round to nearest even (NaN kept). */
static inline void wbb_narrow(const float* src, uint16_t* dst, ptrdiff_t n) {
    ptrdiff_t j = 0;
#if WBB_NATIVE
    for (; j + 16 <= n; j += 16)
        _mm256_storeu_si256((__m256i*)(dst + j), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + j)));
    if (j < n) {
        __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        _mm256_mask_storeu_epi16(dst + j, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + j)));
        j = n;
    }
#endif
    for (; j < n; j++) dst[j] = wbb_round(src[j]);
}

#if WBB_NATIVE
#define WBB_AI static inline __attribute__((always_inline))

/* 16 bfloat16 values (under mask m) to float32. */
WBB_AI __m512 wbb_widen16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

WBB_AI __m512 wbb_load16(const uint16_t* p, __mmask16 m) {
    return wbb_widen16(_mm256_maskz_loadu_epi16(m, p));
}

/* wb512_act for kernels whose products are bfloat16: sigmoid and SiLU to 1.7e-4 relative
 * (wbm512_act_lowp), a tenth of the rounding those products already carry, for half the
 * work of the float32 forms (SiLU after a 1x1 layer of 32 channels cost 40% of the layer). */
WBB_AI void wbb_act(__m512* v0, __m512* v1, const wb512_epi* ep, __mmask16 m1) {
    if (ep->act <= 5) {
        wb512_act_cheap(v0, v1, ep);
    } else {
        *v0 = wbm512_act_lowp(ep->act, *v0);
        if (m1) *v1 = wbm512_act_lowp(ep->act, *v1);
    }
}
#endif

#endif
