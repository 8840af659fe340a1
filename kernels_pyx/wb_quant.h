/* QuantizeLinear to uint8 over a flat run: x / scale rounded half to even, + zero point,
 * saturated to [0, 255], a NaN to 0 (MAXPS returns its second operand for one).  AVX-512 where
 * the build has it, else the same arithmetic a value at a time. */
#ifndef WB_QUANT_H
#define WB_QUANT_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <immintrin.h>

static inline uint8_t wbq8_one(float x, float scale, float zp) {
    float r = nearbyintf(x / scale) + zp;
    r = r > 0.0f ? r : 0.0f;
    return (uint8_t)(r < 255.0f ? r : 255.0f);
}

static void wbq8_quantize(const float* x, uint8_t* q, ptrdiff_t n, float scale, float zp) {
    ptrdiff_t i = 0;
#if defined(__AVX512F__)
    const __m512 s = _mm512_set1_ps(scale), z = _mm512_set1_ps(zp);
    const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
    for (; i + 16 <= n; i += 16) {
        __m512 r = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + i), s),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, z), lo), hi);
        _mm_storeu_si128((__m128i*)(q + i), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r)));
    }
#endif
    for (; i < n; i++) q[i] = wbq8_one(x[i], scale, zp);
}

#endif
