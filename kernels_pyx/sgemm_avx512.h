/* Cache-blocked single-threaded SGEMM for row-major C(m, n) (+)= A(m, k) @ op(B), AVX-512.
 *
 * Goto/BLIS scheme: B is packed once into K-blocks of WB512_KC rows, each a run of panels of
 * WB512_NR (32) columns stored k-major (kcb x 32 contiguous, zero padded past n); the caller can
 * pack it ahead (weights, at prepare time) and share it read-only between threads.  A (an
 * activation in every caller) is read in place, 12 rows at a time (wb512_micro_da); only a last
 * strip of fewer rows is packed (kcb x 12, zero padded past m) into a caller-owned buffer of
 * wb512_abuf_floats() floats, so every thread of a parallel loop brings its own.  Packed-A kernels
 * (wb512_micro_pf, wb512_micro4) serve those strips and callers that pack A ahead (Winograd's
 * NCHW weights).
 * The 12x32 micro-kernel keeps 24 zmm accumulators, 2 for the B row and one broadcast (27 of
 * 32 registers); edges are handled by masked stores (columns) and row counts (rows), never by
 * reading outside A, B or C.  Its k loops run two steps a pass ("GCC unroll 2"): the pointer
 * steps and the branch, half as many, then take fewer issue slots beside the FMAs.
 *
 * The micro-kernels are in sgemm_micro512.h; the fused epilogue (bias, residual, activation) and
 * the column masks in sgemm_epi512.h.
 *
 * Built without AVX-512 (the baseline module of an `isa-variants` .pyx) the same functions run a
 * scalar micro-kernel on the same packed layout: correct, slow, and reported by WB512_NATIVE = 0.
 */
#ifndef WB_SGEMM_AVX512_H
#define WB_SGEMM_AVX512_H

#include <stddef.h>
#include <string.h>
#include <stdlib.h>

#define WB512_MR 12
#define WB512_NR 32
#define WB512_KC 256
#define WB512_MC 144

#ifdef __AVX512F__
#include <immintrin.h>
#define WB512_NATIVE 1
#else
#define WB512_NATIVE 0
#endif

#include "sgemm_epi512.h"

static inline ptrdiff_t wb512_round_up(ptrdiff_t v, ptrdiff_t to) { return (v + to - 1) / to * to; }

/* Floats of a packed B of k rows, n columns. */
static inline ptrdiff_t wb512_packed_b_floats(ptrdiff_t k, ptrdiff_t n) {
    return k * wb512_round_up(n, WB512_NR);
}

/* Floats of the per-thread A packing buffer. */
static inline ptrdiff_t wb512_abuf_floats(void) { return (ptrdiff_t)WB512_MC * WB512_KC; }

/* Where the 12 rows of a strip live for wb512_micro_da: row 3t + i (i < 3) of A at a[t] + i * lda
 * (plus the K block's offset), row r of C at c[r] (plus the column), its epilogue row index (the
 * residual's row) row[r].  A plain matrix: a[t] = a + 3t lda, c[r] = c + r ldc.  An implicit-GEMM
 * convolution: four triples of output pixels from anywhere in the image, read in place from the
 * input, and C wherever those pixels are.  runs: A's rows are made of kernel-row runs (see
 * wb512_conv_strips), else plain rows. */
typedef struct {
    const float* a[4];
    ptrdiff_t lda;
    float* c[WB512_MR];
    ptrdiff_t row[WB512_MR];
    int runs;
} wb512_strip;

/* How the strips that share a panel fetch the next one into L2 (cold weights stream from
 * memory): strip s of ns fetches its own stretch of it, pfs floats a k step, so the misses spread
 * over the whole panel's time instead of queueing with the first strip's loads for the few
 * line-fill buffers.  Strips past the stretches fetch their own panel (in L1 already). */
static inline ptrdiff_t wb512_pf_step(int ns) { return ns >= 8 ? 4 : ns >= 4 ? 8 : ns >= 2 ? 16 : 32; }
static inline const float* wb512_pf_at(const float* next, const float* panel, int s, ptrdiff_t kcb,
                                       ptrdiff_t pfs) {
    return s < WB512_NR / pfs ? next + s * kcb * pfs : panel;
}

/* Pack panels p0..p1-1 (of WB512_NR columns) of op(B) (k x n); trans_b: B is stored (n, k).
 * Layout: K-block starting at row kb holds its panels at dst + kb * npad + jp * kcb * NR. */
static inline void wb512_pack_b(ptrdiff_t k, ptrdiff_t n, const float* b, ptrdiff_t ldb, int trans_b,
                                float* dst, ptrdiff_t p0, ptrdiff_t p1) {
    ptrdiff_t npad = wb512_round_up(n, WB512_NR), kb, jp, kk, j;
    for (kb = 0; kb < k; kb += WB512_KC) {
        ptrdiff_t kcb = k - kb < WB512_KC ? k - kb : WB512_KC;
        for (jp = p0; jp < p1; jp++) {
            float* d = dst + kb * npad + jp * kcb * WB512_NR;
            ptrdiff_t j0 = jp * WB512_NR, nr = n - j0 < WB512_NR ? n - j0 : WB512_NR;
            if (!trans_b) {
                for (kk = 0; kk < kcb; kk++) {
                    const float* s = b + (kb + kk) * ldb + j0;
                    memcpy(d + kk * WB512_NR, s, nr * sizeof(float));
                    if (nr < WB512_NR) memset(d + kk * WB512_NR + nr, 0, (WB512_NR - nr) * sizeof(float));
                }
            } else {
                for (kk = 0; kk < kcb; kk++)
                    for (j = 0; j < WB512_NR; j++)
                        d[kk * WB512_NR + j] = j < nr ? b[(j0 + j) * ldb + kb + kk] : 0.0f;
            }
        }
    }
}

/* Pack rows 0..mcb-1, depth kb..kb+kcb-1 of A into strips of MR rows, k-major. */
static inline void wb512_pack_a(ptrdiff_t mcb, ptrdiff_t kcb, const float* a, ptrdiff_t lda, float* dst) {
    ptrdiff_t i0, i, kk;
    for (i0 = 0; i0 < mcb; i0 += WB512_MR) {
        ptrdiff_t mr = mcb - i0 < WB512_MR ? mcb - i0 : WB512_MR;
        float* d = dst + i0 * kcb;
        if (mr == WB512_MR) {
            const float* r[WB512_MR];
            for (i = 0; i < WB512_MR; i++) r[i] = a + (i0 + i) * lda;
            for (kk = 0; kk < kcb; kk++)
                for (i = 0; i < WB512_MR; i++) d[kk * WB512_MR + i] = r[i][kk];
        } else {
            for (kk = 0; kk < kcb; kk++)
                for (i = 0; i < WB512_MR; i++) d[kk * WB512_MR + i] = i < mr ? a[(i0 + i) * lda + kk] : 0.0f;
        }
    }
}

#include "sgemm_micro512.h"

/* The micro-kernel without prefetching ahead (the panel itself is the prefetch target). */
static inline void wb512_micro(ptrdiff_t kcb, const float* pa, const float* pb, float* c, ptrdiff_t ldc,
                               int mr, int nr, int load) {
    wb512_micro_pf(kcb, pa, pb, c, ldc, mr, nr, load, pb);
}

/* C[0:m, j0:j1] (+)= A(m, k) @ B[:, j0:j1] with B packed by wb512_pack_b (n columns in all);
 * j0 a multiple of WB512_NR.  Full 12-row strips read A in place (wb512_micro_da); only a last
 * strip of fewer rows is packed, into abuf (wb512_abuf_floats() floats, this thread's own), so
 * nothing is read past row m.  ep: the epilogue applied to each block on its last K block
 * (NULL: none). */
static inline void wb512_gemm_direct(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a, ptrdiff_t lda,
                                     const float* pb, float* c, ptrdiff_t ldc, int accumulate,
                                     float* abuf, ptrdiff_t j0, ptrdiff_t j1, const wb512_epi* ep) {
    ptrdiff_t npad = wb512_round_up(n, WB512_NR), ic, kb, jp, ir;
    if (m <= 0 || j1 <= j0) return;
    if (k <= 0) {
        if (!accumulate)
            for (ic = 0; ic < m; ic++) memset(c + ic * ldc + j0, 0, (j1 - j0) * sizeof(float));
        return;
    }
    for (ic = 0; ic < m; ic += WB512_MC) {
        ptrdiff_t mcb = m - ic < WB512_MC ? m - ic : WB512_MC, full = mcb / WB512_MR * WB512_MR;
        wb512_strip st[WB512_MC / WB512_MR];
        for (ir = 0; ir < full; ir += WB512_MR) {
            wb512_strip* r = st + ir / WB512_MR;
            int t;
            for (t = 0; t < WB512_MR; t++) {
                if (t < 4) r->a[t] = a + (ic + ir + 3 * t) * lda;
                r->c[t] = c + (ic + ir + t) * ldc;
                r->row[t] = ic + ir + t;
            }
            r->lda = lda;
            r->runs = 0;
        }
        for (kb = 0; kb < k; kb += WB512_KC) {
            ptrdiff_t kcb = k - kb < WB512_KC ? k - kb : WB512_KC;
            int load = accumulate || kb > 0, tail = (int)(mcb - full);
            const wb512_epi* last = kb + kcb >= k ? ep : NULL;
            const float* ab = a + ic * lda + kb;
            if (tail > 1) wb512_pack_a(tail, kcb, ab + full * lda, lda, abuf);
            for (jp = j0 / WB512_NR; jp * WB512_NR < j1; jp++) {
                const float* panel = pb + kb * npad + jp * kcb * WB512_NR;
                ptrdiff_t col = jp * WB512_NR, nr = j1 - col < WB512_NR ? j1 - col : WB512_NR;
                /* prefetched while this panel's first strip runs: the next panel, or past the
                 * last one the first panel of the next K block (cold weights stream from memory) */
                const float* next = (jp + 1) * WB512_NR < j1 ? panel + kcb * WB512_NR
                                    : kb + kcb < k ? pb + (kb + kcb) * npad + (j0 / WB512_NR) * WB512_NR *
                                                     (k - kb - kcb < WB512_KC ? k - kb - kcb : WB512_KC)
                                    : panel;
                float* cc = c + ic * ldc + col;
                ptrdiff_t pfs = wb512_pf_step((int)(full / WB512_MR));
                for (ir = 0; ir < full; ir += WB512_MR)
                    (nr <= 16 ? wb512_micro_da16 : wb512_micro_da)(kcb, st + ir / WB512_MR, kb, panel, col,
                                                                    (int)nr, load,
                                                                    wb512_pf_at(next, panel, (int)(ir / WB512_MR), kcb, pfs),
                                                                    pfs, last, kcb, kcb, 0);
                if (tail == 1)   /* a row read in place */
                    wb512_micro1(kcb, ab + full * lda, panel, cc + full * ldc, (int)nr, load, full == 0 ? next : panel);
                else if (tail && tail <= 4 && full > 0)
                    wb512_micro4(kcb, abuf, panel, cc + full * ldc, ldc, tail, (int)nr, load);
                else if (tail)
                    wb512_micro_pf(kcb, abuf, panel, cc + full * ldc, ldc, tail, (int)nr, load,
                                   full == 0 ? next : panel);
                if (tail && last) wb512_epi_block(cc + full * ldc, ldc, tail, (int)nr, last, ic + full, col);
            }
        }
    }
}

#endif
