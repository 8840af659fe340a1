/* bfloat16 rows of eltwise_chain.pyx: widened to float32 on the way in, rounded once on the
 * way out (to nearest even, NaN kept quiet, as ml_dtypes rounds). */
#ifndef WB_CHAIN_BF16_H
#define WB_CHAIN_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512BW__)
#include <immintrin.h>
/* Short rows (a pixel's 24 channels of a Concat's part) pay for the compiler's scalar tails:
 * here 16 at a time and one masked step. */
static inline __mmask16 wbc_mask(ptrdiff_t left) {
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}
static inline void wbc_widen16(float* o, const uint16_t* x, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i += 16) {
        __mmask16 m = wbc_mask(n - i);
        __m512i v = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x + i));
        _mm512_mask_storeu_ps(o + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
}
static inline void wbc_round16(uint16_t* o, const float* x, ptrdiff_t n) {
    const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
    const __m512i quiet = _mm512_set1_epi32(0x40), abs = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf = _mm512_set1_epi32(0x7f800000);
    for (ptrdiff_t i = 0; i < n; i += 16) {
        __mmask16 m = wbc_mask(n - i);
        __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, x + i));
        __m512i hi = _mm512_srli_epi32(u, 16);
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, half), _mm512_and_si512(hi, one)), 16);
        __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs), inf);
        _mm512_mask_cvtepi32_storeu_epi16(o + i, m, _mm512_mask_blend_epi32(nan, r, _mm512_or_si512(hi, quiet)));
    }
}
#endif
/* n bfloat16 values read every st elements -> float32 (exact). */
static inline void wbc_widen(float* o, const uint16_t* x, ptrdiff_t st, ptrdiff_t n) {
    ptrdiff_t i;
    uint32_t u;
#if defined(__AVX512BW__)
    if (st == 1) {
        wbc_widen16(o, x, n);
        return;
    }
#endif
    if (st == 1)   /* the common case, on its own so that it vectorises */
        for (i = 0; i < n; i++) {
            u = (uint32_t)x[i] << 16;
            memcpy(&o[i], &u, 4);
        }
    else
        for (i = 0; i < n; i++) {
            u = (uint32_t)x[i * st] << 16;
            memcpy(&o[i], &u, 4);
        }
}
/* n float32 -> bfloat16, to nearest even; a NaN stays a (quiet) NaN. */
static inline void wbc_round(uint16_t* o, const float* x, ptrdiff_t n) {
    ptrdiff_t i;
#if defined(__AVX512BW__)
    wbc_round16(o, x, n);
    return;
#endif
    for (i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, q = (u >> 16) | 0x40u;
        o[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

#endif
