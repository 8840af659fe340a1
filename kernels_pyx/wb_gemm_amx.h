/* The bfloat16 GEMM's blocks on AMX tiles (TDPBF16PS), for the ``_amx`` build of gemm_bf16.pyx.
 *
 * One TDPBF16PS multiplies a 16 x 32 tile of A by a 32 x 16 tile of B into a 16 x 16 float32
 * tile of C: 8192 multiply-adds, where a VDPBF16PS does 32.  B's tile is 16 rows of 16 column
 * pairs, word 2j + e of row q being B(2q + e, j): the rows of a wb_gemm_bf16.h panel, whose pair
 * rows hold 32 columns, are two such tiles side by side, 128 bytes apart row to row.  The AMX
 * build pads each panel's depth to a whole tile with zero weights (WBB_KPAD), so a tile never
 * reads past its panel.
 *
 * A block is 32 rows (two A tiles) by a panel's 32 columns (two B tiles): four C tiles, the
 * eight tile registers all in use.  A's rows are read in place, 16 at a stride of lda; where a
 * block has fewer rows, or the depth ends inside a tile, the rows (and columns) there are first
 * copied into a zero-filled buffer, so nothing past A's rows or row ends is read (a NaN or an
 * infinity there would turn the zero weights' products into NaN).  The C tiles are stored to a
 * float32 staging tile of 32 floats a row, and the epilogue of wb_epi_bf16.h runs on its rows.
 *
 * The tiles need the kernel's permission, asked once a process (wba_permit: Linux 5.16 and up),
 * and a configuration in each thread, loaded at the start of every block run (wba_block) and
 * released at its end, so no thread keeps the tile state between jobs.  TDPBF16PS, like
 * VDPBF16PS, treats denormal inputs as zero and flushes denormal results. */
#ifndef WB_GEMM_AMX_H
#define WB_GEMM_AMX_H

#include "wb_amx.h"

/* Rows 0..rows-1 of A (at a, lda apart), depth k0..k0+kt-1 (kt <= 32), into buf: 32 words a row,
 * zeros past kt and past ``rows`` up to ``height`` rows. */
static inline void wba_copy_a(const uint16_t* a, ptrdiff_t lda, int rows, int height, ptrdiff_t k0, int kt,
                              uint16_t* buf) {
    __mmask32 m = kt >= 32 ? (__mmask32)0xffffffffu : (__mmask32)((1u << kt) - 1u);
    for (int i = 0; i < height; i++)
        _mm512_storeu_si512(buf + 32 * i, i < rows ? _mm512_maskz_loadu_epi16(m, a + i * lda + k0)
                                                   : _mm512_setzero_si512());
}

/* The stage rows of a block (wba_tiles' C) to C: ``rows`` rows from stage row ``from``, the first
 * being output pixel ``pix``. */
static inline void wba_finish_rows(const float* stage, int from, int rows, int wide, void* c, ptrdiff_t ldc, int f32,
                                   int nr, const wbb_epi* ep, ptrdiff_t pix, ptrdiff_t col0) {
    __mmask16 m0 = wb512_mask_lo(nr), m1 = wb512_mask_hi(nr);
    __m512 bv0 = ep->bias != NULL ? _mm512_maskz_loadu_ps(m0, ep->bias + col0) : _mm512_setzero_ps();
    __m512 bv1 = ep->bias != NULL ? _mm512_maskz_loadu_ps(m1, ep->bias + col0 + 16) : _mm512_setzero_ps();
    const int cheap = !wbb_staged(ep);
    for (int i = 0; i < rows; i++) {
        const float* s = stage + 32 * (from + i);
        __m512 v0 = _mm512_load_ps(s), v1 = wide ? _mm512_load_ps(s + 16) : _mm512_setzero_ps();
        void* cr = (char*)c + ((pix + i) * ldc + col0) * (f32 ? 4 : 2);
        if (cheap)
            wbb_finish(v0, v1, ep, pix + i, col0, bv0, bv1, m0, m1, cr, f32, 1);
        else
            wbb_finish(v0, v1, ep, pix + i, col0, bv0, bv1, m0, m1, cr, f32, 0);
    }
}

/* C rows row0..row0+mr-1 (mr <= 32), the 32 columns of panel bp (nr live) at col0; a: A's row row0;
 * c: C (row 0).  abuf: 32 x 32 words; stage: 32 x 32 floats (64-byte aligned). */
static inline void wba_tiles(ptrdiff_t k, const uint16_t* a, ptrdiff_t lda, int mr, const uint16_t* bp, void* c,
                             ptrdiff_t ldc, int f32, int nr, const wbb_epi* ep, ptrdiff_t row0, ptrdiff_t col0,
                             uint16_t* abuf, float* stage) {
    const int two = mr > 16, wide = nr > 16, in_place = mr == (two ? 32 : 16);
    const int height = two ? 32 : 16;
    ptrdiff_t kfull = k / 32 * 32, k0;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (k0 = 0; k0 < k; k0 += 32) {
        const uint16_t* b = bp + k0 * WBB_NR;   /* pair row k0 / 2: 2 * WBB_NR words a pair */
        _tile_loadd(6, b, 4 * WBB_NR);
        if (wide)
            _tile_loadd(7, b + 32, 4 * WBB_NR);
        if (in_place && k0 < kfull) {
            _tile_loadd(4, a + k0, lda * 2);
            if (two)
                _tile_loadd(5, a + 16 * lda + k0, lda * 2);
        } else {
            wba_copy_a(a, lda, mr, height, k0, (int)(k - k0 < 32 ? k - k0 : 32), abuf);
            _tile_loadd(4, abuf, 64);
            if (two)
                _tile_loadd(5, abuf + 16 * 32, 64);
        }
        _tile_dpbf16ps(0, 4, 6);
        if (wide)
            _tile_dpbf16ps(1, 4, 7);
        if (two) {
            _tile_dpbf16ps(2, 5, 6);
            if (wide)
                _tile_dpbf16ps(3, 5, 7);
        }
    }
    wba_store(stage, two, wide);
    wba_finish_rows(stage, 0, mr, wide, c, ldc, f32, nr, ep, row0, col0);
}

/* wbb_block on tiles: rows i0..i1-1 of C, panels p0..p1-1; a points at A's row i0. */
static inline void wba_block(ptrdiff_t n, ptrdiff_t k, const uint16_t* a, ptrdiff_t lda, const uint16_t* pb, void* c,
                             ptrdiff_t ldc, int f32, const wbb_epi* ep, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t p0,
                             ptrdiff_t p1) {
    uint16_t abuf[32 * 32] __attribute__((aligned(64)));
    float stage[32 * 32] __attribute__((aligned(64)));
    ptrdiff_t panel_words = wbb_depth_pad(k) * WBB_NR, p, i;
    if (i1 <= i0 || p1 <= p0)
        return;
    wba_configure();
    for (p = p0; p < p1; p++) {
        ptrdiff_t col0 = p * WBB_NR;
        int nr = (int)(n - col0 < WBB_NR ? n - col0 : WBB_NR);
        const uint16_t* bp = pb + p * panel_words;
        for (i = i0; i < i1; i += 32) {
            int mr = (int)(i1 - i < 32 ? i1 - i : 32);
            wba_tiles(k, a + (i - i0) * lda, lda, mr, bp, c, ldc, f32, nr, ep, i, col0, abuf, stage);
        }
    }
    _tile_release();
}


#endif
