/* The strip runner of our AVX-512 implicit-GEMM NHWC convolution (kernels_pyx/_implicit512.pxd,
 * which forms the strips): the micro-kernel of sgemm_avx512.h over a batch of strips, K block by
 * K block and panel by panel, so that each panel of weights serves every strip while in L1. */
#ifndef WB_IMPLICIT512_H
#define WB_IMPLICIT512_H

#include "sgemm_avx512.h"

/* Implicit-GEMM strips of a group-1 NHWC convolution with unit horizontal dilation, all
 * output channels (n, B packed by wb512_pack_b), C's rows NHWC pixels.  A strip with runs reads
 * its pixels' taps in place: the depth kg = KH * KW * C, ordered (ki, kj, channel) like the packed
 * weights, is KH runs of chunk = KW * C floats of the input, rowstep floats apart (dilation_h * W *
 * C), and a[t] points at its first pixel's first tap.  A strip without runs reads rows of kg
 * gathered floats (the padded border, by im2col).  Columns j0..j1-1 (j0 a multiple of WB512_NR);
 * ep: the epilogue (NULL: none).  No im2col buffer for the inside of the image, no gather. */
static inline void wb512_conv_strips(int ns, const wb512_strip* st, ptrdiff_t kg, ptrdiff_t chunk,
                                     ptrdiff_t rowstep, const float* pb, ptrdiff_t n, ptrdiff_t j0, ptrdiff_t j1,
                                     const wb512_epi* ep) {
    ptrdiff_t npad = wb512_round_up(n, WB512_NR), kb, jp;
    int s;
    for (kb = 0; kb < kg; kb += WB512_KC) {
        ptrdiff_t kcb = kg - kb < WB512_KC ? kg - kb : WB512_KC;
        ptrdiff_t t = kb % chunk, off = (kb / chunk) * rowstep + t;
        const wb512_epi* last = kb + kcb >= kg ? ep : NULL;
        for (jp = j0 / WB512_NR; jp * WB512_NR < j1; jp++) {
            const float* panel = pb + kb * npad + jp * kcb * WB512_NR;
            ptrdiff_t col = jp * WB512_NR, nr = j1 - col < WB512_NR ? j1 - col : WB512_NR;
            const float* next = (jp + 1) * WB512_NR < j1 ? panel + kcb * WB512_NR : panel;
            ptrdiff_t pfs = wb512_pf_step(ns);
            for (s = 0; s < ns; s++) {
                const float* pf = wb512_pf_at(next, panel, s, kcb, pfs);
                if (st[s].runs)
                    (nr <= 16 ? wb512_micro_da16 : wb512_micro_da)(kcb, st + s, off, panel, col, (int)nr, kb > 0, pf, pfs,
                                                                    last, chunk - t, chunk, rowstep - chunk);
                else
                    (nr <= 16 ? wb512_micro_da16 : wb512_micro_da)(kcb, st + s, kb, panel, col, (int)nr, kb > 0, pf, pfs,
                                                                    last, kcb, kcb, 0);
            }
        }
    }
}

#endif
