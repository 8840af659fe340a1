/* The micro-kernels of our SGEMM (sgemm_avx512.h, which includes this after its layout
 * definitions): C blocks of 12 rows x 32 columns from a strip of A and a packed panel of B, with
 * A packed (wb512_micro_pf, and wb512_micro4 for a tail of at most 4 rows), read in place
 * (wb512_micro_da, wb512_micro_da16 for at most 16 live columns) or a single row (wb512_micro1);
 * the fused epilogue (sgemm_epi512.h) is applied in registers before the stores.  Built without
 * AVX-512 the same functions are scalar loops (WB512_NATIVE = 0). */
#ifndef WB_SGEMM_MICRO512_H
#define WB_SGEMM_MICRO512_H

#if WB512_NATIVE
#define WB512_ROW(i) \
    bc = _mm512_set1_ps(pa[i]); \
    c##i##0 = _mm512_fmadd_ps(bc, b0, c##i##0); \
    c##i##1 = _mm512_fmadd_ps(bc, b1, c##i##1);
#define WB512_ROWD(i, v) \
    bc = _mm512_set1_ps(v); \
    c##i##0 = _mm512_fmadd_ps(bc, b0, c##i##0); \
    c##i##1 = _mm512_fmadd_ps(bc, b1, c##i##1);
/* C row i (at cr) += or = accumulators c<i>0, c<i>1 under the panel's column masks. */
#define WB512_STORE_TO(i, cr_) \
    { \
        float* cr = (cr_); \
        if (load) { \
            c##i##0 = _mm512_add_ps(c##i##0, _mm512_maskz_loadu_ps(m0, cr)); \
            c##i##1 = _mm512_add_ps(c##i##1, _mm512_maskz_loadu_ps(m1, cr + 16)); \
        } \
        _mm512_mask_storeu_ps(cr, m0, c##i##0); \
        _mm512_mask_storeu_ps(cr + 16, m1, c##i##1); \
    }
#define WB512_STORE(i) \
    if (i < mr) WB512_STORE_TO(i, c + (i) * ldc)
/* The stores of wb512_micro_da: row i of C at s->c[i], columns from col0. */
#define WB512_STORE_S(i) WB512_STORE_TO(i, s->c[i] + col0)
#define WB512_STORE_EPI(i) \
    { \
        float* cr = s->c[i] + col0; \
        if (load) { \
            c##i##0 = _mm512_add_ps(c##i##0, _mm512_maskz_loadu_ps(m0, cr)); \
            c##i##1 = _mm512_add_ps(c##i##1, _mm512_maskz_loadu_ps(m1, cr + 16)); \
        } \
        wb512_epi_regs(&c##i##0, &c##i##1, ep, s->row[i], col0, bv0, bv1, m0, m1); \
        _mm512_mask_storeu_ps(cr, m0, c##i##0); \
        _mm512_mask_storeu_ps(cr + 16, m1, c##i##1); \
    }

/* C(mr x nr) (+)= packed A strip (kcb x 12) @ packed B panel (kcb x 32); while streaming the
 * panel, prefetch the same stretch of ``pf`` (the next panel, cold in memory, or any readable
 * kcb x 32 floats) into L2, so the next panel's first strip does not wait on memory. */
static inline void wb512_micro_pf(ptrdiff_t kcb, const float* pa, const float* pb, float* c, ptrdiff_t ldc,
                                  int mr, int nr, int load, const float* pf) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00,
           c70 = c00, c71 = c00, c80 = c00, c81 = c00, c90 = c00, c91 = c00,
           c100 = c00, c101 = c00, c110 = c00, c111 = c00;
    __m512 b0, b1, bc;
    ptrdiff_t kk;
    __mmask16 m0 = wb512_mask_lo(nr), m1 = wb512_mask_hi(nr);
    _Pragma("GCC unroll 2")
    for (kk = 0; kk < kcb; kk++) {
        b0 = _mm512_loadu_ps(pb);
        b1 = _mm512_loadu_ps(pb + 16);
        _mm_prefetch((const char*)(pb + 8 * WB512_NR), _MM_HINT_T0);
        _mm_prefetch((const char*)pf, _MM_HINT_T1);
        _mm_prefetch((const char*)(pf + 16), _MM_HINT_T1);
        pf += WB512_NR;
        WB512_ROW(0) WB512_ROW(1) WB512_ROW(2) WB512_ROW(3) WB512_ROW(4) WB512_ROW(5)
        WB512_ROW(6) WB512_ROW(7) WB512_ROW(8) WB512_ROW(9) WB512_ROW(10) WB512_ROW(11)
        pa += WB512_MR;
        pb += WB512_NR;
    }
    WB512_STORE(0) WB512_STORE(1) WB512_STORE(2) WB512_STORE(3) WB512_STORE(4) WB512_STORE(5)
    WB512_STORE(6) WB512_STORE(7) WB512_STORE(8) WB512_STORE(9) WB512_STORE(10) WB512_STORE(11)
}
/* The same product for a tail strip of at most 4 rows (mr <= 4): a third of the FMAs the
 * 12-row kernel would spend on it (m = 49, ResNet's 7x7 layers, ends in a 1-row strip). */
static inline void wb512_micro4(ptrdiff_t kcb, const float* pa, const float* pb, float* c, ptrdiff_t ldc,
                                int mr, int nr, int load) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00;
    __m512 b0, b1, bc;
    ptrdiff_t kk;
    __mmask16 m0 = wb512_mask_lo(nr), m1 = wb512_mask_hi(nr);
    for (kk = 0; kk < kcb; kk++) {
        b0 = _mm512_loadu_ps(pb);
        b1 = _mm512_loadu_ps(pb + 16);
        WB512_ROW(0) WB512_ROW(1) WB512_ROW(2) WB512_ROW(3)
        pa += WB512_MR;
        pb += WB512_NR;
    }
    WB512_STORE(0) WB512_STORE(1) WB512_STORE(2) WB512_STORE(3)
}
/* One row of A (a vector, read in place) times a panel: a classifier's GEMV (m = 1), where the
 * 12-row kernel spent 24 FMAs a k on one live row.  Four k steps in flight on 8 accumulators, so
 * the loop waits on loads, not on one FMA chain; pf: the next panel, fetched ahead as weights
 * stream from memory. */
static inline void wb512_micro1(ptrdiff_t kcb, const float* a, const float* pb, float* c, int nr, int load,
                                const float* pf) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0, v;
    ptrdiff_t kk = 0;
    __mmask16 m0 = wb512_mask_lo(nr), m1 = wb512_mask_hi(nr);
    for (; kk + 4 <= kcb; kk += 4, pb += 4 * WB512_NR, pf += 4 * WB512_NR) {
        _mm_prefetch((const char*)pf, _MM_HINT_T1);
        _mm_prefetch((const char*)(pf + 32), _MM_HINT_T1);
        _mm_prefetch((const char*)(pf + 64), _MM_HINT_T1);
        _mm_prefetch((const char*)(pf + 96), _MM_HINT_T1);
        v = _mm512_set1_ps(a[kk]);
        s0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb), s0);
        s1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb + 16), s1);
        v = _mm512_set1_ps(a[kk + 1]);
        s2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb + 32), s2);
        s3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb + 48), s3);
        v = _mm512_set1_ps(a[kk + 2]);
        s4 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb + 64), s4);
        s5 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb + 80), s5);
        v = _mm512_set1_ps(a[kk + 3]);
        s6 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb + 96), s6);
        s7 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb + 112), s7);
    }
    for (; kk < kcb; kk++, pb += WB512_NR) {
        v = _mm512_set1_ps(a[kk]);
        s0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb), s0);
        s1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(pb + 16), s1);
    }
    s0 = _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s4, s6));
    s1 = _mm512_add_ps(_mm512_add_ps(s1, s3), _mm512_add_ps(s5, s7));
    if (load) {
        s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(m0, c));
        s1 = _mm512_add_ps(s1, _mm512_maskz_loadu_ps(m1, c + 16));
    }
    _mm512_mask_storeu_ps(c, m0, s0);
    _mm512_mask_storeu_ps(c + 16, m1, s1);
}
/* The 12x32 product reading A straight from its rows (row i at a + i * lda), unpacked: for A
 * that is an activation (NHWC pixels x channels, im2col columns) packing it cost a pass over it
 * per column tile, as much as a quarter of the FMAs' time when n is 64-128.  Four row bases
 * stepping one float a k and two row offsets keep the addressing in 8 registers.  A row may be
 * made of runs (implicit GEMM: one kernel row of an NHWC convolution's taps): the first run0
 * floats, then runs of chunk floats, each jump floats past the end of the one before; a plain
 * matrix row is one run (run0 = kcb).  While it streams the panel it fetches into L2 from pf on,
 * pfs floats a k step (the next panel's stretch of this strip: wb512_pf_at). */
static inline void wb512_micro_da(ptrdiff_t kcb, const wb512_strip* s, ptrdiff_t aoff, const float* pb,
                                  ptrdiff_t col0, int nr, int load, const float* pf, ptrdiff_t pfs, const wb512_epi* ep,
                                  ptrdiff_t run0, ptrdiff_t chunk, ptrdiff_t jump) {
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
           c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00,
           c70 = c00, c71 = c00, c80 = c00, c81 = c00, c90 = c00, c91 = c00,
           c100 = c00, c101 = c00, c110 = c00, c111 = c00;
    __m512 b0, b1, bc;
    ptrdiff_t kk, l1 = s->lda, l2 = 2 * s->lda, left = run0;
    const float *q0 = s->a[0] + aoff, *q3 = s->a[1] + aoff, *q6 = s->a[2] + aoff, *q9 = s->a[3] + aoff;
    __mmask16 m0 = wb512_mask_lo(nr), m1 = wb512_mask_hi(nr);
    int i;
    /* A product in one K block (the common case for a short depth) starts from the per-column
     * bias, and its epilogue then adds none: with K = 16 those adds were an eighth of the FMAs. */
    wb512_epi folded;
    const int fold = ep != NULL && !load && ep->bias != NULL && !ep->bias_per_row;
    if (fold) {
        __m512 f0 = _mm512_maskz_loadu_ps(m0, ep->bias + col0), f1 = _mm512_maskz_loadu_ps(m1, ep->bias + col0 + 16);
        c00 = c10 = c20 = c30 = c40 = c50 = c60 = c70 = c80 = c90 = c100 = c110 = f0;
        c01 = c11 = c21 = c31 = c41 = c51 = c61 = c71 = c81 = c91 = c101 = c111 = f1;
        folded = *ep;
        folded.bias = NULL;
    }
    /* What the stores will read (C from the previous K block, the residual): fetch it now, so
     * the loads after the k loop do not wait on L2 or memory.  A C written fresh is fetched for
     * writing: an output buffer not touched since the last run is out of the caches, and its
     * stores otherwise wait for the lines one by one. */
    for (i = 0; i < WB512_MR; i++) {
        if (load) {
            _mm_prefetch((const char*)(s->c[i] + col0), _MM_HINT_T0);
            _mm_prefetch((const char*)(s->c[i] + col0 + 16), _MM_HINT_T0);
        } else {
            __builtin_prefetch(s->c[i] + col0, 1, 3);
            __builtin_prefetch(s->c[i] + col0 + 16, 1, 3);
        }
        if (ep != NULL && ep->res != NULL) {
            const float* rr = ep->res + s->row[i] * ep->ld_res + col0;
            _mm_prefetch((const char*)rr, _MM_HINT_T0);
            _mm_prefetch((const char*)(rr + 16), _MM_HINT_T0);
        }
    }
    for (kk = 0; kk < kcb; kk += left, left = chunk) {   /* one run of A's rows at a time */
        const float* end;
        if (left > kcb - kk) left = kcb - kk;
        _Pragma("GCC unroll 2")
        for (end = q0 + left; q0 < end;) {
            b0 = _mm512_loadu_ps(pb);
            b1 = _mm512_loadu_ps(pb + 16);
            _mm_prefetch((const char*)(pb + 8 * WB512_NR), _MM_HINT_T0);
            _mm_prefetch((const char*)pf, _MM_HINT_T1);
            _mm_prefetch((const char*)(pf + (pfs >> 1)), _MM_HINT_T1);
            pf += pfs;
            WB512_ROWD(0, q0[0]) WB512_ROWD(1, q0[l1]) WB512_ROWD(2, q0[l2])
            WB512_ROWD(3, q3[0]) WB512_ROWD(4, q3[l1]) WB512_ROWD(5, q3[l2])
            WB512_ROWD(6, q6[0]) WB512_ROWD(7, q6[l1]) WB512_ROWD(8, q6[l2])
            WB512_ROWD(9, q9[0]) WB512_ROWD(10, q9[l1]) WB512_ROWD(11, q9[l2])
            q0++; q3++; q6++; q9++;
            pb += WB512_NR;
        }
        q0 += jump; q3 += jump; q6 += jump; q9 += jump;   /* on to the next run (implicit GEMM) */
    }
    if (ep == NULL) {
        WB512_STORE_S(0) WB512_STORE_S(1) WB512_STORE_S(2) WB512_STORE_S(3) WB512_STORE_S(4) WB512_STORE_S(5)
        WB512_STORE_S(6) WB512_STORE_S(7) WB512_STORE_S(8) WB512_STORE_S(9) WB512_STORE_S(10) WB512_STORE_S(11)
    } else {
        const wb512_epi* epx = fold ? &folded : ep;
        __m512 bv0 = _mm512_setzero_ps(), bv1 = bv0;
        if (epx->bias != NULL && !epx->bias_per_row) {
            bv0 = _mm512_maskz_loadu_ps(m0, epx->bias + col0);
            bv1 = _mm512_maskz_loadu_ps(m1, epx->bias + col0 + 16);
        }
        const wb512_epi* ep = epx;   /* the stores' epilogue, the bias left out where the sums hold it */
        WB512_STORE_EPI(0) WB512_STORE_EPI(1) WB512_STORE_EPI(2) WB512_STORE_EPI(3)
        WB512_STORE_EPI(4) WB512_STORE_EPI(5) WB512_STORE_EPI(6) WB512_STORE_EPI(7)
        WB512_STORE_EPI(8) WB512_STORE_EPI(9) WB512_STORE_EPI(10) WB512_STORE_EPI(11)
    }
}
/* wb512_micro_da for a panel with at most 16 live columns (nr <= 16: a layer of 16 or fewer output
 * channels, or a last panel of 16): the same 12 rows on the panel's first half only, half the
 * FMAs, where the 32-column kernel spent every other one on padding. */
#define WB512_ROWH(i, v) \
    bc = _mm512_set1_ps(v); \
    c##i##0 = _mm512_fmadd_ps(bc, b0, c##i##0);
#define WB512_STORE_H(i) \
    { \
        float* cr = s->c[i] + col0; \
        if (load) c##i##0 = _mm512_add_ps(c##i##0, _mm512_maskz_loadu_ps(m0, cr)); \
        if (ep != NULL) wb512_epi_regs(&c##i##0, &dummy, ep, s->row[i], col0, bv0, bv1, m0, 0); \
        _mm512_mask_storeu_ps(cr, m0, c##i##0); \
    }
static inline void wb512_micro_da16(ptrdiff_t kcb, const wb512_strip* s, ptrdiff_t aoff, const float* pb,
                                    ptrdiff_t col0, int nr, int load, const float* pf, ptrdiff_t pfs, const wb512_epi* ep,
                                    ptrdiff_t run0, ptrdiff_t chunk, ptrdiff_t jump) {
    __m512 c00 = _mm512_setzero_ps(), c10 = c00, c20 = c00, c30 = c00, c40 = c00, c50 = c00, c60 = c00,
           c70 = c00, c80 = c00, c90 = c00, c100 = c00, c110 = c00;
    __m512 b0, bc, dummy = c00, bv0 = c00, bv1 = c00;
    ptrdiff_t kk, l1 = s->lda, l2 = 2 * s->lda, left = run0;
    const float *q0 = s->a[0] + aoff, *q3 = s->a[1] + aoff, *q6 = s->a[2] + aoff, *q9 = s->a[3] + aoff;
    __mmask16 m0 = wb512_mask_lo(nr);
    int i;
    wb512_epi folded;   /* the bias in the sums, as wb512_micro_da */
    const int fold = ep != NULL && !load && ep->bias != NULL && !ep->bias_per_row;
    if (fold) {
        __m512 f0 = _mm512_maskz_loadu_ps(m0, ep->bias + col0);
        c00 = c10 = c20 = c30 = c40 = c50 = c60 = c70 = c80 = c90 = c100 = c110 = f0;
        folded = *ep;
        folded.bias = NULL;
        ep = &folded;
    }
    for (i = 0; i < WB512_MR; i++) {
        if (load) _mm_prefetch((const char*)(s->c[i] + col0), _MM_HINT_T0);
        else __builtin_prefetch(s->c[i] + col0, 1, 3);
        if (ep != NULL && ep->res != NULL)
            _mm_prefetch((const char*)(ep->res + s->row[i] * ep->ld_res + col0), _MM_HINT_T0);
    }
    for (kk = 0; kk < kcb; kk += left, left = chunk) {
        const float* end;
        if (left > kcb - kk) left = kcb - kk;
        _Pragma("GCC unroll 2")
        for (end = q0 + left; q0 < end;) {
            b0 = _mm512_loadu_ps(pb);
            _mm_prefetch((const char*)(pb + 8 * WB512_NR), _MM_HINT_T0);
            _mm_prefetch((const char*)pf, _MM_HINT_T1);
            pf += pfs;
            WB512_ROWH(0, q0[0]) WB512_ROWH(1, q0[l1]) WB512_ROWH(2, q0[l2])
            WB512_ROWH(3, q3[0]) WB512_ROWH(4, q3[l1]) WB512_ROWH(5, q3[l2])
            WB512_ROWH(6, q6[0]) WB512_ROWH(7, q6[l1]) WB512_ROWH(8, q6[l2])
            WB512_ROWH(9, q9[0]) WB512_ROWH(10, q9[l1]) WB512_ROWH(11, q9[l2])
            q0++; q3++; q6++; q9++;
            pb += WB512_NR;
        }
        q0 += jump; q3 += jump; q6 += jump; q9 += jump;
    }
    if (ep != NULL && ep->bias != NULL && !ep->bias_per_row) bv0 = _mm512_maskz_loadu_ps(m0, ep->bias + col0);
    WB512_STORE_H(0) WB512_STORE_H(1) WB512_STORE_H(2) WB512_STORE_H(3) WB512_STORE_H(4) WB512_STORE_H(5)
    WB512_STORE_H(6) WB512_STORE_H(7) WB512_STORE_H(8) WB512_STORE_H(9) WB512_STORE_H(10) WB512_STORE_H(11)
}
#undef WB512_ROWH
#undef WB512_STORE_H
#undef WB512_ROWD
#undef WB512_STORE_EPI
#undef WB512_STORE_S
#undef WB512_STORE_TO
#undef WB512_ROW
#undef WB512_STORE
#else
static inline void wb512_micro_pf(ptrdiff_t kcb, const float* pa, const float* pb, float* c, ptrdiff_t ldc,
                                  int mr, int nr, int load, const float* pf) {
    float acc[WB512_MR][WB512_NR];
    ptrdiff_t kk;
    int i, j;
    (void)pf;
    memset(acc, 0, sizeof(acc));
    for (kk = 0; kk < kcb; kk++)
        for (i = 0; i < WB512_MR; i++)
            for (j = 0; j < WB512_NR; j++) acc[i][j] += pa[kk * WB512_MR + i] * pb[kk * WB512_NR + j];
    for (i = 0; i < mr; i++)
        for (j = 0; j < nr; j++) c[i * ldc + j] = (load ? c[i * ldc + j] : 0.0f) + acc[i][j];
}
#endif

#if !WB512_NATIVE
static inline void wb512_micro_da(ptrdiff_t kcb, const wb512_strip* s, ptrdiff_t aoff, const float* pb,
                                  ptrdiff_t col0, int nr, int load, const float* pf, ptrdiff_t pfs, const wb512_epi* ep,
                                  ptrdiff_t run0, ptrdiff_t chunk, ptrdiff_t jump) {
    float acc[WB512_MR][WB512_NR];
    ptrdiff_t kk;
    int i, j;
    (void)pf;
    (void)pfs;
    memset(acc, 0, sizeof(acc));
    ptrdiff_t off = aoff, left = run0;
    for (kk = 0; kk < kcb; kk++) {
        for (i = 0; i < WB512_MR; i++)
            for (j = 0; j < WB512_NR; j++)
                acc[i][j] += s->a[i / 3][(i % 3) * s->lda + off] * pb[kk * WB512_NR + j];
        off++;
        if (--left == 0) {
            off += jump;
            left = chunk;
        }
    }
    for (i = 0; i < WB512_MR; i++) {
        float* cr = s->c[i] + col0;
        for (j = 0; j < nr; j++) cr[j] = (load ? cr[j] : 0.0f) + acc[i][j];
        if (ep != NULL) wb512_epi_block(cr, 0, 1, nr, ep, s->row[i], col0);
    }
}
#endif

#if !WB512_NATIVE
#define wb512_micro_da16 wb512_micro_da
static inline void wb512_micro4(ptrdiff_t kcb, const float* pa, const float* pb, float* c, ptrdiff_t ldc,
                                int mr, int nr, int load) {
    wb512_micro_pf(kcb, pa, pb, c, ldc, mr, nr, load, pb);
}
#endif

#if !WB512_NATIVE
static inline void wb512_micro1(ptrdiff_t kcb, const float* a, const float* pb, float* c, int nr, int load,
                                const float* pf) {
    float acc[WB512_NR];
    ptrdiff_t kk;
    int j;
    (void)pf;
    memset(acc, 0, sizeof(acc));
    for (kk = 0; kk < kcb; kk++)
        for (j = 0; j < WB512_NR; j++) acc[j] += a[kk] * pb[kk * WB512_NR + j];
    for (j = 0; j < nr; j++) c[j] = (load ? c[j] : 0.0f) + acc[j];
}
#endif

#endif
