/* Winograd F(m x m, 3x3) convolution (m = 2 or 4; stride 1, dilation 1, group 1) on NHWC images,
 * its transform-domain products in bfloat16 on the VDPBF16PS GEMM of wb_gemm_bf16.h.
 *
 * The stages, over a block of tiles (a tile: m x m output pixels, its (m+2)^2 input patch):
 * - input: each patch, 16 channels at a time, widened to float32 (the image is bfloat16 or
 *   float32), transformed by B^T d B in float32 registers and rounded once to bfloat16 into
 *   V[k] (tiles x C), k = (row point) * (m+2) + (column point);
 * - products: Mo[k] (tiles x M, float32) = V[k] @ U[k], U[k] = G g G^T rounded to bfloat16 and
 *   packed once (wbb_pack, C deep, M wide); sums in float32;
 * - output: A^T Mo A in float32 per tile, then wbb_finish's epilogue (bias, residual,
 *   activation, post-activation affine) and one store, bfloat16 or float32.
 *
 * Only V and U are rounded: the error of a bfloat16 product on transformed operands, carried
 * through A^T (entries up to 8 for F4, so F4's error is larger than F2's; the routines state both).
 *
 * The input stage reports whether it met a NaN or an infinity: the transforms mix a whole patch
 * (inf - inf is NaN), so the caller reruns such an input on a direct routine.
 *
 * Built without AVX512-BF16 only wbw_native() (0) is usable: the routines are not offered. */
#ifndef WB_WINO_BF16_H
#define WB_WINO_BF16_H

#include "wb_gemm_bf16.h"

typedef struct {
    const void* x;          /* (n, h, w, c), bfloat16 or float32 (x_f32) */
    const uint16_t* U;      /* point k's packed weights at U + k * us */
    ptrdiff_t us;
    void* y;                /* (n, oh, ow, mo), bfloat16 or float32 (y_f32), pixels ldo elements apart */
    wbb_epi ep;             /* the epilogue; its residual has y's shape (ld_res = mo) */
    ptrdiff_t n, h, w, c, mo, oh, ow, pt, pl, th, tw, tiles, ldo;
    int m, a2, x_f32, y_f32;
} wbw_geo;

static inline int wbw_native(void) { return WBB_NATIVE; }

#if WBB_NATIVE
#define WBW_AI static inline __attribute__((always_inline))

/* B^T of F(2,3) (points 0, +-1, inf) and of Lavin & Gray's F(4,3) (0, +-1, +-2, inf). */
WBW_AI void wbw_bt(int m, const __m512* d, __m512* o) {
    if (m == 2) {
        o[0] = _mm512_sub_ps(d[0], d[2]);
        o[1] = _mm512_add_ps(d[1], d[2]);
        o[2] = _mm512_sub_ps(d[2], d[1]);
        o[3] = _mm512_sub_ps(d[1], d[3]);
        return;
    }
    const __m512 four = _mm512_set1_ps(4.f), five = _mm512_set1_ps(5.f), two = _mm512_set1_ps(2.f);
    __m512 a = _mm512_fnmadd_ps(four, d[2], d[4]), b = _mm512_fnmadd_ps(four, d[1], d[3]);
    o[0] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[2], _mm512_mul_ps(four, d[0])), d[4]);
    o[1] = _mm512_add_ps(a, b);
    o[2] = _mm512_sub_ps(a, b);
    a = _mm512_sub_ps(d[4], d[2]);
    b = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
    o[3] = _mm512_add_ps(a, b);
    o[4] = _mm512_sub_ps(a, b);
    o[5] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[3], _mm512_mul_ps(four, d[1])), d[5]);
}

/* A^T of the same: m outputs from m + 2 points. */
WBW_AI void wbw_at(int m, const __m512* d, __m512* o) {
    if (m == 2) {
        o[0] = _mm512_add_ps(_mm512_add_ps(d[0], d[1]), d[2]);
        o[1] = _mm512_sub_ps(_mm512_sub_ps(d[1], d[2]), d[3]);
        return;
    }
    __m512 a = _mm512_add_ps(d[1], d[2]), b = _mm512_sub_ps(d[1], d[2]);
    __m512 c = _mm512_add_ps(d[3], d[4]), e = _mm512_sub_ps(d[3], d[4]);
    o[0] = _mm512_add_ps(_mm512_add_ps(d[0], a), c);
    o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.f), e, b);
    o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.f), c, a);
    o[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.f), e, b), d[5]);
}

WBW_AI __m512 wbw_load(const wbw_geo* g, ptrdiff_t at, __mmask16 k) {
    return g->x_f32 ? _mm512_maskz_loadu_ps(k, (const float*)g->x + at) : wbb_load16((const uint16_t*)g->x + at, k);
}

/* Tiles t0..t1-1 (of the whole layer) into V, laid out (a2, nt, c) with tile t at row t - tb.
 * Returns whether a NaN or an infinity was read. */
static inline int wbw_inputs(const wbw_geo* g, ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t tb, ptrdiff_t nt, uint16_t* V) {
    const int m = g->m, alpha = m + 2;
    const ptrdiff_t C = g->c, per_image = g->th * g->tw;
    const __m512 inf = _mm512_set1_ps(__builtin_inff());
    __mmask16 bad = 0;
    ptrdiff_t t, c0;
    for (t = t0; t < t1; t++) {
        ptrdiff_t n = t / per_image, i = t % per_image / g->tw, j = t % g->tw, img = n * g->h * g->w * C;
        uint16_t* v = V + (t - tb) * C;
        for (c0 = 0; c0 < C; c0 += 16) {
            __mmask16 k = wb512_mask_lo((int)(C - c0 < 16 ? C - c0 : 16));
            __m512 h[6][6], d[6], o[6];
            int a, b, l, r;
            for (a = 0; a < alpha; a++) {   /* B^T along each patch row */
                ptrdiff_t y = i * m - g->pt + a;
                for (b = 0; b < alpha; b++) {
                    ptrdiff_t x = j * m - g->pl + b;
                    if (y < 0 || y >= g->h || x < 0 || x >= g->w) {
                        d[b] = _mm512_setzero_ps();
                        continue;
                    }
                    d[b] = wbw_load(g, img + (y * g->w + x) * C + c0, k);
                    bad |= _mm512_mask_cmp_ps_mask(k, _mm512_abs_ps(d[b]), inf, _CMP_NLT_UQ);
                }
                wbw_bt(m, d, h[a]);
            }
            for (l = 0; l < alpha; l++) {   /* then down each column, into V */
                for (a = 0; a < alpha; a++) d[a] = h[a][l];
                wbw_bt(m, d, o);
                for (r = 0; r < alpha; r++)
                    _mm256_mask_storeu_epi16(v + (ptrdiff_t)(r * alpha + l) * nt * C + c0, k,
                                             (__m256i)_mm512_cvtneps_pbh(o[r]));
            }
        }
    }
    return bad != 0;
}

/* Mo[k] rows i0..i1-1 (tiles of the block) = V[k] @ U[k], panels p0..p1-1. */
static inline void wbw_product(const wbw_geo* g, int k, ptrdiff_t nt, const uint16_t* V, float* Mo, ptrdiff_t i0,
                               ptrdiff_t i1, ptrdiff_t p0, ptrdiff_t p1) {
    wbb_epi none;
    memset(&none, 0, sizeof none);
    wbb_block(g->mo, g->c, V + ((ptrdiff_t)k * nt + i0) * g->c, g->c, g->U + k * g->us, Mo + (ptrdiff_t)k * nt * g->mo,
              g->mo, 1, &none, i0, i1, p0, p1);
}

/* Output pixels of tiles t0..t1-1 from Mo (a2, nt, mo), tile t at row t - tb, with the epilogue. */
static inline void wbw_outputs(const wbw_geo* g, ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t tb, ptrdiff_t nt, const float* Mo) {
    const int m = g->m, alpha = m + 2, es = g->y_f32 ? 4 : 2;
    const ptrdiff_t M = g->mo, per_image = g->th * g->tw;
    ptrdiff_t t, c0;
    for (t = t0; t < t1; t++) {
        ptrdiff_t n = t / per_image, i = t % per_image / g->tw, j = t % g->tw;
        const float* mo = Mo + (t - tb) * M;
        for (c0 = 0; c0 < M; c0 += 16) {
            __mmask16 k = wb512_mask_lo((int)(M - c0 < 16 ? M - c0 : 16));
            __m512 s[6][4], d[6], o[4];
            __m512 bv = g->ep.bias != NULL ? _mm512_maskz_loadu_ps(k, g->ep.bias + c0) : _mm512_setzero_ps();
            int a, b, l, r;
            for (a = 0; a < alpha; a++) {   /* A^T along each row of points */
                for (b = 0; b < alpha; b++)
                    d[b] = _mm512_maskz_loadu_ps(k, mo + (ptrdiff_t)(a * alpha + b) * nt * M + c0);
                wbw_at(m, d, s[a]);
            }
            for (l = 0; l < m; l++) {
                ptrdiff_t xx = j * m + l;
                if (xx >= g->ow) break;
                for (a = 0; a < alpha; a++) d[a] = s[a][l];
                wbw_at(m, d, o);
                for (r = 0; r < m; r++) {
                    ptrdiff_t yy = i * m + r, px;
                    if (yy >= g->oh) break;
                    px = (n * g->oh + yy) * g->ow + xx;
                    wbb_finish(o[r], _mm512_setzero_ps(), &g->ep, px, c0, bv, _mm512_setzero_ps(), k, 0,
                               (char*)g->y + (px * g->ldo + c0) * es, g->y_f32, 0);
                }
            }
        }
    }
}
#else
static inline int wbw_inputs(const wbw_geo* g, ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t tb, ptrdiff_t nt, uint16_t* V) {
    (void)g; (void)t0; (void)t1; (void)tb; (void)nt; (void)V;
    return 0;
}
static inline void wbw_product(const wbw_geo* g, int k, ptrdiff_t nt, const uint16_t* V, float* Mo, ptrdiff_t i0,
                               ptrdiff_t i1, ptrdiff_t p0, ptrdiff_t p1) {
    (void)g; (void)k; (void)nt; (void)V; (void)Mo; (void)i0; (void)i1; (void)p0; (void)p1;
}
static inline void wbw_outputs(const wbw_geo* g, ptrdiff_t t0, ptrdiff_t t1, ptrdiff_t tb, ptrdiff_t nt, const float* Mo) {
    (void)g; (void)t0; (void)t1; (void)tb; (void)nt; (void)Mo;
}
#endif

#endif
