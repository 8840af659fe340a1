/* qint8 depthwise convolution, NHWC: uint8 image, int8 weights per channel (widened to int32 once,
 * in pack), exact int32 sums of (x - zx) * w over each window (taps in the padding skipped: they
 * are real zeros), and gemm_q8's requantizing epilogue (wb_gemm_q8.h; its comp is zero here, the
 * zero point being taken out tap by tap).  One job: one output row of one image. */
#ifndef WB_DW_Q8_H
#define WB_DW_Q8_H

#include "wb_gemm_q8.h"

typedef struct {
    const uint8_t* x; ptrdiff_t H, W, C;          /* image (N, H, W, C) */
    const int32_t* w;                             /* (KH * KW, Cp) int32, Cp = C rounded up to 16 */
    ptrdiff_t Cp, KH, KW, SH, SW, DH, DW, PT, PL, OH, OW;
    int zx;
    wbq_args epi;                                 /* comp (zeros), mult, bias, out, ldo = C, zo, relu, N = C */
} wbd_args;

static void wbd_row(const wbd_args* p, ptrdiff_t n, ptrdiff_t oh) {
    const uint8_t* img = p->x + n * p->H * p->W * p->C;
    ptrdiff_t m0 = (n * p->OH + oh) * p->OW;      /* the epilogue's row: output pixel index */
    for (ptrdiff_t ow = 0; ow < p->OW; ow++) {
        for (ptrdiff_t c0 = 0; c0 < p->C; c0 += 16) {
            ptrdiff_t cols = p->C - c0 < 16 ? p->C - c0 : 16;
#if WBQ_NATIVE
            __mmask16 k = (__mmask16)((1u << cols) - 1u);
            __m512i acc = _mm512_setzero_si512(), zx = _mm512_set1_epi32(p->zx);
#else
            int32_t acc[16] = {0};
#endif
            for (ptrdiff_t i = 0; i < p->KH; i++) {
                ptrdiff_t ih = oh * p->SH - p->PT + i * p->DH;
                if (ih < 0 || ih >= p->H) continue;
                for (ptrdiff_t j = 0; j < p->KW; j++) {
                    ptrdiff_t iw = ow * p->SW - p->PL + j * p->DW;
                    if (iw < 0 || iw >= p->W) continue;
                    const uint8_t* xs = img + (ih * p->W + iw) * p->C + c0;
                    const int32_t* ws = p->w + (i * p->KW + j) * p->Cp + c0;
#if WBQ_NATIVE
                    __m512i xv = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, xs)), zx);
                    acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(xv, _mm512_load_si512((const void*)ws)));
#else
                    for (ptrdiff_t c = 0; c < cols; c++) acc[c] += ((int32_t)xs[c] - p->zx) * ws[c];
#endif
                }
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
