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
 * wb_pool512_row returns 1 when it computed the row, 0 in a build without AVX-512.  Its body is
 * wb_pool512_row.inc, which wb_pool_bf16.h instantiates again on bfloat16 elements.
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

#define WB_POOL_ROW wb_pool512_row
#define WB_POOL_T float
#define WB_POOL_LOAD(m, p) _mm512_maskz_loadu_ps(m, p)
#define WB_POOL_STORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#include "wb_pool512_row.inc"

#else
#define WB_POOL512_NATIVE 0
#define wb_pool512_row(...) 0   /* never called: pool.pyx checks WB_POOL512_NATIVE */

#endif
#endif
