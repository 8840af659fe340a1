/* bfloat16 GEMM with float32 accumulation: C(m, n) = epilogue(A(m, k) @ B(k, n)), A and B
 * bfloat16, C bfloat16 or float32.
 *
 * A (an activation: NHWC pixels, or a matrix's rows) is read in place.  B (weights) is packed
 * once into panels of 32 columns holding k in pairs: word 2j + e of pair p of a panel is
 * B(2p + e, col0 + j), the layout VDPBF16PS multiplies, each 32-bit lane of it adding
 * a.lo * b.lo + a.hi * b.hi onto a float32 sum; past k (an odd depth) and past n the words are
 * zero.  The micro-kernel keeps 12 rows x 32 columns in 24 zmm accumulators and, per pair of k,
 * broadcasts one 32-bit pair of each row of A against the panel's two registers: the multiply-
 * adds of two float32 FMAs in one instruction.  An odd depth's last element is broadcast with a
 * zero high half, so no word past A's row is ever read.  Rows past the strip's end re-read its
 * last row and are never stored.
 *
 * The epilogue runs on the float32 sums in registers before the store: bias (per column), the
 * residual (bfloat16 or float32) (before the activation, or after it and the affine when res_post), the
 * activation and the post-activation affine of sgemm_epi512.h, then a rounding to bfloat16
 * (nearest, ties to even; VCVTNEPS2BF16 keeps NaN a NaN) or a float32 store.
 *
 * VDPBF16PS treats denormal inputs as zero and flushes denormal results, whatever MXCSR says;
 * bfloat16's range is float32's, so only values below 1.2e-38 are affected.
 *
 * Built without AVX512-BF16 (the baseline module of the .pyx) the same functions run scalar
 * loops on the same packed layout, with the same rounding: correct, slow, and reported by
 * WBB_NATIVE = 0; routines use the native build only. */
#ifndef WB_GEMM_BF16_H
#define WB_GEMM_BF16_H

#include "wb_bf16.h"
#include "wb_epi_bf16.h"

#define WBB_NR 32   /* columns of a packed panel */
#define WBB_MR 12   /* rows of the micro-kernel */

/* The AMX build (wb_gemm_amx.h) runs the blocks on tiles: its panels hold the depth padded to
 * whole tiles of 32, and its jobs take rows in blocks of 32 (two tiles). */
#if WBB_NATIVE && defined(__AMX_TILE__) && defined(__AMX_BF16__)
#define WBB_AMX 1
#define WBB_KPAD 32
#define WBB_ROWS 32
#else
#define WBB_AMX 0
#define WBB_KPAD 2
#define WBB_ROWS WBB_MR
#endif

/* The depth a panel holds: k padded with zero weights to a whole pair (to a whole tile: AMX). */
static inline ptrdiff_t wbb_depth_pad(ptrdiff_t k) { return (k + WBB_KPAD - 1) / WBB_KPAD * WBB_KPAD; }

/* uint16 words of B packed for depth k and n columns. */
static inline ptrdiff_t wbb_packed_words(ptrdiff_t k, ptrdiff_t n) {
    return (n + WBB_NR - 1) / WBB_NR * wbb_depth_pad(k) * WBB_NR;
}

/* Pack panels p0..p1-1 of B, given as float32 w(n, k) (row j holds column j of B: a
 * convolution's (out channels, in channels) weights), rounding each weight to bfloat16. */
static inline void wbb_pack(ptrdiff_t k, ptrdiff_t n, const float* w, uint16_t* dst, ptrdiff_t p0, ptrdiff_t p1) {
    ptrdiff_t kp = wbb_depth_pad(k) / 2, p, q, j, e;
    for (p = p0; p < p1; p++) {
        uint16_t* d = dst + p * kp * 2 * WBB_NR;
        for (q = 0; q < kp; q++)
            for (j = 0; j < WBB_NR; j++)
                for (e = 0; e < 2; e++) {
                    ptrdiff_t col = p * WBB_NR + j, kk = 2 * q + e;
                    *d++ = (col < n && kk < k) ? wbb_round(w[col * k + kk]) : 0;
                }
    }
}

#if WBB_NATIVE
WBB_AI __m512i wbb_pair(const uint16_t* p) {
    int32_t t;
    memcpy(&t, p, 4);
    return _mm512_set1_epi32(t);
}

/* The panel's column masks and bias, before the accumulators: each starts from the bias (zero
 * past nr), so the epilogue adds none (for K = 16, a MobileNet expansion, the 24 adds were an
 * eighth of the products). */
#define WBB_BIAS_SETUP \
    __mmask16 m0 = wb512_mask_lo(nr), m1 = wb512_mask_hi(nr); \
    __m512 bv0 = ep->bias != NULL ? _mm512_maskz_loadu_ps(m0, ep->bias + col0) : _mm512_setzero_ps(); \
    __m512 bv1 = ep->bias != NULL ? _mm512_maskz_loadu_ps(m1, ep->bias + col0 + 16) : _mm512_setzero_ps();
#define WBB_ACC(i) __m512 c##i##0 = bv0, c##i##1 = bv1;
/* The panel's second 16 columns: all of them (span 2), the first 8 in a ymm (span 1: a panel of
 * 17 to 24 live columns, at half a zmm's cost on cores that split zmm operations in two), or none
 * (span 0: at most 16 live).  A ymm operation zeroes the register's upper half, so the zmm
 * accumulator holds the 8 sums and zeros. */
#define WBB_ROW(i, av) \
    { \
        __m512i a_ = (av); \
        c##i##0 = _mm512_dpbf16_ps(c##i##0, (__m512bh)a_, (__m512bh)b0); \
        if (span == 2) \
            c##i##1 = _mm512_dpbf16_ps(c##i##1, (__m512bh)a_, (__m512bh)b1); \
        else if (span == 1) \
            c##i##1 = _mm512_zextps256_ps512(_mm256_dpbf16_ps(_mm512_castps512_ps256(c##i##1), \
                                                              (__m256bh)_mm512_castsi512_si256(a_), \
                                                              (__m256bh)_mm512_castsi512_si256(b1))); \
    }
/* The B loads of one pair of depth for the panel's span. */
#define WBB_LOAD_B(p) \
    b0 = _mm512_loadu_si512(p); \
    b1 = span == 2 ? _mm512_loadu_si512((p) + 32) \
                   : span == 1 ? _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)((p) + 32))) : b0;
/* Before the WBB_FINISH of each row: the rest of the epilogue, the bias being in the sums. */
#define WBB_EPILOGUE_SETUP \
    const int staged = wbb_staged(ep); \
    float tile[12 * 32] __attribute__((aligned(64))); \
    wbb_epi rest = *ep; \
    rest.bias = NULL;
#define WBB_FINISH(i) \
    if (i < mr) { \
        if (staged) \
            wbb_stage(c##i##0, c##i##1, &rest, row0 + i, col0, bv0, bv1, m0, m1, tile + 32 * (i)); \
        else \
            wbb_finish(c##i##0, c##i##1, &rest, row0 + i, col0, bv0, bv1, m0, m1, \
                       (char*)c + (i) * ldc * (f32 ? 4 : 2), f32, 1); \
    }
/* After the rows' WBB_FINISH: the staged epilogue's out-of-line pass. */
#define WBB_FINISH_STAGED \
    if (staged) \
        wbb_finish_staged(tile, mr, &rest, row0, col0, m0, m1, c, ldc, f32);

/* Rows row0..row0+mr-1 (mr <= 12) of C, the 32 columns of one panel (nr live). a: A's row row0;
 * c: C at (row0, col0), ldc in elements.  toff NULL: A's rows are k contiguous words.  Else the
 * depth is ntaps runs of k / ntaps words (even), run t at offset toff[t] from each row's start:
 * an implicit-GEMM convolution's taps, read where they lie in the (padded) image. */
WBB_AI void wbb_micro12_span(ptrdiff_t k, const uint16_t* a, ptrdiff_t lda, int mr, const uint16_t* pb,
                             void* c, ptrdiff_t ldc, int f32, int nr, const wbb_epi* ep, ptrdiff_t row0,
                             ptrdiff_t col0, const ptrdiff_t* toff, int ntaps, const uint16_t* pf,
                             const int span) {
    const uint16_t *a0 = a, *a1 = a + (mr > 1 ? 1 : 0) * lda, *a2 = a + (mr > 2 ? 2 : mr - 1) * lda,
                   *a3 = a + (mr > 3 ? 3 : mr - 1) * lda, *a4 = a + (mr > 4 ? 4 : mr - 1) * lda,
                   *a5 = a + (mr > 5 ? 5 : mr - 1) * lda, *a6 = a + (mr > 6 ? 6 : mr - 1) * lda,
                   *a7 = a + (mr > 7 ? 7 : mr - 1) * lda, *a8 = a + (mr > 8 ? 8 : mr - 1) * lda,
                   *a9 = a + (mr > 9 ? 9 : mr - 1) * lda, *a10 = a + (mr > 10 ? 10 : mr - 1) * lda,
                   *a11 = a + (mr > 11 ? 11 : mr - 1) * lda;
    WBB_BIAS_SETUP
    WBB_ACC(0) WBB_ACC(1) WBB_ACC(2) WBB_ACC(3) WBB_ACC(4) WBB_ACC(5)
    WBB_ACC(6) WBB_ACC(7) WBB_ACC(8) WBB_ACC(9) WBB_ACC(10) WBB_ACC(11)
    __m512i b0, b1;
    ptrdiff_t j, run = (toff != NULL ? k / ntaps : k) / 2 * 2, pstep = pf != NULL ? 64 : 0;
    int t;
    if (pf == NULL) pf = pb;   /* nothing to fetch ahead: the panel's own first line, cached */
    for (t = 0; t < (toff != NULL ? ntaps : 1); t++) {
        ptrdiff_t o = toff != NULL ? toff[t] : 0;
        _Pragma("GCC unroll 2")
        for (j = o; j < o + run; j += 2) {
            WBB_LOAD_B(pb)
            _mm_prefetch((const char*)(pb + 8 * 64), _MM_HINT_T0);
            _mm_prefetch((const char*)pf, _MM_HINT_T1);
            _mm_prefetch((const char*)(pf + 32), _MM_HINT_T1);
            pb += 64;
            pf += pstep;
            WBB_ROW(0, wbb_pair(a0 + j)) WBB_ROW(1, wbb_pair(a1 + j)) WBB_ROW(2, wbb_pair(a2 + j))
            WBB_ROW(3, wbb_pair(a3 + j)) WBB_ROW(4, wbb_pair(a4 + j)) WBB_ROW(5, wbb_pair(a5 + j))
            WBB_ROW(6, wbb_pair(a6 + j)) WBB_ROW(7, wbb_pair(a7 + j)) WBB_ROW(8, wbb_pair(a8 + j))
            WBB_ROW(9, wbb_pair(a9 + j)) WBB_ROW(10, wbb_pair(a10 + j)) WBB_ROW(11, wbb_pair(a11 + j))
        }
    }
    if (k & 1) {   /* the last element alone, its partner zero (contiguous rows only) */
        WBB_LOAD_B(pb)
        ptrdiff_t l = k - 1;
        WBB_ROW(0, _mm512_set1_epi32(a0[l])) WBB_ROW(1, _mm512_set1_epi32(a1[l]))
        WBB_ROW(2, _mm512_set1_epi32(a2[l])) WBB_ROW(3, _mm512_set1_epi32(a3[l]))
        WBB_ROW(4, _mm512_set1_epi32(a4[l])) WBB_ROW(5, _mm512_set1_epi32(a5[l]))
        WBB_ROW(6, _mm512_set1_epi32(a6[l])) WBB_ROW(7, _mm512_set1_epi32(a7[l]))
        WBB_ROW(8, _mm512_set1_epi32(a8[l])) WBB_ROW(9, _mm512_set1_epi32(a9[l]))
        WBB_ROW(10, _mm512_set1_epi32(a10[l])) WBB_ROW(11, _mm512_set1_epi32(a11[l]))
    }
    WBB_EPILOGUE_SETUP
    WBB_FINISH(0) WBB_FINISH(1) WBB_FINISH(2) WBB_FINISH(3) WBB_FINISH(4) WBB_FINISH(5)
    WBB_FINISH(6) WBB_FINISH(7) WBB_FINISH(8) WBB_FINISH(9) WBB_FINISH(10) WBB_FINISH(11)
    WBB_FINISH_STAGED
}

/* wbb_micro12_span for the panel's live columns: one loop compiled per span. */
static inline void wbb_micro12(ptrdiff_t k, const uint16_t* a, ptrdiff_t lda, int mr, const uint16_t* pb,
                               void* c, ptrdiff_t ldc, int f32, int nr, const wbb_epi* ep, ptrdiff_t row0,
                               ptrdiff_t col0, const ptrdiff_t* toff, int ntaps, const uint16_t* pf) {
    if (nr > 24)
        wbb_micro12_span(k, a, lda, mr, pb, c, ldc, f32, nr, ep, row0, col0, toff, ntaps, pf, 2);
    else if (nr > 16)
        wbb_micro12_span(k, a, lda, mr, pb, c, ldc, f32, nr, ep, row0, col0, toff, ntaps, pf, 1);
    else
        wbb_micro12_span(k, a, lda, mr, pb, c, ldc, f32, nr, ep, row0, col0, toff, ntaps, pf, 0);
}

/* The same for a tail of at most 4 rows: a third of the 12-row kernel's work. */
static inline void wbb_micro4(ptrdiff_t k, const uint16_t* a, ptrdiff_t lda, int mr, const uint16_t* pb,
                              void* c, ptrdiff_t ldc, int f32, int nr, const wbb_epi* ep, ptrdiff_t row0,
                              ptrdiff_t col0, const ptrdiff_t* toff, int ntaps) {
    const uint16_t *a0 = a, *a1 = a + (mr > 1 ? 1 : 0) * lda, *a2 = a + (mr > 2 ? 2 : mr - 1) * lda,
                   *a3 = a + (mr > 3 ? 3 : mr - 1) * lda;
    WBB_BIAS_SETUP
    WBB_ACC(0) WBB_ACC(1) WBB_ACC(2) WBB_ACC(3)
    __m512i b0, b1;
    ptrdiff_t j, run = (toff != NULL ? k / ntaps : k) / 2 * 2;
    int t;
    const int span = 2;   /* a tail's rows: not worth a loop per span */
    for (t = 0; t < (toff != NULL ? ntaps : 1); t++) {
        ptrdiff_t o = toff != NULL ? toff[t] : 0;
        for (j = o; j < o + run; j += 2) {
            WBB_LOAD_B(pb)
            pb += 64;
            WBB_ROW(0, wbb_pair(a0 + j)) WBB_ROW(1, wbb_pair(a1 + j))
            WBB_ROW(2, wbb_pair(a2 + j)) WBB_ROW(3, wbb_pair(a3 + j))
        }
    }
    if (k & 1) {
        b0 = _mm512_loadu_si512(pb);
        b1 = _mm512_loadu_si512(pb + 32);
        ptrdiff_t l = k - 1;
        WBB_ROW(0, _mm512_set1_epi32(a0[l])) WBB_ROW(1, _mm512_set1_epi32(a1[l]))
        WBB_ROW(2, _mm512_set1_epi32(a2[l])) WBB_ROW(3, _mm512_set1_epi32(a3[l]))
    }
    WBB_EPILOGUE_SETUP
    WBB_FINISH(0) WBB_FINISH(1) WBB_FINISH(2) WBB_FINISH(3)
    WBB_FINISH_STAGED
}
#endif

/* Activation codes the epilogue applies in this build. */
static inline int wbb_handles(int act) { return WBB_NATIVE ? wb512_epi_handles(act) : (act >= 0 && act <= 5); }

#if WBB_AMX
#include "wb_gemm_amx.h"
/* Whether this build's blocks can run: the kernel granted the process the tile state. */
static int wbb_ready(void) { return wba_permit(); }
#else
static int wbb_ready(void) { return WBB_NATIVE; }
#endif

/* Rows i0..i1-1 of C, panels p0..p1-1; a points at A's row i0. */
static inline void wbb_block(ptrdiff_t n, ptrdiff_t k, const uint16_t* a, ptrdiff_t lda, const uint16_t* pb, void* c,
                             ptrdiff_t ldc, int f32, const wbb_epi* ep, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t p0,
                             ptrdiff_t p1) {
#if WBB_AMX
    wba_block(n, k, a, lda, pb, c, ldc, f32, ep, i0, i1, p0, p1);
    return;
#endif
    ptrdiff_t panel_words = wbb_depth_pad(k) * WBB_NR, p, i;
    for (p = p0; p < p1; p++) {
        ptrdiff_t col0 = p * WBB_NR;
        int nr = (int)(n - col0 < WBB_NR ? n - col0 : WBB_NR);
        const uint16_t* bp = pb + p * panel_words;
        for (i = i0; i < i1; i += WBB_MR) {
            int mr = (int)(i1 - i < WBB_MR ? i1 - i : WBB_MR);
            void* cb = (char*)c + (i * ldc + col0) * (f32 ? 4 : 2);
#if WBB_NATIVE
            if (mr > 4)
                wbb_micro12(k, a + (i - i0) * lda, lda, mr, bp, cb, ldc, f32, nr, ep, i, col0, NULL, 1,
                            i == i0 && p + 1 < p1 ? bp + panel_words : NULL);
            else
                wbb_micro4(k, a + (i - i0) * lda, lda, mr, bp, cb, ldc, f32, nr, ep, i, col0, NULL, 1);
#else
            int r, j;
            ptrdiff_t q;
            for (r = 0; r < mr; r++)
                for (j = 0; j < nr; j++) {
                    const uint16_t* ar = a + (i - i0 + r) * lda;
                    float t = 0;
                    ptrdiff_t col = col0 + j;
                    for (q = 0; q < k; q++)
                        t += wbb_widen(ar[q]) * wbb_widen(bp[(q / 2) * 2 * WBB_NR + 2 * j + (q & 1)]);
                    if (ep->bias != NULL) t += ep->bias[col];
                    ptrdiff_t at = (i + r) * ep->ld_res + col;
                    if (ep->res != NULL && !ep->res_post) t += wbb_res1(ep, at);
                    t = wb512_act1(t, &ep->e);
                    if (ep->e.post_scale != NULL) t = t * ep->e.post_scale[col] + ep->e.post_shift[col];
                    if (ep->res != NULL && ep->res_post) t += wbb_res1(ep, at);
                    if (f32)
                        ((float*)cb)[r * ldc + j] = t;
                    else
                        ((uint16_t*)cb)[r * ldc + j] = wbb_round(t);
                }
#endif
        }
    }
}

/* A convolution on an NHWC image x (n, h, w, c) giving (n, oh, ow, ...). */
typedef struct {
    ptrdiff_t n, h, w, c, oh, ow;
    int kh, kw, sh, sw, dh, dw, pt, pl;
} wbb_geo;


/* Rows i0..i1-1 of an NHWC image's im2col matrix into dst (row r at dst + (r - i0) * k): the
 * taps of output pixel i in the order (kernel row, kernel column, channel), k = kh * kw * c,
 * zeros where a tap falls in the padding.  x is bfloat16, or float32 (x_f32), rounded to
 * bfloat16 here: a float32 image is multiplied in bfloat16 without a cast adapt before it. */
static inline void wbb_im2col(const wbb_geo* g, const void* x, int x_f32, ptrdiff_t i0, ptrdiff_t i1,
                              uint16_t* dst) {
    ptrdiff_t i, c = g->c;
    for (i = i0; i < i1; i++) {
        ptrdiff_t b = i / (g->oh * g->ow), p = i % (g->oh * g->ow), oy = p / g->ow, ox = p % g->ow;
        ptrdiff_t img = b * g->h * g->w * c;
        int ki, kj;
        ptrdiff_t ix0 = ox * g->sw - g->pl;
        /* a kernel row inside the image (dilation 1) is kw * c contiguous elements: one copy,
         * not kw copies of c (a first layer's c = 3) */
        int whole = g->dw == 1 && ix0 >= 0 && ix0 + g->kw <= g->w;
        for (ki = 0; ki < g->kh; ki++) {
            ptrdiff_t iy = oy * g->sh - g->pt + ki * g->dh;
            if (whole && iy >= 0 && iy < g->h) {
                ptrdiff_t at = img + (iy * g->w + ix0) * c, len = g->kw * c;
                if (x_f32)
                    wbb_narrow((const float*)x + at, dst, len);
                else
                    memcpy(dst, (const uint16_t*)x + at, (size_t)len * 2);
                dst += len;
                continue;
            }
            for (kj = 0; kj < g->kw; kj++, dst += c) {
                ptrdiff_t ix = ox * g->sw - g->pl + kj * g->dw, at = img + (iy * g->w + ix) * c;
                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                    memset(dst, 0, (size_t)c * 2);
                else if (x_f32)
                    wbb_narrow((const float*)x + at, dst, c);
                else
                    memcpy(dst, (const uint16_t*)x + at, (size_t)c * 2);
            }
        }
    }
}

#endif
