/* A network's first convolution, straight from the caller's image: float32 NCHW in, NHWC out
 * (float32, or bfloat16 rounded once), few input channels (C <= 4: RGB), any kernel size,
 * stride and padding, dilation 1, groups 1.
 *
 * Every image model starts with such a layer, and the general routines do it badly: the image
 * first needs an NCHW -> NHWC adapt (the whole input read and written once more), then an
 * implicit GEMM whose depth per tap is C = 3 (its loop overhead, not its multiply-adds, sets the
 * time), or an im2col whose depth 27 leaves most of a 12 x 32 micro-tile's time in its epilogue.
 * Here each job is one output row: the C x KH input rows it reads are copied once, zero-padded,
 * into the thread's scratch, and then a register tile of P output pixels by NZ vectors of 16
 * output channels takes, for each of the C x KH x KW taps, NZ weight vectors and P broadcast
 * inputs: P x NZ FMAs a tap, no gather, no transpose.  NZ = ceil(M / 16) <= 4 (M <= 64 output
 * channels), P = 16, 12, 8, 6 for NZ = 1..4 (at most 24 accumulators).
 *
 * The epilogue (bias, activation, post-activation affine) is sgemm_epi512.h's, on the float32
 * sums in registers; a bfloat16 output is rounded to nearest even (NaN kept) with AVX-512F
 * integer operations, so the kernel needs no AVX512-BF16.
 *
 * Built without AVX-512F only wbs_native() (0) is usable: the routines are not offered. */
#ifndef WB_STEM512_H
#define WB_STEM512_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#ifndef WB512_NATIVE
#define WB512_NATIVE 1
#endif
#else
#ifndef WB512_NATIVE
#define WB512_NATIVE 0
#endif
#endif
#include "sgemm_epi512.h"

#define WBS_MAX_C 4
#define WBS_MAX_NZ 4
#define WBS_SLACK 16   /* pixels past a row's last output that a short last tile may read */

typedef struct {
    const float* x;      /* (n, c, h, w) float32 */
    const float* wp;     /* (taps, nz * 16) float32: tap (ci, ky, kx)'s weights, zero past m */
    const ptrdiff_t* toff;   /* tap t's offset in the padded rows: (ci * kh + ky) * row floats + kx */
    void* y;             /* (n, oh, ow, m): float32, or bfloat16 bits (y_bf16) */
    ptrdiff_t n, c, h, w, m, oh, ow, wpad, taps;   /* wpad: a padded input row's floats */
    int kh, kw, sh, sw, pt, pl, nz, y_bf16;
    wb512_epi ep;        /* bias per column, activation, post affine; no residual */
} wbs_geo;

/* Floats of one thread's scratch: the C x KH padded input rows of an output row. */
static inline ptrdiff_t wbs_scratch_floats(const wbs_geo* g) {
    return g->c * g->kh * (g->wpad + (ptrdiff_t)WBS_SLACK * g->sw);
}

#ifdef __AVX512F__
static inline int wbs_native(void) { return 1; }

#define WBS_AI static inline __attribute__((always_inline))

/* float32 -> bfloat16 bits, nearest even, a NaN quietened (wbb_round's rule), 16 lanes: one
 * VCVTNEPS2BF16 where the build has AVX512-BF16 (the emulation's ten integer operations a vector
 * took as many vector-pipe slots as a third of the tile's FMAs), else integer operations. */
#ifdef __AVX512BF16__
WBS_AI __m256i wbs_round16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }
#else
WBS_AI __m256i wbs_round16(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}
#endif

WBS_AI void wbs_store(const wbs_geo* g, ptrdiff_t px, int z, __m512 v, __mmask16 k) {
    ptrdiff_t at = px * g->m + (ptrdiff_t)z * 16;
    if (g->y_bf16)
        _mm256_mask_storeu_epi16((uint16_t*)g->y + at, k, wbs_round16(v));
    else
        _mm512_mask_storeu_ps((float*)g->y + at, k, v);
}

/* Output pixels ox0 .. ox0 + cnt - 1 (cnt <= P) of output row `row` (n * oh + oy) from the
 * padded rows; NZ, P and SW (the stride along x, 0: g->sw) are literals at each call, so the
 * tile lives in registers and each tap's P inputs are fixed displacements from one pointer. */
WBS_AI void wbs_tile(const wbs_geo* g, const float* rows, ptrdiff_t row, ptrdiff_t ox0, int cnt, const int NZ,
                     const int P, const int SW) {
    __m512 acc[24];   /* P x NZ <= 24 */
    const ptrdiff_t sw = SW ? SW : g->sw, ld = (ptrdiff_t)NZ * 16, taps = g->taps;
    const float* base = rows + ox0 * sw;
    const float* wt = g->wp;
    int p, z;
    ptrdiff_t t;
    /* The sums start from the bias (zero past m), so the epilogue adds none. */
    __m512 bias[4];
    _Pragma("GCC unroll 4")
    for (z = 0; z < NZ; z++) {
        int live = (int)(g->m - z * 16 < 16 ? g->m - z * 16 : 16);
        bias[z] = g->ep.bias != NULL ? _mm512_maskz_loadu_ps(wb512_mask_lo(live), g->ep.bias + z * 16)
                                     : _mm512_setzero_ps();
    }
    _Pragma("GCC unroll 24")
    for (p = 0; p < P * NZ; p++) acc[p] = bias[p % NZ];
    for (t = 0; t < taps; t++, wt += ld) {
        const float* r = base + g->toff[t];
        __m512 wv[4];
        _Pragma("GCC unroll 4")
        for (z = 0; z < NZ; z++) wv[z] = _mm512_loadu_ps(wt + z * 16);
        _Pragma("GCC unroll 16")
        for (p = 0; p < P; p++) {
            __m512 b = _mm512_set1_ps(r[p * sw]);
            _Pragma("GCC unroll 4")
            for (z = 0; z < NZ; z++) acc[p * NZ + z] = _mm512_fmadd_ps(b, wv[z], acc[p * NZ + z]);
        }
    }
    const ptrdiff_t px0 = row * g->ow + ox0;
    wb512_epi rest = g->ep;
    rest.bias = NULL;
    const __m512 zero = _mm512_setzero_ps();
    for (z = 0; z < NZ; z += 2) {
        ptrdiff_t col0 = (ptrdiff_t)z * 16;
        int live0 = (int)(g->m - col0 < 16 ? g->m - col0 : 16);
        int live1 = z + 1 < NZ ? (int)(g->m - col0 - 16 < 16 ? g->m - col0 - 16 : 16) : 0;
        __mmask16 m0 = wb512_mask_lo(live0), m1 = live1 > 0 ? wb512_mask_lo(live1) : 0;
        for (p = 0; p < cnt; p++) {
            __m512 v0 = acc[p * NZ + z], v1 = z + 1 < NZ ? acc[p * NZ + z + 1] : _mm512_setzero_ps();
            wb512_epi_regs(&v0, &v1, &rest, px0 + p, col0, zero, zero, m0, m1);
            wbs_store(g, px0 + p, z, v0, m0);
            if (m1) wbs_store(g, px0 + p, z + 1, v1, m1);
        }
    }
}

/* The tiles of one output row for NZ vectors of output channels, stride SW (0: any). */
WBS_AI void wbs_row_tiles(const wbs_geo* g, const float* rows, ptrdiff_t row, const int NZ, const int P,
                          const int SW) {
    ptrdiff_t ox;
    for (ox = 0; ox < g->ow; ox += P) {
        int left = (int)(g->ow - ox);
        wbs_tile(g, rows, row, ox, left < P ? left : P, NZ, P, SW);
    }
}

#define WBS_BY_STRIDE(NZ, P) \
    (g->sw == 1 ? wbs_row_tiles(g, rows, row, NZ, P, 1) \
                : g->sw == 2 ? wbs_row_tiles(g, rows, row, NZ, P, 2) : wbs_row_tiles(g, rows, row, NZ, P, 0))

/* Output rows r0..r1-1 (of n * oh), rows: this thread's scratch (wbs_scratch_floats). */
static inline void wbs_rows(const wbs_geo* g, float* rows, ptrdiff_t r0, ptrdiff_t r1) {
    const ptrdiff_t rstride = g->wpad + (ptrdiff_t)WBS_SLACK * g->sw;
    ptrdiff_t row;
    int ci, ky;
    for (row = r0; row < r1; row++) {
        ptrdiff_t b = row / g->oh, oy = row % g->oh;
        for (ci = 0; ci < g->c; ci++)
            for (ky = 0; ky < g->kh; ky++) {
                float* dst = rows + (ci * g->kh + ky) * rstride;
                ptrdiff_t iy = oy * g->sh - g->pt + ky;
                if (iy < 0 || iy >= g->h) {
                    memset(dst, 0, (size_t)rstride * sizeof(float));
                    continue;
                }
                const float* src = g->x + ((b * g->c + ci) * g->h + iy) * g->w;
                ptrdiff_t lead = g->pl < rstride ? g->pl : rstride;
                ptrdiff_t body = rstride - lead < g->w ? rstride - lead : g->w;
                memset(dst, 0, (size_t)lead * sizeof(float));
                memcpy(dst + lead, src, (size_t)body * sizeof(float));
                memset(dst + lead + body, 0, (size_t)(rstride - lead - body) * sizeof(float));
            }
        switch (g->nz) {
        case 1: WBS_BY_STRIDE(1, 16); break;
        case 2: WBS_BY_STRIDE(2, 12); break;
        case 3: WBS_BY_STRIDE(3, 8); break;
        default: WBS_BY_STRIDE(4, 6); break;
        }
    }
}
#else
static inline int wbs_native(void) { return 0; }
static inline void wbs_rows(const wbs_geo* g, float* rows, ptrdiff_t r0, ptrdiff_t r1) {
    (void)g; (void)rows; (void)r0; (void)r1;
}
#endif

#endif
