/* NHWC max, average and global pools of bfloat16 images (kernels_pyx/pool_bf16.pyx): the window
 * row kernel of wb_pool512.h on bfloat16 elements, and the global pools.  Elements widen to float32
 * on load (a bfloat16 is the upper half of one); maxima and sums stay float32 in registers and
 * round to bfloat16 once, on store (VCVTNEPS2BF16: to nearest even, NaN kept quiet).  A maximum is
 * one of its inputs, so a max pool is exact.
 *
 * Only a build with AVX512-BF16 computes (wbp_native()); the others compile the stubs.
 */
#ifndef WB_POOL_BF16_H
#define WB_POOL_BF16_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>

#include "wb_pool512.h"

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#include <immintrin.h>

static inline int wbp_native(void) { return 1; }

static inline __m512 wbp_load(__mmask16 m, const uint16_t* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

static inline void wbp_store(uint16_t* p, __mmask16 m, __m512 v) {
    _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(v));
}

#define WB_POOL_ROW wb_pool512_row_bf16
#define WB_POOL_T uint16_t
#define WB_POOL_LOAD(m, p) wbp_load(m, p)
#define WB_POOL_STORE(p, m, v) wbp_store(p, m, v)
#include "wb_pool512_row.inc"

/* Pixels p0..p1-1 of image b of x (N, hw, C): each channel's max (NaN where any is NaN) or sum
 * into part (C floats).  Channels go 64 at a time (four registers), pixels two at a time into
 * two sets of registers, so that the adds do not wait on each other. */
static inline void wbp_global_part(const uint16_t* x, float* part, ptrdiff_t hw, ptrdiff_t C, ptrdiff_t b,
                                   ptrdiff_t p0, ptrdiff_t p1, int is_max) {
    const uint16_t* img = x + b * hw * C;
    for (ptrdiff_t c0 = 0; c0 < C; c0 += 64) {
        __m512 acc[2][4];
        __mmask16 mask[4], nan[4] = {0, 0, 0, 0};
        int v, nv = (int)((C - c0 < 64 ? C - c0 + 15 : 79) / 16);
        ptrdiff_t p;
        for (v = 0; v < nv; v++) {
            ptrdiff_t left = C - c0 - 16 * v;
            mask[v] = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
            acc[0][v] = acc[1][v] = _mm512_set1_ps(is_max ? -__builtin_inff() : 0.0f);
        }
        for (p = p0; p < p1; p++)
            for (v = 0; v < nv; v++) {
                __m512 e = wbp_load(mask[v], img + p * C + c0 + 16 * v);
                if (is_max) {
                    nan[v] |= _mm512_cmp_ps_mask(e, e, _CMP_UNORD_Q);
                    acc[p & 1][v] = _mm512_max_ps(acc[p & 1][v], e);
                } else {
                    acc[p & 1][v] = _mm512_add_ps(acc[p & 1][v], e);
                }
            }
        for (v = 0; v < nv; v++) {
            __m512 r = is_max ? _mm512_mask_mov_ps(_mm512_max_ps(acc[0][v], acc[1][v]), nan[v],
                                                   _mm512_set1_ps(__builtin_nanf("")))
                              : _mm512_add_ps(acc[0][v], acc[1][v]);
            _mm512_mask_storeu_ps(part + c0 + 16 * v, mask[v], r);
        }
    }
}

/* y (C,) of one image from its nparts parts (nparts x C floats, wbp_global_part's): the max (NaN
 * where a part is NaN) or the mean of hw pixels, rounded to bfloat16. */
static inline void wbp_global_finish(const float* parts, ptrdiff_t nparts, uint16_t* y, ptrdiff_t hw, ptrdiff_t C,
                                     int is_max) {
    for (ptrdiff_t c0 = 0; c0 < C; c0 += 16) {
        __mmask16 m = C - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - c0)) - 1);
        __m512 r = _mm512_maskz_loadu_ps(m, parts + c0);
        __mmask16 nan = _mm512_cmp_ps_mask(r, r, _CMP_UNORD_Q);
        for (ptrdiff_t k = 1; k < nparts; k++) {
            __m512 e = _mm512_maskz_loadu_ps(m, parts + k * C + c0);
            if (is_max) {
                nan |= _mm512_cmp_ps_mask(e, e, _CMP_UNORD_Q);
                r = _mm512_max_ps(r, e);
            } else {
                r = _mm512_add_ps(r, e);
            }
        }
        r = is_max ? _mm512_mask_mov_ps(r, nan, _mm512_set1_ps(__builtin_nanf("")))
                   : _mm512_mul_ps(r, _mm512_set1_ps(1.0f / (float)(hw > 0 ? hw : 1)));
        wbp_store(y + c0, m, r);
    }
}

#else
static inline int wbp_native(void) { return 0; }
static inline int wb_pool512_row_bf16(const uint16_t* x, uint16_t* y, ptrdiff_t b, ptrdiff_t oh, ptrdiff_t H,
                                      ptrdiff_t W, ptrdiff_t C, ptrdiff_t ldx, ptrdiff_t ldy, ptrdiff_t OH,
                                      ptrdiff_t OW, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw,
                                      ptrdiff_t pt, ptrdiff_t pl, const int* kh_lo, const int* kh_hi,
                                      const int* kw_lo, const int* kw_hi, const float* inv_h, const float* inv_w,
                                      int is_max) {
    return 0;
}
static inline void wbp_global_part(const uint16_t* x, float* part, ptrdiff_t hw, ptrdiff_t C, ptrdiff_t b,
                                   ptrdiff_t p0, ptrdiff_t p1, int is_max) {}
static inline void wbp_global_finish(const float* parts, ptrdiff_t nparts, uint16_t* y, ptrdiff_t hw, ptrdiff_t C,
                                     int is_max) {}
#endif
#endif
