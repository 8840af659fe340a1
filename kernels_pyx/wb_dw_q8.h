/* qint8 depthwise convolution, NHWC: uint8 image, int8 weights per channel, exact int32 sums of
 * (x - zx) * w over each window (taps in the padding count as real zeros), and gemm_q8's
 * requantizing epilogue (wb_gemm_q8.h; with no comp, the zero point being taken out tap by tap).  The taps go two at a time, in (row, column) order: the packed weights hold, per pair
 * of taps and channel, one int32 of two int16 (the first tap low), and the image's two taps are
 * put side by side the same way, so that one VPDPWSSD multiplies and adds both into 16 channels'
 * sums.  One job: one output row of one image. */
#ifndef WB_DW_Q8_H
#define WB_DW_Q8_H

#include "wb_gemm_q8.h"

typedef struct {
    const uint8_t* x; ptrdiff_t H, W, C;          /* image (N, H, W, C) */
    const int32_t* w;                             /* (ceil(KH * KW / 2), Cp) tap pairs, Cp = C rounded up to 16 */
    ptrdiff_t Cp, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW;
    int zx;
    wbq_args epi;                                 /* comp NULL, mult, bias, out, ldo = C, zo, relu, N = C */
} wbd_args;

static void wbd_row(const wbd_args* p, ptrdiff_t n, ptrdiff_t oh) {
    const uint8_t* img = p->x + n * p->H * p->W * p->C;
    ptrdiff_t m0 = (n * p->OH + oh) * p->OW;      /* the epilogue's row: output pixel index */
    for (ptrdiff_t ow = 0; ow < p->OW; ow++) {
        for (ptrdiff_t c0 = 0; c0 < p->C; c0 += 16) {
            ptrdiff_t cols = p->C - c0 < 16 ? p->C - c0 : 16;
            const int32_t* wp = p->w + c0;
#if WBQ_NATIVE
            __mmask16 k = (__mmask16)((1u << cols) - 1u);
            const __m512i zx = _mm512_set1_epi32(p->zx), low = _mm512_set1_epi32(0xFFFF);
            __m512i acc = _mm512_setzero_si512(), first = _mm512_setzero_si512();
#else
            int32_t acc[16] = {0}, first[16] = {0};
#endif
            int have = 0;
            for (ptrdiff_t i = 0; i < p->KH; i++) {
                ptrdiff_t ih = oh * p->SH - p->PT + i * p->DH;
                for (ptrdiff_t j = 0; j < p->KW; j++) {
                    ptrdiff_t iw = ow * p->SW - p->PL + j * p->DW;
                    int inside = ih >= 0 && ih < p->H && iw >= 0 && iw < p->W;
                    const uint8_t* xs = img + (ih * p->W + iw) * p->C + c0;
#if WBQ_NATIVE
                    __m512i v = inside ? _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, xs)), zx)
                                       : _mm512_setzero_si512();
                    if (!have) {
                        first = v;
                    } else {
                        __m512i pair = _mm512_or_si512(_mm512_and_si512(first, low), _mm512_slli_epi32(v, 16));
                        acc = _mm512_dpwssd_epi32(acc, pair, _mm512_load_si512((const void*)wp));
                        wp += p->Cp;
                    }
#else
                    for (ptrdiff_t c = 0; c < cols; c++) {
                        int32_t v = inside ? (int32_t)xs[c] - p->zx : 0;
                        if (!have) first[c] = v;
                        else acc[c] += first[c] * (int16_t)(wp[c] & 0xFFFF) + v * (int16_t)(wp[c] >> 16);
                    }
                    if (have) wp += p->Cp;
#endif
                    have = !have;
                }
            }
            if (have) {   /* an odd last tap: its pair's second weight is zero */
#if WBQ_NATIVE
                acc = _mm512_dpwssd_epi32(acc, _mm512_and_si512(first, low), _mm512_load_si512((const void*)wp));
#else
                for (ptrdiff_t c = 0; c < cols; c++) acc[c] += first[c] * (int16_t)(wp[c] & 0xFFFF);
#endif
            }
#if WBQ_NATIVE
            wbq_epilogue(&p->epi, m0 + ow, c0, acc);
#else
            wbq_store(&p->epi, m0 + ow, c0, cols, acc);
#endif
        }
    }
}

#endif
