/* One output row of an NHWC max or average pool with AVX-512 registers, for kernels_pyx/pool.pyx's
 * AVX-512 variant: every output pixel folds its window's taps straight into a register, 16
 * channels at a time (the last vector under a mask), and is stored once.  The portable kernel
 * (_pool_windows.pxd) folds the window's rows into scratch rows and then those into the output,
 * one call per pixel and tap on runs of C floats: with 24 to 64 channels the loop set-up cost
 * more than the arithmetic (ResNet-50's 3x3/2 max pool 158 us, ONNX Runtime's 84).
 *
 * ldx and ldy are the floats from one pixel to the next (C, or more in a channel slice).
 * The tables are pool.pyx's: taps kh_lo[oh]..kh_hi[oh]-1 and kw_lo[ow]..kw_hi[ow]-1 lie inside
 * the input; an average is scaled by inv_h[oh] * inv_w[ow] (count_include_pad is in them).  A
 * window without taps gives the lowest finite float (max) or 0 (average), as the portable kernel
 * does.
 * Max keeps a NaN from any tap, as the reference does: MAXPS alone keeps only some.
 *
 * wb_pool512_row returns 1 when it computed the row, 0 in a build without AVX-512.
 */
#ifndef WB_POOL512_H
#define WB_POOL512_H

#include <float.h>
#include <stddef.h>

#ifdef __AVX512F__
#include <immintrin.h>
#define WB_POOL512_NATIVE 1

/* The output columns a..z-1 whose windows hold all the row's widest span of taps, starting at
 * tap 0 (stride 1: a contiguous run, the pixels away from the padded edges); a = z when none. */
static inline void wb_pool512_interior(const int* kw_lo, const int* kw_hi, ptrdiff_t OW, ptrdiff_t* a,
                                       ptrdiff_t* z) {
    int widest = 0;
    ptrdiff_t ow;
    for (ow = 0; ow < OW; ow++)
        if (kw_hi[ow] - kw_lo[ow] > widest) widest = kw_hi[ow] - kw_lo[ow];
    for (ow = 0; ow < OW && !(kw_lo[ow] == 0 && kw_hi[ow] == widest); ow++) {}
    *a = ow;
    for (; ow < OW && kw_lo[ow] == 0 && kw_hi[ow] == widest; ow++) {}
    *z = ow;
}

static inline int wb_pool512_row(const float* x, float* y, ptrdiff_t b, ptrdiff_t oh, ptrdiff_t H, ptrdiff_t W,
                                 ptrdiff_t C, ptrdiff_t ldx, ptrdiff_t ldy, ptrdiff_t OH, ptrdiff_t OW,
                                 ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t pt, ptrdiff_t pl,
                                 const int* kh_lo, const int* kh_hi, const int* kw_lo, const int* kw_hi,
                                 const float* inv_h, const float* inv_w, int is_max) {
    const float* img = x + b * H * W * ldx;
    float* yr = y + (b * OH + oh) * OW * ldy;
    ptrdiff_t kh0 = kh_lo[oh], kh1 = kh_hi[oh], ow, c0, kh, kw;
    __m512 init = _mm512_set1_ps(is_max ? -__builtin_inff() : 0.0f), nanv = _mm512_set1_ps(__builtin_nanf(""));
    __m512 empty = _mm512_set1_ps(is_max ? -FLT_MAX : 0.0f);
    ptrdiff_t a = OW, z = OW;   /* interior pixels a..z-1 of a stride-1 row: folded flat below */
    if (sw == 1 && dw == 1 && ldx == C && ldy == C && kh1 > kh0)
        wb_pool512_interior(kw_lo, kw_hi, OW, &a, &z);
    if (a < z) {
        /* A run of whole windows over dense pixels is one flat loop over (pixel, channel): each
         * tap is the same offset for every output float, so every vector is full (no per-pixel
         * set-up, no masked channel tail: 24 channels took two vectors, one half empty). */
        ptrdiff_t kw0 = kw_lo[a], kw1 = kw_hi[a], f, n = (z - a) * C;
        const float* base = img + ((oh * sh - pt) * W + a - pl) * C;
        float* out = yr + a * C;
        __m512 scale = _mm512_set1_ps(inv_h[oh] * inv_w[a]);
        for (f = 0; f < n; f += 16) {
            __mmask16 m = n - f >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - f)) - 1);
            __m512 acc = init;
            __mmask16 nan = 0;
            for (kh = kh0; kh < kh1; kh++) {
                const float* row = base + kh * dh * W * C + f;
                for (kw = kw0; kw < kw1; kw++) {
                    __m512 v = _mm512_maskz_loadu_ps(m, row + kw * C);
                    if (is_max) {
                        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                        acc = _mm512_max_ps(acc, v);
                    } else {
                        acc = _mm512_add_ps(acc, v);
                    }
                }
            }
            acc = is_max ? _mm512_mask_mov_ps(acc, nan, nanv) : _mm512_mul_ps(acc, scale);
            _mm512_mask_storeu_ps(out + f, m, acc);
        }
    }
    for (ow = 0; ow < OW; ow++) {
        if (ow == a) ow = z;
        if (ow >= OW) break;
        ptrdiff_t kw0 = kw_lo[ow], kw1 = kw_hi[ow];
        const float* base = img + ((oh * sh - pt) * W + ow * sw - pl) * ldx;   /* tap (0, 0), maybe outside */
        __m512 scale = _mm512_set1_ps(inv_h[oh] * inv_w[ow]);
        for (c0 = 0; c0 < C; c0 += 16) {
            __mmask16 m = C - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - c0)) - 1);
            __m512 acc = init;
            __mmask16 nan = 0;
            for (kh = kh0; kh < kh1; kh++) {
                const float* row = base + kh * dh * W * ldx + c0;
                for (kw = kw0; kw < kw1; kw++) {
                    __m512 v = _mm512_maskz_loadu_ps(m, row + kw * dw * ldx);
                    if (is_max) {
                        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                        acc = _mm512_max_ps(acc, v);
                    } else {
                        acc = _mm512_add_ps(acc, v);
                    }
                }
            }
            acc = is_max ? _mm512_mask_mov_ps(acc, nan, nanv) : _mm512_mul_ps(acc, scale);
            if (kh1 <= kh0 || kw1 <= kw0) acc = empty;
            _mm512_mask_storeu_ps(yr + ow * ldy + c0, m, acc);
        }
    }
    return 1;
}

#else
#define WB_POOL512_NATIVE 0
#define wb_pool512_row(...) 0   /* never called: pool.pyx checks WB_POOL512_NATIVE */

#endif
#endif
