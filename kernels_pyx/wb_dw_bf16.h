/* NHWC depthwise convolution on bfloat16 images: float32 weights and sums, the epilogue (bias,
 * activation codes of sgemm_epi512.h) in float32, then one rounding to bfloat16 or a float32
 * store.  Depthwise layers do one multiply-add per weight and pixel, so what costs is moving
 * and widening the data, not the arithmetic.
 *
 * Channels go 32 at a time.  One 64-byte load holds 32 bfloat16 channels as 16 pairs; a shift
 * left by 16 gives the even channels as float32, a mask of the high halves the odd ones: two
 * in-lane operations for 32 values, where widening 16 at a time costs a cross-lane shuffle and a
 * shift for each 16.  The weights and bias are packed to match (wbd_pack: per tap and block of
 * 32 channels, the 16 even channels, then the 16 odd ones), and the results go back to channel
 * order at the store: VCVTNE2PS2BF16 rounds both halves into one register and a VPERMW
 * interleaves them.  An odd tail of channels runs under word masks.
 *
 * wbd_row computes one output row.  For kernel widths 3 and 5 at strides 1 and 2, four pixels
 * at a time over a sliding window: each kernel row's 3 S + KW input columns are loaded and
 * converted once and serve all four pixels' taps; a column outside the row reads as zero, so
 * borders and the row's end run there too.  On a Zen 4 this measured 1.5-2x slower than the
 * float32 AVX-512 kernel on a float32 image (the conversions share the FMA pipes); the dot form
 * (wb_dw_dot_bf16.h: bfloat16 weights, no widening) takes the square 3x3 and 5x5 layers, and
 * this one the other geometries and the layers where float32 weights matter.  Images of 16
 * channels go two pixels to a vector (wb_dw_pairs_bf16.h).  Other kernels go a pixel at a time,
 * taps checked.
 * Built without AVX512-BF16 the same function is a scalar loop on the same packed weights, with
 * the same rounding (WBB_NATIVE = 0). */
#ifndef WB_DW_BF16_H
#define WB_DW_BF16_H

#include "wb_gemm_bf16.h"
#include "wb_dw512.h"

/* Floats of the packed weights (taps x 32-channel blocks x 32) and of the packed bias. */
static inline ptrdiff_t wbd_packed_floats(ptrdiff_t taps, ptrdiff_t c) { return taps * ((c + 31) / 32) * 32; }

/* Position of channel ch in a packed block row: the even channels of its block of 32, then the odd. */
static inline ptrdiff_t wbd_slot(ptrdiff_t ch) { return ch / 32 * 32 + (ch & 1) * 16 + (ch % 32) / 2; }

/* w (taps, c) float32 -> dst (taps, blocks x 32), zero past c. */
static inline void wbd_pack(ptrdiff_t taps, ptrdiff_t c, const float* w, float* dst) {
    ptrdiff_t row = (c + 31) / 32 * 32, t, ch;
    memset(dst, 0, (size_t)(taps * row) * sizeof(float));
    for (t = 0; t < taps; t++)
        for (ch = 0; ch < c; ch++)
            dst[t * row + wbd_slot(ch)] = w[t * c + ch];
}

#if WBB_NATIVE
typedef struct {
    __m512 even, odd;
} wbd_pair;

/* 32 channels (words under mask m) -> even and odd float32 vectors. */
WBB_AI wbd_pair wbd_load32(const uint16_t* p, __mmask32 m) {
    __m512i v = m == 0xFFFFFFFFu ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi16(m, p);
    wbd_pair r;
    r.even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    r.odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000u)));
    return r;
}

/* The epilogue on one pixel's 32 channels and the store, in channel order. */
WBB_AI void wbd_store32(wbd_pair a, const wb512_epi* e, void* out, int f32, ptrdiff_t at, __mmask32 m) {
    wbb_act(&a.even, &a.odd, e, 0xFFFF);
    if (f32) {
        const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
        _mm512_mask_storeu_ps((float*)out + at, (__mmask16)m, _mm512_permutex2var_ps(a.even, lo, a.odd));
        _mm512_mask_storeu_ps((float*)out + at + 16, (__mmask16)(m >> 16), _mm512_permutex2var_ps(a.even, hi, a.odd));
    } else {
        /* words 0..15: the even channels, 16..31: the odd ones -> channel order */
        const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                               23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        __m512i both = (__m512i)_mm512_cvtne2ps_pbh(a.odd, a.even);
        _mm512_mask_storeu_epi16((uint16_t*)out + at, m, _mm512_permutexvar_epi16(order, both));
    }
}

/* Pixels a sliding call computes: with 32 channels a pixel, 4 pixels keep 8 accumulators and a
 * kernel row's 2 (3 S + KW) converted inputs in the 32 registers (8 pixels spilled them). */
#define WBD_P 4

#define WBD_SLIDE(KW, S)                                                                               \
    static void wbd_px8_##KW##_##S(const wbb_geo* g, const uint16_t* x, const float* w, const float* bias, \
                                   void* out, int f32, const wb512_epi* e, ptrdiff_t b, ptrdiff_t oy,   \
                                   ptrdiff_t ox, int cnt, ptrdiff_t c0, __mmask32 m, int kh0, int kh1) { \
        enum { N = (WBD_P - 1) * (S) + (KW) };                                                         \
        ptrdiff_t row = (g->c + 31) / 32 * 32, ix0 = ox * (S) - g->pl;                                 \
        __m512 ae[WBD_P], ao[WBD_P], ie[N], io[N];                                                     \
        int p, ki, kj, q;                                                                              \
        __m512 be = _mm512_loadu_ps(bias + c0), bo = _mm512_loadu_ps(bias + c0 + 16);                  \
        _Pragma("GCC unroll 8") for (p = 0; p < WBD_P; p++) {                                          \
            ae[p] = be;                                                                                \
            ao[p] = bo;                                                                                \
        }                                                                                              \
        for (ki = kh0; ki < kh1; ki++) {                                                               \
            ptrdiff_t iy = oy * g->sh - g->pt + ki * g->dh;                                            \
            const uint16_t* xr = x + ((b * g->h + iy) * g->w + ix0) * g->c + c0;                       \
            _Pragma("GCC unroll 16") for (q = 0; q < N; q++) {                                         \
                ptrdiff_t ix = ix0 + q;                                                                \
                wbd_pair v = wbd_load32(xr + q * g->c, ix >= 0 && ix < g->w ? m : 0);                  \
                ie[q] = v.even;                                                                        \
                io[q] = v.odd;                                                                         \
            }                                                                                          \
            _Pragma("GCC unroll 8") for (kj = 0; kj < (KW); kj++) {                                   \
                const float* wt = w + (ki * (KW) + kj) * row + c0;                                     \
                __m512 we = _mm512_loadu_ps(wt), wo = _mm512_loadu_ps(wt + 16);                        \
                _Pragma("GCC unroll 8") for (p = 0; p < WBD_P; p++) {                                  \
                    ae[p] = _mm512_fmadd_ps(ie[p * (S) + kj], we, ae[p]);                              \
                    ao[p] = _mm512_fmadd_ps(io[p * (S) + kj], wo, ao[p]);                              \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        for (p = 0; p < cnt; p++) {                                                                    \
            wbd_pair r = {ae[p], ao[p]};                                                               \
            wbd_store32(r, e, out, f32, ((b * g->oh + oy) * g->ow + ox + p) * g->c + c0, m);           \
        }                                                                                              \
    }
WBD_SLIDE(3, 1)
WBD_SLIDE(3, 2)
WBD_SLIDE(5, 1)
WBD_SLIDE(5, 2)

typedef void (*wbd_px8_fn)(const wbb_geo*, const uint16_t*, const float*, const float*, void*, int,
                           const wb512_epi*, ptrdiff_t, ptrdiff_t, ptrdiff_t, int, ptrdiff_t, __mmask32, int, int);

/* The sliding form for this layer's kernel width and stride, or NULL. */
static inline wbd_px8_fn wbd_slide(const wbb_geo* g) {
    if (g->dw != 1) return NULL;
    if (g->kw == 3) return g->sw == 1 ? wbd_px8_3_1 : g->sw == 2 ? wbd_px8_3_2 : NULL;
    if (g->kw == 5) return g->sw == 1 ? wbd_px8_5_1 : g->sw == 2 ? wbd_px8_5_2 : NULL;
    return NULL;
}

/* One pixel, channels c0..c0+31 under m, the taps inside the image only. */
static void wbd_px1(const wbb_geo* g, const uint16_t* x, const float* w, const float* bias, void* out, int f32,
                    const wb512_epi* e, ptrdiff_t b, ptrdiff_t oy, ptrdiff_t ox, ptrdiff_t c0, __mmask32 m,
                    int kh0, int kh1, int kw0, int kw1) {
    ptrdiff_t row = (g->c + 31) / 32 * 32;
    wbd_pair acc = {_mm512_loadu_ps(bias + c0), _mm512_loadu_ps(bias + c0 + 16)};
    int ki, kj;
    for (ki = kh0; ki < kh1; ki++) {
        ptrdiff_t iy = oy * g->sh - g->pt + ki * g->dh;
        for (kj = kw0; kj < kw1; kj++) {
            ptrdiff_t ix = ox * g->sw - g->pl + kj * g->dw;
            wbd_pair v = wbd_load32(x + ((b * g->h + iy) * g->w + ix) * g->c + c0, m);
            const float* wt = w + (ki * g->kw + kj) * row + c0;
            acc.even = _mm512_fmadd_ps(v.even, _mm512_loadu_ps(wt), acc.even);
            acc.odd = _mm512_fmadd_ps(v.odd, _mm512_loadu_ps(wt + 16), acc.odd);
        }
    }
    wbd_store32(acc, e, out, f32, ((b * g->oh + oy) * g->ow + ox) * g->c + c0, m);
}
#endif

#include "wb_dw_pairs_bf16.h"

#if WBB_NATIVE
/* Input rows a band holds: at least a window's, else about 384 KiB of float32, so that a band
 * and the output row stay in L2 while the kernel passes over them KH times. */
static inline ptrdiff_t wbd_band_rows(const wbb_geo* g) {
    ptrdiff_t row = g->w * g->c, rows = (384 * 1024 / 4) / (row > 0 ? row : 1);
    return rows > g->kh ? rows : g->kh;
}

/* Floats of one thread's scratch for wbd_rows_wide: the band and one float32 output row. */
static inline ptrdiff_t wbd_wide_floats(const wbb_geo* g) { return wbd_band_rows(g) * g->w * g->c + g->ow * g->c; }

/* Output rows r0..r1-1 (of n * oh) of a dilation-1 convolution with plain float32 weights w
 * (KH * KW, C) and bias (C,): the bfloat16 input rows a band of output rows reads are widened once
 * into `scratch` (wbd_wide_floats), and the float32 register kernel of wb_dw512.h computes each
 * row from there; a bfloat16 output row is rounded from the float32 row at its store.  The
 * sliding form above widens each input vector again for every output row and tap that reads it
 * (the shifts compete with the FMAs for the vector pipes): here each input element is widened
 * about once, and the multiply-adds run in the float32 kernel.  The widening and rounding passes
 * still cost: on a Zen 4 this form measured 1.1-1.4x the float32 kernel on a float32 image
 * (against the sliding form's 1.3-2.2x), so it pays where it saves the casts around the layer. */
static void wbd_rows_wide(const wbb_geo* g, const uint16_t* x, const float* w, const float* bias, void* out,
                          int f32, const wb512_epi* e, ptrdiff_t r0, ptrdiff_t r1, float* scratch) {
    const ptrdiff_t rowlen = g->w * g->c, orowlen = g->ow * g->c, cap = wbd_band_rows(g);
    const ptrdiff_t per_band = (cap - g->kh) / g->sh + 1;   /* output rows whose windows fit the band */
    const int fused = e->act <= 5 ? e->act : 0;             /* the register kernel's own activations */
    float* band = scratch;
    float* orow = scratch + cap * rowlen;
    ptrdiff_t r = r0;
    while (r < r1) {
        ptrdiff_t b = r / g->oh, oy0 = r % g->oh, oy1 = oy0 + per_band, oy, lo, hi, i, j;
        if (oy1 > g->oh) oy1 = g->oh;
        if (oy1 - oy0 > r1 - r) oy1 = oy0 + (r1 - r);
        lo = oy0 * g->sh - g->pt;
        hi = (oy1 - 1) * g->sh - g->pt + g->kh;
        if (lo < 0) lo = 0;
        if (hi > g->h) hi = g->h;
        for (i = lo; i < hi; i++) {   /* widen: a bfloat16 is the high half of its float32 */
            const uint16_t* src = x + (b * g->h + i) * rowlen;
            float* dst = band + (i - lo) * rowlen;
            for (j = 0; j + 16 <= rowlen; j += 16)
                _mm512_storeu_si512(dst + j, _mm512_slli_epi32(
                    _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(src + j))), 16));
            if (j < rowlen) {
                __mmask16 m = (__mmask16)((1u << (rowlen - j)) - 1);
                _mm512_mask_storeu_epi32(dst + j, m, _mm512_slli_epi32(
                    _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, src + j)), 16));
            }
        }
        for (oy = oy0; oy < oy1; oy++) {
            float* y = f32 ? (float*)out + (b * g->oh + oy) * orowlen : orow;
            /* the band as image 0 of a virtual image whose row lo is band row 0: the kernel
             * reads only rows inside 0..H-1 of the window, all within lo..hi-1 */
            wb_dw512_row(band - lo * rowlen, w, bias, y, 0, oy, g->h, g->w, g->c, g->ow, g->kh, g->kw, g->sh,
                         g->sw, g->pt, g->pl, fused, e->p0, e->p1);
            if (e->act != fused)
                for (j = 0; j < orowlen; j += 32) {
                    ptrdiff_t left = orowlen - j;
                    __mmask16 m0 = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                    __mmask16 m1 = left >= 32 ? (__mmask16)0xFFFF : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
                    __m512 v0 = _mm512_maskz_loadu_ps(m0, y + j), v1 = _mm512_maskz_loadu_ps(m1, y + j + 16);
                    wbb_act(&v0, &v1, e, m1);
                    _mm512_mask_storeu_ps(y + j, m0, v0);
                    _mm512_mask_storeu_ps(y + j + 16, m1, v1);
                }
            if (!f32)
                wbb_narrow(y, (uint16_t*)out + (b * g->oh + oy) * orowlen, orowlen);
        }
        r += oy1 - oy0;
    }
}
#else
/* Without the instructions conv_depthwise refuses the wide form before any of this is called. */
static inline ptrdiff_t wbd_wide_floats(const wbb_geo* g) { (void)g; return 0; }
static void wbd_rows_wide(const wbb_geo* g, const uint16_t* x, const float* w, const float* bias, void* out,
                          int f32, const wb512_epi* e, ptrdiff_t r0, ptrdiff_t r1, float* scratch) {
    (void)g; (void)x; (void)w; (void)bias; (void)out; (void)f32; (void)e; (void)r0; (void)r1; (void)scratch;
}
#endif

/* The taps of a window that fall inside 0..size-1: [*lo, *hi). */
static inline void wbd_taps(ptrdiff_t o, int stride, int pad, int k, int dil, ptrdiff_t size, int* lo, int* hi) {
    int a = 0, z = k;
    while (a < k && o * stride - pad + a * dil < 0) a++;
    while (z > a && o * stride - pad + (z - 1) * dil >= size) z--;
    *lo = a;
    *hi = z;
}

/* Output row `row` (b * oh + oy) of the convolution: x (n, h, w, c) bfloat16, w and bias packed
 * by wbd_pack (bias as one tap), out (n, oh, ow, c) bfloat16 or float32. */
static inline void wbd_row(const wbb_geo* g, const uint16_t* x, const float* w, const float* bias, void* out,
                           int f32, const wb512_epi* e, ptrdiff_t row) {
    ptrdiff_t b = row / g->oh, oy = row % g->oh, ox, c0;
    int kh0, kh1, kw0, kw1;
    wbd_taps(oy, g->sh, g->pt, g->kh, g->dh, g->h, &kh0, &kh1);
#if WBB_NATIVE
    int per = 0;
    wbd_pairs_fn pairs = wbd_pairs(g, &per);
    if (pairs != NULL) {
        for (ox = 0; ox < g->ow; ox += per)
            pairs(g, x, w, bias, out, f32, e, b, oy, ox, g->ow - ox < per ? (int)(g->ow - ox) : per, kh0, kh1);
        return;
    }
    wbd_px8_fn slide = wbd_slide(g);
    for (ox = 0; ox < g->ow;) {
        int run = slide != NULL ? (g->ow - ox < WBD_P ? (int)(g->ow - ox) : WBD_P) : 1;
        if (slide == NULL)
            wbd_taps(ox, g->sw, g->pl, g->kw, g->dw, g->w, &kw0, &kw1);
        for (c0 = 0; c0 < g->c; c0 += 32) {
            __mmask32 m = g->c - c0 >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (g->c - c0)) - 1);
            if (slide != NULL)
                slide(g, x, w, bias, out, f32, e, b, oy, ox, run, c0, m, kh0, kh1);
            else
                wbd_px1(g, x, w, bias, out, f32, e, b, oy, ox, c0, m, kh0, kh1, kw0, kw1);
        }
        ox += run;
    }
#else
    ptrdiff_t prow = (g->c + 31) / 32 * 32;
    for (ox = 0; ox < g->ow; ox++) {
        int ki, kj;
        wbd_taps(ox, g->sw, g->pl, g->kw, g->dw, g->w, &kw0, &kw1);
        for (c0 = 0; c0 < g->c; c0++) {
            ptrdiff_t s = wbd_slot(c0);
            float t = bias[s];
            for (ki = kh0; ki < kh1; ki++)
                for (kj = kw0; kj < kw1; kj++) {
                    ptrdiff_t iy = oy * g->sh - g->pt + ki * g->dh, ix = ox * g->sw - g->pl + kj * g->dw;
                    t += wbb_widen(x[((b * g->h + iy) * g->w + ix) * g->c + c0]) * w[(ki * g->kw + kj) * prow + s];
                }
            t = wb512_act1(t, e);
            ptrdiff_t at = ((b * g->oh + oy) * g->ow + ox) * g->c + c0;
            if (f32)
                ((float*)out)[at] = t;
            else
                ((uint16_t*)out)[at] = wbb_round(t);
        }
    }
#endif
}

#endif
