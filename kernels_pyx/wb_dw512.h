/* One output row of an NHWC depthwise convolution with AVX-512 registers (dilation 1, any kernel
 * size, strides 1 or 2), for kernels_pyx/depthwise.pyx's AVX-512 variant.
 *
 * The auto-vectorised row kernels (_depthwise_nhwc.pxd) sum one kernel row per pass and store
 * the outputs after each; with 16 to 32 channels a pass is one or two vectors, and the loop set-up
 * costs as much as the FMAs.  Here eight output pixels of one 16-channel block stay in eight
 * accumulators over all KH x KW taps, each weight vector is loaded once for the eight, and the
 * outputs are stored once.  The last block of a channel count that is not a multiple of 16 runs
 * under a mask, so any C works.  Pixels whose window crosses the left or right border, and the
 * fewer than eight at a row's end, go one at a time with their taps checked.
 *
 * wb_dw512_row returns 1 when it computed the row (bias included, then the activation act: 0
 * none, 1 ReLU, 2 clip to [p0, p1], 3 leaky ReLU with slope p0, 4 hard sigmoid, 5 hard swish,
 * applied in registers before the store), 0 in a build without AVX-512 (the caller then runs the
 * portable kernels).
 */
#ifndef WB_DW512_H
#define WB_DW512_H

#include <stddef.h>

#ifdef __AVX512F__
#include <immintrin.h>

#define WB_DW512_P 8

typedef struct { int act; float p0, p1; } wb_dw512_act;

/* The activation on v, NaN kept as in ONNX Runtime (MAXPS/MINPS with the value second). */
static inline __attribute__((always_inline)) __m512 wb_dw512_apply(__m512 v, const wb_dw512_act* a) {
    __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), t;
    switch (a->act) {
    case 1: return _mm512_max_ps(zero, v);
    case 2: return _mm512_min_ps(_mm512_set1_ps(a->p1), _mm512_max_ps(_mm512_set1_ps(a->p0), v));
    case 3: return _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), v, _mm512_set1_ps(a->p0));
    case 4:
        t = _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(a->p0)), _mm512_set1_ps(a->p1));
        return _mm512_min_ps(one, _mm512_max_ps(zero, t));
    case 5:
        t = _mm512_add_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.0f / 6.0f)), _mm512_set1_ps(0.5f));
        return _mm512_mul_ps(v, _mm512_min_ps(one, _mm512_max_ps(zero, t)));
    default: return v;
    }
}

/* Eight interior pixels (their windows inside the row), one channel block under mask m. */
static inline void wb_dw512_px8(const float* x0, ptrdiff_t rowstride, const float* w, const float* bias,
                                float* o, ptrdiff_t C, ptrdiff_t sC, ptrdiff_t kh0, ptrdiff_t kh1,
                                ptrdiff_t KW, __mmask16 m, const wb_dw512_act* act) {
    __m512 b = _mm512_maskz_loadu_ps(m, bias);
    __m512 a0 = b, a1 = b, a2 = b, a3 = b, a4 = b, a5 = b, a6 = b, a7 = b;
    for (ptrdiff_t kh = kh0; kh < kh1; kh++) {
        const float* xr = x0 + kh * rowstride;
        const float* wr = w + kh * KW * C;
        for (ptrdiff_t kw = 0; kw < KW; kw++) {
            __m512 wv = _mm512_maskz_loadu_ps(m, wr + kw * C);
            const float* q = xr + kw * C;
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q), wv, a0);
            a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + sC), wv, a1);
            a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 2 * sC), wv, a2);
            a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 3 * sC), wv, a3);
            a4 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 4 * sC), wv, a4);
            a5 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 5 * sC), wv, a5);
            a6 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 6 * sC), wv, a6);
            a7 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + 7 * sC), wv, a7);
        }
    }
    _mm512_mask_storeu_ps(o, m, wb_dw512_apply(a0, act));
    _mm512_mask_storeu_ps(o + C, m, wb_dw512_apply(a1, act));
    _mm512_mask_storeu_ps(o + 2 * C, m, wb_dw512_apply(a2, act));
    _mm512_mask_storeu_ps(o + 3 * C, m, wb_dw512_apply(a3, act));
    _mm512_mask_storeu_ps(o + 4 * C, m, wb_dw512_apply(a4, act));
    _mm512_mask_storeu_ps(o + 5 * C, m, wb_dw512_apply(a5, act));
    _mm512_mask_storeu_ps(o + 6 * C, m, wb_dw512_apply(a6, act));
    _mm512_mask_storeu_ps(o + 7 * C, m, wb_dw512_apply(a7, act));
}

/* Up to eight consecutive pixels (count) at stride 1, for a kernel width KW of 3, 5 or 7 (a
 * constant where it is inlined), their windows starting at input column iw0: taps outside
 * 0..W-1 are skipped, so the row's borders run here too.  The eight windows overlap, so each of a
 * kernel row's KW + 7 input vectors is loaded once and meets every weight it pairs with, the KW
 * weights held in registers; wb_dw512_px8 loads an input vector per FMA (nine loads to eight
 * FMAs), and the borders went one pixel at a time. */
static inline __attribute__((always_inline)) void wb_dw512_px8_s1(const float* x0, ptrdiff_t rowstride,
                                                                  const float* w, const float* bias, float* o,
                                                                  ptrdiff_t C, ptrdiff_t iw0, ptrdiff_t W,
                                                                  int count, ptrdiff_t kh0, ptrdiff_t kh1,
                                                                  const int KW, __mmask16 m,
                                                                  const wb_dw512_act* act) {
    __m512 acc[8], wv[7];
    int i, j;
    ptrdiff_t jlo = iw0 < 0 ? -iw0 : 0, jhi = W - iw0;
    acc[0] = _mm512_maskz_loadu_ps(m, bias);
#pragma GCC unroll 8
    for (i = 1; i < 8; i++) acc[i] = acc[0];
    for (ptrdiff_t kh = kh0; kh < kh1; kh++) {
        const float* xr = x0 + kh * rowstride;
        const float* wr = w + kh * KW * C;
#pragma GCC unroll 7
        for (j = 0; j < KW; j++) wv[j] = _mm512_maskz_loadu_ps(m, wr + j * C);
#pragma GCC unroll 14
        for (j = 0; j < KW + 7; j++) {
            if (j < jlo || j >= jhi) continue;
            __m512 xv = _mm512_maskz_loadu_ps(m, xr + j * C);
#pragma GCC unroll 8
            for (i = 0; i < 8; i++)
                if (j - i >= 0 && j - i < KW) acc[i] = _mm512_fmadd_ps(xv, wv[j - i], acc[i]);
        }
    }
#pragma GCC unroll 8
    for (i = 0; i < 8; i++)
        if (i < count) _mm512_mask_storeu_ps(o + i * C, m, wb_dw512_apply(acc[i], act));
}

/* One pixel whose window starts at input column iw0 (taps outside 0..W-1 skipped). */
static inline void wb_dw512_px1(const float* x0, ptrdiff_t rowstride, const float* w, const float* bias,
                                float* o, ptrdiff_t C, ptrdiff_t iw0, ptrdiff_t W, ptrdiff_t kh0,
                                ptrdiff_t kh1, ptrdiff_t KW, __mmask16 m, const wb_dw512_act* act) {
    __m512 a = _mm512_maskz_loadu_ps(m, bias), a2 = _mm512_setzero_ps();
    ptrdiff_t kw0 = iw0 < 0 ? -iw0 : 0, kw1 = W - iw0 < KW ? W - iw0 : KW;
    for (ptrdiff_t kh = kh0; kh < kh1; kh++) {
        const float* xr = x0 + kh * rowstride;
        const float* wr = w + kh * KW * C;
        ptrdiff_t kw = kw0;
        for (; kw + 1 < kw1; kw += 2) {   /* two chains: the FMA latency, not its throughput, bounds one pixel */
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xr + kw * C), _mm512_maskz_loadu_ps(m, wr + kw * C), a);
            a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xr + (kw + 1) * C),
                                 _mm512_maskz_loadu_ps(m, wr + (kw + 1) * C), a2);
        }
        if (kw < kw1)
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xr + kw * C), _mm512_maskz_loadu_ps(m, wr + kw * C), a);
    }
    _mm512_mask_storeu_ps(o, m, wb_dw512_apply(_mm512_add_ps(a, a2), act));
}

/* Output row oh of image n: yrow (OW x C) = act(bias + the taps).  x (N, H, W, C), w (KH * KW, C),
 * padding pt (top) and pl (left); rows of the window outside 0..H-1 are skipped. */
static inline int wb_dw512_row(const float* x, const float* w, const float* bias, float* yrow, ptrdiff_t n,
                               ptrdiff_t oh, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, ptrdiff_t OW,
                               ptrdiff_t KH, ptrdiff_t KW, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t pt,
                               ptrdiff_t pl, int act, float p0, float p1) {
    wb_dw512_act a = {act, p0, p1};
    ptrdiff_t ih0 = oh * sh - pt, kh0 = ih0 < 0 ? -ih0 : 0, kh1 = H - ih0 < KH ? H - ih0 : KH;
    ptrdiff_t rowstride = W * C, sC = sw * C, ow = 0;
    /* x0: the input at row ih0 (possibly above the image: only rows kh0..kh1-1 are read) */
    const float* x0 = x + (n * H + ih0) * rowstride;
    if (kh1 <= kh0) {   /* the window is all padding: the bias alone */
        for (ptrdiff_t p = 0; p < OW; p++)
            for (ptrdiff_t c0 = 0; c0 < C; c0 += 16) {
                __mmask16 m = C - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - c0)) - 1);
                _mm512_mask_storeu_ps(yrow + p * C + c0, m, wb_dw512_apply(_mm512_maskz_loadu_ps(m, bias + c0), &a));
            }
        return 1;
    }
    if (sw == 1 && (KW == 3 || KW == 5 || KW == 7)) {
        for (; ow < OW; ow += WB_DW512_P) {
            ptrdiff_t iw0 = ow - pl;
            int count = OW - ow < WB_DW512_P ? (int)(OW - ow) : WB_DW512_P;
            for (ptrdiff_t c0 = 0; c0 < C; c0 += 16) {
                __mmask16 m = C - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - c0)) - 1);
                const float* xq = x0 + iw0 * C + c0;   /* may lie left of the row: only taps inside are read */
                float* oq = yrow + ow * C + c0;
                if (KW == 3)
                    wb_dw512_px8_s1(xq, rowstride, w + c0, bias + c0, oq, C, iw0, W, count, kh0, kh1, 3, m, &a);
                else if (KW == 5)
                    wb_dw512_px8_s1(xq, rowstride, w + c0, bias + c0, oq, C, iw0, W, count, kh0, kh1, 5, m, &a);
                else
                    wb_dw512_px8_s1(xq, rowstride, w + c0, bias + c0, oq, C, iw0, W, count, kh0, kh1, 7, m, &a);
            }
        }
        return 1;
    }
    while (ow < OW) {
        ptrdiff_t iw0 = ow * sw - pl;
        float* o = yrow + ow * C;
        int eight = iw0 >= 0 && ow + WB_DW512_P <= OW && iw0 + (WB_DW512_P - 1) * sw + KW <= W;
        for (ptrdiff_t c0 = 0; c0 < C; c0 += 16) {
            __mmask16 m = C - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - c0)) - 1);
            if (eight)
                wb_dw512_px8(x0 + iw0 * C + c0, rowstride, w + c0, bias + c0, o + c0, C, sC, kh0, kh1, KW, m, &a);
            else
                wb_dw512_px1(x0 + iw0 * C + c0, rowstride, w + c0, bias + c0, o + c0, C, iw0, W, kh0, kh1, KW, m, &a);
        }
        ow += eight ? WB_DW512_P : 1;
    }
    return 1;
}
#undef WB_DW512_P

#else

static inline int wb_dw512_row(const float* x, const float* w, const float* bias, float* yrow, ptrdiff_t n,
                               ptrdiff_t oh, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, ptrdiff_t OW,
                               ptrdiff_t KH, ptrdiff_t KW, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t pt,
                               ptrdiff_t pl, int act, float p0, float p1) {
    (void)act; (void)p0; (void)p1;
    (void)x; (void)w; (void)bias; (void)yrow; (void)n; (void)oh; (void)H; (void)W; (void)C; (void)OW;
    (void)KH; (void)KW; (void)sh; (void)sw; (void)pt; (void)pl;
    return 0;
}

#endif
#endif
