/* NHWC depthwise convolution on bfloat16 images with bfloat16 weights, summed by VDPBF16PS.
 *
 * VDPBF16PS multiplies 16 pairs of bfloat16 values and adds both products of a pair into one
 * float32 lane.  A depthwise layer has no channel sum to pair, so the pairs are two taps of one
 * channel: the same column of two kernel rows.  Interleaving the words of two input rows
 * (VPUNPCKLWD / VPUNPCKHWD, in-lane) gives, for 32 channels, two vectors of 16 (row a, row b)
 * pairs, and the weights are packed the same way, so one instruction does two taps of 16
 * channels where the float32 kernel's FMA does one.  An odd kernel height pairs its last row
 * with a zero weight.  The unpacks run beside the dot products, and the image is half the
 * bytes of a float32 one.
 *
 * The interleave leaves the channels of a 128-bit lane in the order 0-3 (low vector) and 4-7
 * (high vector); the bias is packed to match and the store puts the channels back in order
 * (a VPERMW for a bfloat16 output, two VPERMT2PS for float32).
 *
 * wbdd_row computes one output row, P pixels at a time (kernel width 3: 8; 5 and 7: 4) over a
 * sliding window of the P windows' columns: each column pair is loaded and interleaved once and
 * meets every weight it pairs with.  A column or row outside the image loads as zero, so borders
 * run here too.  Products of two bfloat16 values are exact in float32; the sums round in float32
 * (and the instruction flushes denormals), so the result differs from the float32 layer on
 * rounded inputs and weights by float32 summation error only. */
#ifndef WB_DW_DOT_BF16_H
#define WB_DW_DOT_BF16_H

#include "wb_gemm_bf16.h"

/* Words of the packed weights: row pairs x KW x 32-channel blocks x 64 (low then high vector). */
static inline ptrdiff_t wbdd_packed_words(ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t c) {
    return (kh + 1) / 2 * kw * ((c + 31) / 32) * 64;
}

/* Channel of position i (0..15) of a block's low (hi = 0) or high (hi = 1) vector. */
static inline ptrdiff_t wbdd_chan(int i, int hi) { return 8 * (i / 4) + 4 * hi + i % 4; }

/* w (KH, KW, C) float32 -> dst, rounded to bfloat16 (round to nearest even), zero past C and KH. */
static inline void wbdd_pack(ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t c, const float* w, uint16_t* dst) {
    ptrdiff_t blocks = (c + 31) / 32, pr, kj, bl, i, at = 0;
    int hi, r;
    for (pr = 0; pr < (kh + 1) / 2; pr++)
        for (kj = 0; kj < kw; kj++)
            for (bl = 0; bl < blocks; bl++)
                for (hi = 0; hi < 2; hi++)
                    for (i = 0; i < 16; i++)
                        for (r = 0; r < 2; r++, at++) {
                            ptrdiff_t ch = bl * 32 + wbdd_chan((int)i, hi), ki = 2 * pr + r;
                            dst[at] = ch < c && ki < kh ? wbb_round(w[(ki * kw + kj) * c + ch]) : 0;
                        }
}

/* bias (C,) -> dst (blocks x 32): per block the low vector's channels, then the high one's. */
static inline void wbdd_pack_bias(ptrdiff_t c, const float* b, float* dst) {
    ptrdiff_t bl, i;
    int hi;
    for (bl = 0; bl < (c + 31) / 32; bl++)
        for (hi = 0; hi < 2; hi++)
            for (i = 0; i < 16; i++) {
                ptrdiff_t ch = bl * 32 + wbdd_chan((int)i, hi);
                dst[bl * 32 + hi * 16 + i] = ch < c ? b[ch] : 0.0f;
            }
}

#if WBB_NATIVE
/* The epilogue on a pixel's low and high sums and the store of its channels c0.. under m. */
WBB_AI void wbdd_store(__m512 lo, __m512 hi, const wb512_epi* e, void* out, int f32, ptrdiff_t at, __mmask32 m) {
    wbb_act(&lo, &hi, e, 0xFFFF);
    if (f32) {
        /* channel j of 0..15: lane j / 8, position j % 8: low vector's 4 (j / 8) + j % 8 below 4,
         * else the high one's (index 16 + ...) */
        const __m512i a = _mm512_set_epi32(23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
        const __m512i b = _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 27, 26, 25, 24, 11, 10, 9, 8);
        _mm512_mask_storeu_ps((float*)out + at, (__mmask16)m, _mm512_permutex2var_ps(lo, a, hi));
        _mm512_mask_storeu_ps((float*)out + at + 16, (__mmask16)(m >> 16), _mm512_permutex2var_ps(lo, b, hi));
    } else {
        /* words 0..15 the low vector, 16..31 the high one -> channel order */
        const __m512i order = _mm512_set_epi16(31, 30, 29, 28, 15, 14, 13, 12, 27, 26, 25, 24, 11, 10, 9, 8,
                                               23, 22, 21, 20, 7, 6, 5, 4, 19, 18, 17, 16, 3, 2, 1, 0);
        __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
        _mm512_mask_storeu_epi16((uint16_t*)out + at, m, _mm512_permutexvar_epi16(order, both));
    }
}

/* Four pixels (cnt stored) of output row oy from column ox, channel block bl under m: kernel
 * KW x KW at stride S across (constants where inlined: the 5x5 and 7x7 forms), the window's rows
 * kh0..kh1-1 inside the image (the others load as zero).  `inside`: every column the windows read
 * lies inside the row.  The accumulators are named, not an array: GCC kept an array of them on
 * the stack across the loop over row pairs. */
#define WBDD_TAP(p, acc_l, acc_h)                                                                      \
    if (q - (p) * S >= 0 && q - (p) * S < KW) {                                                        \
        acc_l = _mm512_dpbf16_ps(acc_l, lo, (__m512bh)wl[q - (p) * S]);                                \
        acc_h = _mm512_dpbf16_ps(acc_h, hi, (__m512bh)wh[q - (p) * S]);                                \
    }
WBB_AI void wbdd_px4(const int KW, const int S, const int inside, const wbb_geo* g, const uint16_t* x,
                     const uint16_t* w, const float* bias, void* out, int f32, const wb512_epi* e, ptrdiff_t b,
                     ptrdiff_t oy, ptrdiff_t ox, int cnt, ptrdiff_t bl, __mmask32 m, int kh0, int kh1) {
    const int N = 3 * S + KW;
    const ptrdiff_t blocks = (g->c + 31) / 32, ix0 = ox * S - g->pl, c0 = bl * 32, iy0 = oy * g->sh - g->pt;
    __m512 l0 = _mm512_loadu_ps(bias + c0), h0 = _mm512_loadu_ps(bias + c0 + 16);
    __m512 l1 = l0, l2 = l0, l3 = l0, h1 = h0, h2 = h0, h3 = h0, wl[7], wh[7];
    int pr, kj, q;
    for (pr = kh0 / 2; 2 * pr < kh1; pr++) {
        const int ra = 2 * pr, rb = 2 * pr + 1;
        const __mmask32 ma = ra >= kh0 ? m : 0, mb = rb < kh1 ? m : 0;
        const uint16_t* xa = x + ((b * g->h + iy0 + ra) * g->w + ix0) * g->c + c0;   /* read under ma only */
        const uint16_t* xb = xa + g->w * g->c;
        const uint16_t* wp = w + (pr * KW * blocks + bl) * 64;
#pragma GCC unroll 7
        for (kj = 0; kj < KW; kj++) {
            wl[kj] = _mm512_castsi512_ps(_mm512_loadu_si512(wp + kj * blocks * 64));
            wh[kj] = _mm512_castsi512_ps(_mm512_loadu_si512(wp + kj * blocks * 64 + 32));
        }
#pragma GCC unroll 16
        for (q = 0; q < N; q++) {
            const int in = inside || (ix0 + q >= 0 && ix0 + q < g->w);
            __m512i va = _mm512_maskz_loadu_epi16(in ? ma : 0, xa + q * g->c);
            __m512i vb = _mm512_maskz_loadu_epi16(in ? mb : 0, xb + q * g->c);
            __m512bh lo = (__m512bh)_mm512_unpacklo_epi16(va, vb), hi = (__m512bh)_mm512_unpackhi_epi16(va, vb);
            WBDD_TAP(0, l0, h0)
            WBDD_TAP(1, l1, h1)
            WBDD_TAP(2, l2, h2)
            WBDD_TAP(3, l3, h3)
        }
    }
    const ptrdiff_t at = ((b * g->oh + oy) * g->ow + ox) * g->c + c0, C = g->c;
    wbdd_store(l0, h0, e, out, f32, at, m);
    if (cnt > 1) wbdd_store(l1, h1, e, out, f32, at + C, m);
    if (cnt > 2) wbdd_store(l2, h2, e, out, f32, at + 2 * C, m);
    if (cnt > 3) wbdd_store(l3, h3, e, out, f32, at + 3 * C, m);
}
#undef WBDD_TAP

/* Kernel width 3: eight pixels in named accumulators, the column-by-column order written out
 * (an array of sixteen, indexed in loops, was kept on the stack by GCC, and the spills cost more
 * than the dot products saved).  D(p, k): pixel p's tap column k meets the current column. */
#define WBDD_D(p, k)                                               \
    l##p = _mm512_dpbf16_ps(l##p, lo, (__m512bh)wl##k);            \
    h##p = _mm512_dpbf16_ps(h##p, hi, (__m512bh)wh##k);
#define WBDD_COL(q)                                                                                    \
    {                                                                                                  \
        const int in = inside || (ix0 + (q) >= 0 && ix0 + (q) < g->w);                                 \
        __m512i va = _mm512_maskz_loadu_epi16(in ? ma : 0, xa + (q) * g->c);                           \
        __m512i vb = _mm512_maskz_loadu_epi16(in ? mb : 0, xb + (q) * g->c);                           \
        lo = (__m512bh)_mm512_unpacklo_epi16(va, vb);                                                  \
        hi = (__m512bh)_mm512_unpackhi_epi16(va, vb);                                                  \
    }

WBB_AI void wbdd_px3(const int S, const int inside, const wbb_geo* g, const uint16_t* x, const uint16_t* w,
                     const float* bias, void* out, int f32, const wb512_epi* e, ptrdiff_t b, ptrdiff_t oy,
                     ptrdiff_t ox, int cnt, ptrdiff_t bl, __mmask32 m, int kh0, int kh1) {
    const ptrdiff_t blocks = (g->c + 31) / 32, ix0 = ox * S - g->pl, c0 = bl * 32, iy0 = oy * g->sh - g->pt;
    __m512 l0 = _mm512_loadu_ps(bias + c0), h0 = _mm512_loadu_ps(bias + c0 + 16);
    __m512 l1 = l0, l2 = l0, l3 = l0, l4 = l0, l5 = l0, l6 = l0, l7 = l0;
    __m512 h1 = h0, h2 = h0, h3 = h0, h4 = h0, h5 = h0, h6 = h0, h7 = h0;
    __m512bh lo, hi;
    for (int pr = kh0 / 2; 2 * pr < kh1; pr++) {
        const int ra = 2 * pr, rb = 2 * pr + 1;
        const __mmask32 ma = ra >= kh0 ? m : 0, mb = rb < kh1 ? m : 0;
        const uint16_t* xa = x + ((b * g->h + iy0 + ra) * g->w + ix0) * g->c + c0;   /* read under ma only */
        const uint16_t* xb = xa + g->w * g->c;
        const uint16_t* wp = w + (pr * 3 * blocks + bl) * 64;
        const __m512 wl0 = _mm512_castsi512_ps(_mm512_loadu_si512(wp)),
                     wh0 = _mm512_castsi512_ps(_mm512_loadu_si512(wp + 32)),
                     wl1 = _mm512_castsi512_ps(_mm512_loadu_si512(wp + blocks * 64)),
                     wh1 = _mm512_castsi512_ps(_mm512_loadu_si512(wp + blocks * 64 + 32)),
                     wl2 = _mm512_castsi512_ps(_mm512_loadu_si512(wp + blocks * 128)),
                     wh2 = _mm512_castsi512_ps(_mm512_loadu_si512(wp + blocks * 128 + 32));
        if (S == 1) {
            WBDD_COL(0) WBDD_D(0, 0)
            WBDD_COL(1) WBDD_D(1, 0) WBDD_D(0, 1)
            WBDD_COL(2) WBDD_D(2, 0) WBDD_D(1, 1) WBDD_D(0, 2)
            WBDD_COL(3) WBDD_D(3, 0) WBDD_D(2, 1) WBDD_D(1, 2)
            WBDD_COL(4) WBDD_D(4, 0) WBDD_D(3, 1) WBDD_D(2, 2)
            WBDD_COL(5) WBDD_D(5, 0) WBDD_D(4, 1) WBDD_D(3, 2)
            WBDD_COL(6) WBDD_D(6, 0) WBDD_D(5, 1) WBDD_D(4, 2)
            WBDD_COL(7) WBDD_D(7, 0) WBDD_D(6, 1) WBDD_D(5, 2)
            WBDD_COL(8) WBDD_D(7, 1) WBDD_D(6, 2)
            WBDD_COL(9) WBDD_D(7, 2)
        } else {
            WBDD_COL(0) WBDD_D(0, 0)
            WBDD_COL(1) WBDD_D(0, 1)
            WBDD_COL(2) WBDD_D(1, 0) WBDD_D(0, 2)
            WBDD_COL(3) WBDD_D(1, 1)
            WBDD_COL(4) WBDD_D(2, 0) WBDD_D(1, 2)
            WBDD_COL(5) WBDD_D(2, 1)
            WBDD_COL(6) WBDD_D(3, 0) WBDD_D(2, 2)
            WBDD_COL(7) WBDD_D(3, 1)
            WBDD_COL(8) WBDD_D(4, 0) WBDD_D(3, 2)
            WBDD_COL(9) WBDD_D(4, 1)
            WBDD_COL(10) WBDD_D(5, 0) WBDD_D(4, 2)
            WBDD_COL(11) WBDD_D(5, 1)
            WBDD_COL(12) WBDD_D(6, 0) WBDD_D(5, 2)
            WBDD_COL(13) WBDD_D(6, 1)
            WBDD_COL(14) WBDD_D(7, 0) WBDD_D(6, 2)
            WBDD_COL(15) WBDD_D(7, 1)
            WBDD_COL(16) WBDD_D(7, 2)
        }
    }
    const ptrdiff_t at = ((b * g->oh + oy) * g->ow + ox) * g->c + c0, C = g->c;
    wbdd_store(l0, h0, e, out, f32, at, m);
    if (cnt > 1) wbdd_store(l1, h1, e, out, f32, at + C, m);
    if (cnt > 2) wbdd_store(l2, h2, e, out, f32, at + 2 * C, m);
    if (cnt > 3) wbdd_store(l3, h3, e, out, f32, at + 3 * C, m);
    if (cnt > 4) wbdd_store(l4, h4, e, out, f32, at + 4 * C, m);
    if (cnt > 5) wbdd_store(l5, h5, e, out, f32, at + 5 * C, m);
    if (cnt > 6) wbdd_store(l6, h6, e, out, f32, at + 6 * C, m);
    if (cnt > 7) wbdd_store(l7, h7, e, out, f32, at + 7 * C, m);
}
#undef WBDD_D
#undef WBDD_COL

#define WBDD_FORM(NAME, BODY, KW, S, P)                                                               \
    static void NAME(const wbb_geo* g, const uint16_t* x, const uint16_t* w, const float* bias, void* out, \
                     int f32, const wb512_epi* e, ptrdiff_t b, ptrdiff_t oy, ptrdiff_t ox, int cnt,     \
                     ptrdiff_t bl, __mmask32 m, int kh0, int kh1) {                                    \
        ptrdiff_t ix0 = ox * (S) - g->pl;                                                              \
        if (ix0 >= 0 && ix0 + ((P) - 1) * (S) + (KW) <= g->w)                                          \
            BODY(1, g, x, w, bias, out, f32, e, b, oy, ox, cnt, bl, m, kh0, kh1);                      \
        else                                                                                           \
            BODY(0, g, x, w, bias, out, f32, e, b, oy, ox, cnt, bl, m, kh0, kh1);                      \
    }
#define WBDD_3_1(...) wbdd_px3(1, __VA_ARGS__)
#define WBDD_3_2(...) wbdd_px3(2, __VA_ARGS__)
#define WBDD_5_1(...) wbdd_px4(5, 1, __VA_ARGS__)
#define WBDD_5_2(...) wbdd_px4(5, 2, __VA_ARGS__)
#define WBDD_7_1(...) wbdd_px4(7, 1, __VA_ARGS__)
#define WBDD_7_2(...) wbdd_px4(7, 2, __VA_ARGS__)
WBDD_FORM(wbdd_px_3_1, WBDD_3_1, 3, 1, 8)
WBDD_FORM(wbdd_px_3_2, WBDD_3_2, 3, 2, 8)
WBDD_FORM(wbdd_px_5_1, WBDD_5_1, 5, 1, 4)
WBDD_FORM(wbdd_px_5_2, WBDD_5_2, 5, 2, 4)
WBDD_FORM(wbdd_px_7_1, WBDD_7_1, 7, 1, 4)
WBDD_FORM(wbdd_px_7_2, WBDD_7_2, 7, 2, 4)
#undef WBDD_FORM
#undef WBDD_3_1
#undef WBDD_3_2
#undef WBDD_5_1
#undef WBDD_5_2
#undef WBDD_7_1
#undef WBDD_7_2

typedef void (*wbdd_fn)(const wbb_geo*, const uint16_t*, const uint16_t*, const float*, void*, int,
                        const wb512_epi*, ptrdiff_t, ptrdiff_t, ptrdiff_t, int, ptrdiff_t, __mmask32, int, int);
#endif

/* Whether this form computes the layer: a square kernel of 3, 5 or 7, strides 1 or 2 across, dilation 1. */
static inline int wbdd_handles(const wbb_geo* g) {
    return WBB_NATIVE && g->dh == 1 && g->dw == 1 && (g->kw == 3 || g->kw == 5 || g->kw == 7) && g->kh == g->kw &&
           (g->sw == 1 || g->sw == 2);
}

/* Output row `row` (b * oh + oy): x (n, h, w, c) bfloat16; w, bias packed by wbdd_pack and
 * wbdd_pack_bias; out (n, oh, ow, c) bfloat16 or float32.  Only where wbdd_handles. */
static inline void wbdd_row(const wbb_geo* g, const uint16_t* x, const uint16_t* w, const float* bias, void* out,
                            int f32, const wb512_epi* e, ptrdiff_t row) {
#if WBB_NATIVE
    ptrdiff_t b = row / g->oh, oy = row % g->oh, ox, bl, iy0 = oy * g->sh - g->pt;
    int kh0 = iy0 < 0 ? (int)-iy0 : 0, kh1 = g->h - iy0 < g->kh ? (int)(g->h - iy0) : g->kh;
    int P = g->kw == 3 ? 8 : 4;
    wbdd_fn fn = g->kw == 3   ? (g->sw == 1 ? wbdd_px_3_1 : wbdd_px_3_2)
                 : g->kw == 5 ? (g->sw == 1 ? wbdd_px_5_1 : wbdd_px_5_2)
                              : (g->sw == 1 ? wbdd_px_7_1 : wbdd_px_7_2);
    for (ox = 0; ox < g->ow; ox += P) {
        int cnt = g->ow - ox < P ? (int)(g->ow - ox) : P;
        for (bl = 0; bl * 32 < g->c; bl++) {
            ptrdiff_t left = g->c - bl * 32;
            __mmask32 m = left >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
            fn(g, x, w, bias, out, f32, e, b, oy, ox, cnt, bl, m, kh0, kh1);
        }
    }
#else
    (void)g; (void)x; (void)w; (void)bias; (void)out; (void)f32; (void)e; (void)row;
#endif
}

#endif
