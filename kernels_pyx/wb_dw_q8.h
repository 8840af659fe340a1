/* qint8 depthwise convolution, NHWC: uint8 image, int8 weights per channel, exact int32 sums of
 * (x - zx) * w over each window, and gemm_q8's requantizing epilogue (wb_gemm_q8.h).
 *
 * The zero point is taken out once: the sums are of x * w, less comp[c] = zx * (sum of channel
 * c's weights), and a tap in the padding reads a row of zx bytes (zrow), so it adds zx * w and
 * the whole tap comes to zero, as padding with real zeros does.
 *
 * 64 channels at a time, the taps two at a time in (row, column) order.  The two taps' 64 bytes
 * are interleaved (VPUNPCKLBW / VPUNPCKHBW: per 128-bit lane, the bytes of channels 0-7, then
 * 8-15, of the lane's 16), so that each dword holds two channels' byte pairs; one VPDPBUSD with
 * weights [w0, w1, 0, 0] per dword sums the even channel's pair, one with [0, 0, w0, w1] the odd
 * channel's: four VPDPBUSD per pair of taps for 64 channels.  The packed weights hold those four
 * vectors per 64-channel block and tap pair (an odd last tap pairs with a zero weight).  The four
 * accumulators are put back in channel order (dword unpacks and a 4 x 4 shuffle of 128-bit
 * lanes) before the epilogue.  One job: one output row of one image. */
#ifndef WB_DW_Q8_H
#define WB_DW_Q8_H

#include "wb_gemm_q8.h"

typedef struct {
    const uint8_t* x; ptrdiff_t H, W, C;          /* image (N, H, W, C) */
    const int8_t* w;                              /* (ceil(C / 64), pairs, 4, 64) */
    const uint8_t* zrow;                          /* C bytes of zx: what a tap in the padding reads */
    ptrdiff_t pairs, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW;
    wbq_args epi;                                 /* comp: zx * weight sums; mult, bias, out, ldo = C, N = C */
} wbd_args;

/* The weight of channel c (of its 64-channel block, ``blk``: its pair's four vectors) for the
 * pair's tap e (0 or 1), where the packing put it. */
static inline int8_t wbd_weight(const int8_t* blk, ptrdiff_t c, int e) {
    int lane = (int)(c % 64) / 16, j = (int)(c % 16), odd = j & 1, hi = j >= 8;
    int i = (j - (hi ? 8 : 0)) / 2;
    return blk[(2 * hi + odd) * 64 + lane * 16 + 4 * i + 2 * odd + e];
}

#define WBD_MAX_TAPS 64   /* taps of a window, rounded up to pairs: the caller refuses larger ones */

/* The address tap t of output pixel (oh, ow) reads, channel c0 on: the image or zrow. */
static inline const uint8_t* wbd_tap(const wbd_args* p, const uint8_t* img, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t t,
                                     ptrdiff_t c0) {
    if (t >= p->KH * p->KW)
        return p->zrow + c0;   /* the odd last tap's partner: its weight is zero */
    ptrdiff_t ih = oh * p->SH - p->PT + (t / p->KW) * p->DH, iw = ow * p->SW - p->PL + (t % p->KW) * p->DW;
    return ih >= 0 && ih < p->H && iw >= 0 && iw < p->W ? img + (ih * p->W + iw) * p->C + c0 : p->zrow + c0;
}

#if WBQ_NATIVE
/* One output pixel's 64 channels from c0 (mask m): its taps' addresses in src (2 * pairs), the
 * sums through the epilogue. */
static inline void wbd_pixel(const wbd_args* p, const uint8_t* const* src, const int8_t* wb, __mmask64 m,
                             ptrdiff_t cols, ptrdiff_t row, ptrdiff_t c0, const wbq_consts* k) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (ptrdiff_t q = 0; q < p->pairs; q++) {
        const int8_t* wq = wb + q * 256;
        __m512i x0 = _mm512_maskz_loadu_epi8(m, src[2 * q]), x1 = _mm512_maskz_loadu_epi8(m, src[2 * q + 1]);
        __m512i lo = _mm512_unpacklo_epi8(x0, x1), hi = _mm512_unpackhi_epi8(x0, x1);
        a0 = _mm512_dpbusd_epi32(a0, lo, _mm512_load_si512((const void*)wq));
        a1 = _mm512_dpbusd_epi32(a1, lo, _mm512_load_si512((const void*)(wq + 64)));
        a2 = _mm512_dpbusd_epi32(a2, hi, _mm512_load_si512((const void*)(wq + 128)));
        a3 = _mm512_dpbusd_epi32(a3, hi, _mm512_load_si512((const void*)(wq + 192)));
    }
    /* a0: channels 16L + 2i of lane L, a1: 16L + 2i + 1, a2: 16L + 8 + 2i, a3: 16L + 9 + 2i */
    __m512i e0 = _mm512_unpacklo_epi32(a0, a1), e1 = _mm512_unpackhi_epi32(a0, a1);
    __m512i e2 = _mm512_unpacklo_epi32(a2, a3), e3 = _mm512_unpackhi_epi32(a2, a3);
    __m512i t0 = _mm512_shuffle_i32x4(e0, e1, 0x44), t1 = _mm512_shuffle_i32x4(e0, e1, 0xEE);
    __m512i t2 = _mm512_shuffle_i32x4(e2, e3, 0x44), t3 = _mm512_shuffle_i32x4(e2, e3, 0xEE);
    wbq_finish(&p->epi, row, c0, _mm512_shuffle_i32x4(t0, t2, 0x88), k);
    if (cols > 16)
        wbq_finish(&p->epi, row, c0 + 16, _mm512_shuffle_i32x4(t0, t2, 0xDD), k + 1);
    if (cols > 32)
        wbq_finish(&p->epi, row, c0 + 32, _mm512_shuffle_i32x4(t1, t3, 0x88), k + 2);
    if (cols > 48)
        wbq_finish(&p->epi, row, c0 + 48, _mm512_shuffle_i32x4(t1, t3, 0xDD), k + 3);
}
#endif

static void wbd_row(const wbd_args* p, ptrdiff_t n, ptrdiff_t oh) {
    const uint8_t* img = p->x + n * p->H * p->W * p->C;
    const ptrdiff_t m0 = (n * p->OH + oh) * p->OW;   /* the epilogue's row: output pixel index */
#if WBQ_NATIVE
    const ptrdiff_t taps = p->KH * p->KW, T = 2 * p->pairs;
    const ptrdiff_t ih0 = oh * p->SH - p->PT;
    /* Where every tap of a pixel is inside the image (rows: the whole output row; columns:
     * ow_lo..ow_hi), its taps lie at fixed offsets from the window's corner. */
    ptrdiff_t off[WBD_MAX_TAPS];
    const int rows_in = ih0 >= 0 && ih0 + (p->KH - 1) * p->DH < p->H;
    ptrdiff_t ow_lo = 0, ow_hi = 0;
    if (rows_in) {
        for (ptrdiff_t t = 0; t < taps; t++)
            off[t] = ((t / p->KW) * p->DH * p->W + (t % p->KW) * p->DW) * p->C;
        ow_lo = (p->PL + p->SW - 1) / p->SW;
        ow_hi = p->W - 1 - (p->KW - 1) * p->DW + p->PL;   /* last ow with iw of the last tap < W: floor(.. / SW) */
        ow_hi = ow_hi < 0 ? 0 : ow_hi / p->SW + 1;
        if (ow_hi > p->OW) ow_hi = p->OW;
        if (ow_lo > ow_hi) ow_lo = ow_hi;
    }
#endif
    for (ptrdiff_t c0 = 0; c0 < p->C; c0 += 64) {
        const int8_t* wb = p->w + (c0 / 64) * p->pairs * 256;
        const ptrdiff_t cols = p->C - c0 < 64 ? p->C - c0 : 64;
#if WBQ_NATIVE
        const __mmask64 m = cols >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << cols) - 1);
        const uint8_t* src[WBD_MAX_TAPS];
        wbq_consts k[4];
        for (int l = 0; l < 4; l++)
            if (16 * l < cols)
                k[l] = wbq_load(&p->epi, c0 + 16 * l);
        for (ptrdiff_t ow = 0; ow < p->OW; ow++) {
            if (rows_in && ow >= ow_lo && ow < ow_hi) {
                const uint8_t* corner = img + (ih0 * p->W + ow * p->SW - p->PL) * p->C + c0;
                for (ptrdiff_t t = 0; t < taps; t++)
                    src[t] = corner + off[t];
                if (taps < T)
                    src[taps] = p->zrow + c0;
                wbd_pixel(p, src, wb, m, cols, m0 + ow, c0, k);
            } else {
                for (ptrdiff_t t = 0; t < T; t++)
                    src[t] = wbd_tap(p, img, oh, ow, t, c0);
                wbd_pixel(p, src, wb, m, cols, m0 + ow, c0, k);
            }
        }
#else
        for (ptrdiff_t ow = 0; ow < p->OW; ow++) {
            for (ptrdiff_t l = 0; 16 * l < cols; l++) {
                int32_t acc[16] = {0};
                ptrdiff_t n16 = cols - 16 * l < 16 ? cols - 16 * l : 16;
                for (ptrdiff_t q = 0; q < p->pairs; q++) {
                    const uint8_t* x0 = wbd_tap(p, img, oh, ow, 2 * q, c0);
                    const uint8_t* x1 = wbd_tap(p, img, oh, ow, 2 * q + 1, c0);
                    for (ptrdiff_t j = 0; j < n16; j++) {
                        ptrdiff_t c = 16 * l + j;
                        acc[j] += (int32_t)x0[c] * wbd_weight(wb + q * 256, c, 0)
                                + (int32_t)x1[c] * wbd_weight(wb + q * 256, c, 1);
                    }
                }
                wbq_store(&p->epi, m0 + ow, c0 + 16 * l, n16, acc);
            }
        }
#endif
    }
}

#endif
