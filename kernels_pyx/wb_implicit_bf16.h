/* Implicit-GEMM NHWC convolution on bfloat16 images, on wb_gemm_bf16.h's micro-kernels.
 *
 * im2col_bf16 gathers each output pixel's KH x KW x C taps into a row before the product: on a
 * 3x3 layer of 96 channels that is 1.7 KB a pixel written and read again, and on a detector's
 * 160 x 160 maps the gather, not the multiply-adds, set the layer's time.  Here the image is
 * first copied once into a zero-bordered one (wbi_pad_rows: the padding in place, a float32 image
 * rounded to bfloat16 on the way), and then every tap of a block of pixels of one output row is a
 * fixed offset from the block's first pixel: the micro-kernel walks those offsets (toff) instead of
 * one contiguous row, with the packed weights of the im2col order (kernel row, kernel column,
 * channel).  The channel count must be even, so that no pair of depth crosses a tap.
 *
 * A block never crosses an output row: its pixels are lda = SW * C words apart in the padded
 * image, which holds within a row only.  Rows of OW not a multiple of 12 end in a shorter block. */
#ifndef WB_IMPLICIT_BF16_H
#define WB_IMPLICIT_BF16_H

#include "wb_gemm_bf16.h"
#include "wb_amx_runs.h"

/* Rows r0..r1-1 of the padded image (n * hp rows of wpd pixels, hp = h + pt + pb, wpd = w + pl +
 * pr): the input's rows with zero borders, rounded to bfloat16 where x is float32. */
static inline void wbi_pad_rows(const wbb_geo* g, const void* x, int x_f32, ptrdiff_t hp, ptrdiff_t wpd,
                                uint16_t* xp, ptrdiff_t r0, ptrdiff_t r1) {
    ptrdiff_t r, c = g->c;
    for (r = r0; r < r1; r++) {
        ptrdiff_t b = r / hp, y = r % hp - g->pt, right = wpd - g->pl - g->w;
        uint16_t* dst = xp + r * wpd * c;
        if (y < 0 || y >= g->h) {
            memset(dst, 0, (size_t)(wpd * c) * 2);
            continue;
        }
        memset(dst, 0, (size_t)(g->pl * c) * 2);
        ptrdiff_t at = (b * g->h + y) * g->w * c;
        if (x_f32)
            wbb_narrow((const float*)x + at, dst + g->pl * c, g->w * c);
        else
            memcpy(dst + g->pl * c, (const uint16_t*)x + at, (size_t)(g->w * c) * 2);
        if (right > 0)
            memset(dst + (g->pl + g->w) * c, 0, (size_t)(right * c) * 2);
    }
}

#if WBB_AMX
/* wbi_block (wb_implicit_bf16.h) on tiles, for c a multiple of 32: output pixels i0..i1-1,
 * panels p0..p1-1.  An A tile is up to 16 pixels of one output row, read where their taps lie in
 * the zero-bordered image xp, sw * c words apart: tap t's channels 32q.. at toff[t] + 32q from each
 * pixel's start, the packed depth's order.  A tile of fewer pixels (the row's end) still loads 16
 * rows, the others the next pixels of the bordered image (or up to 16 * sw * c words past its end:
 * the workspace holds that slack); their products land in stage rows that are never stored. */
static inline void wba_implicit_block(const wbb_geo* g, const uint16_t* xp, ptrdiff_t hp, ptrdiff_t wpd,
                                      const ptrdiff_t* toff, int ntaps, ptrdiff_t n, const uint16_t* pb, void* c,
                                      ptrdiff_t ldc, int f32, const wbb_epi* ep, ptrdiff_t i0, ptrdiff_t i1,
                                      ptrdiff_t p0, ptrdiff_t p1) {
    float stage[32 * 32] __attribute__((aligned(64)));
    ptrdiff_t k = ntaps * g->c, panel_words = wbb_depth_pad(k) * WBB_NR, plane = g->oh * g->ow;
    ptrdiff_t stride = g->sw * g->c * 2, chunks = g->c / 32, p, i;
    if (i1 <= i0 || p1 <= p0)
        return;
    wba_configure();
    for (p = p0; p < p1; p++) {
        ptrdiff_t col0 = p * WBB_NR;
        int nr = (int)(n - col0 < WBB_NR ? n - col0 : WBB_NR), wide = nr > 16;
        const uint16_t* bp = pb + p * panel_words;
        for (i = i0; i < i1;) {
            /* two runs of pixels, each within one output row */
            const uint16_t* base[2] = {NULL, NULL};
            int rows[2] = {0, 0};
            ptrdiff_t at = i;
            for (int t = 0; t < 2 && at < i1; t++) {
                ptrdiff_t b = at / plane, oy = at % plane / g->ow, ox = at % g->ow, left = g->ow - ox;
                ptrdiff_t r = i1 - at < 16 ? i1 - at : 16;
                rows[t] = (int)(r < left ? r : left);
                base[t] = xp + ((b * hp + oy * g->sh) * wpd + ox * g->sw) * g->c;
                at += rows[t];
            }
            const int two = rows[1] > 0;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            const uint16_t* b = bp;
            for (int t = 0; t < ntaps; t++)
                for (ptrdiff_t q = 0; q < chunks; q++, b += 32 * WBB_NR) {
                    ptrdiff_t off = toff[t] + 32 * q;
                    _tile_loadd(6, b, 4 * WBB_NR);
                    if (wide)
                        _tile_loadd(7, b + 32, 4 * WBB_NR);
                    _tile_loadd(4, base[0] + off, stride);
                    _tile_dpbf16ps(0, 4, 6);
                    if (wide)
                        _tile_dpbf16ps(1, 4, 7);
                    if (two) {
                        _tile_loadd(5, base[1] + off, stride);
                        _tile_dpbf16ps(2, 5, 6);
                        if (wide)
                            _tile_dpbf16ps(3, 5, 7);
                    }
                }
            wba_store(stage, two, wide);
            wba_finish_rows(stage, 0, rows[0], wide, c, ldc, f32, nr, ep, i, col0);
            if (two)
                wba_finish_rows(stage, 16, rows[1], wide, c, ldc, f32, nr, ep, i + rows[0], col0);
            i = at;
        }
    }
    _tile_release();
}

#endif

/* Output pixels i0..i1-1 (of n * oh * ow), panels p0..p1-1 of the n output channels, from the
 * padded image xp (hp x wpd pixels an image); toff: the ntaps tap offsets in words, in the packed
 * weights' order; c out (n * oh * ow pixels ldc elements apart, n channels) bfloat16 or float32. */
static inline void wbi_block(const wbb_geo* g, const uint16_t* xp, ptrdiff_t hp, ptrdiff_t wpd, const ptrdiff_t* toff,
                             int ntaps, ptrdiff_t n, const uint16_t* pb, void* c, ptrdiff_t ldc, int f32,
                             const wbb_epi* ep, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t p0, ptrdiff_t p1) {
#if WBB_AMX
    if (g->c % 32 == 0) {
        wba_implicit_block(g, xp, hp, wpd, toff, ntaps, n, pb, c, ldc, f32, ep, i0, i1, p0, p1);
        return;
    }
    if (wba_runs_apply(g)) {
        wba_image im = {xp, hp, wpd, 0, 0, 0};
        im.words = PTRDIFF_MAX;   /* the workspace's slack covers the last tile's rows */
        wba_runs_block(g, &im, n, pb, c, ldc, f32, ep, i0, i1, p0, p1);
        return;
    }
#endif
    ptrdiff_t k = ntaps * g->c, panel_words = wbb_depth_pad(k) * WBB_NR, plane = g->oh * g->ow, lda = g->sw * g->c;
    ptrdiff_t p, i;
    for (p = p0; p < p1; p++) {
        ptrdiff_t col0 = p * WBB_NR;
        int nr = (int)(n - col0 < WBB_NR ? n - col0 : WBB_NR);
        const uint16_t* bp = pb + p * panel_words;
        for (i = i0; i < i1;) {
            ptrdiff_t b = i / plane, oy = i % plane / g->ow, ox = i % g->ow, left = g->ow - ox;
            int mr = (int)(i1 - i < WBB_MR ? i1 - i : WBB_MR);
            if (mr > left) mr = (int)left;
            const uint16_t* a = xp + ((b * hp + oy * g->sh) * wpd + ox * g->sw) * g->c;
            void* cb = (char*)c + (i * ldc + col0) * (f32 ? 4 : 2);
#if WBB_NATIVE
            if (mr > 4)
                wbb_micro12(k, a, lda, mr, bp, cb, ldc, f32, nr, ep, i, col0, toff, ntaps,
                            i == i0 && p + 1 < p1 ? bp + panel_words : NULL);
            else
                wbb_micro4(k, a, lda, mr, bp, cb, ldc, f32, nr, ep, i, col0, toff, ntaps);
#else
            int r, j, t;
            ptrdiff_t q, run = g->c;
            for (r = 0; r < mr; r++)
                for (j = 0; j < nr; j++) {
                    ptrdiff_t col = col0 + j, at = (i + r) * ep->ld_res + col, kk = 0;
                    float s = 0;
                    for (t = 0; t < ntaps; t++)
                        for (q = 0; q < run; q++, kk++)
                            s += wbb_widen(a[r * lda + toff[t] + q]) *
                                 wbb_widen(bp[(kk / 2) * 2 * WBB_NR + 2 * j + (kk & 1)]);
                    if (ep->bias != NULL) s += ep->bias[col];
                    if (ep->res != NULL && !ep->res_post) s += wbb_res1(ep, at);
                    s = wb512_act1(s, &ep->e);
                    if (ep->e.post_scale != NULL) s = s * ep->e.post_scale[col] + ep->e.post_shift[col];
                    if (ep->res != NULL && ep->res_post) s += wbb_res1(ep, at);
                    if (f32)
                        ((float*)cb)[r * ldc + j] = s;
                    else
                        ((uint16_t*)cb)[r * ldc + j] = wbb_round(s);
                }
#endif
            i += mr;
        }
    }
}

#endif
