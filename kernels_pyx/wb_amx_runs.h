/* Implicit-GEMM NHWC convolution on AMX tiles for channel counts that are not a multiple of 32
 * (the ``_amx`` build of gemm_bf16.pyx; wb_implicit_bf16.h's wba_implicit_block takes the others).
 *
 * Per-tap tiles would leave most of each tile's 32 depth idle on 12 or 24 channels.  With no
 * dilation across, a kernel row's KW taps lie side by side in the image, one run of R = KW * C
 * words a pixel, and the packed depth (kernel row, kernel column, channel) holds them in that
 * order: a kernel row is R / 32 whole tiles of depth and a tail of R % 32 (R even, so that no
 * pair of depth crosses a kernel row).  A tile reads 16 pixels' runs in place, SW * C words
 * apart.  The tail tiles are configured to the tail's width, so no tile reads a word its weights
 * do not multiply: a NaN past a run would reach every product through the zero weights.
 *
 * The image is read where it lies, its borders implied: a kernel row outside the image is
 * skipped, and a tile holding a pixel whose window leaves its row, or whose rows could read past
 * the image's end, is first copied (with zeros for the border) into a buffer, one kernel row at a
 * time.  Only the pixels at a row's ends take that copy, where a zero-bordered copy of the whole
 * image read and wrote every pixel once more: on 320 x 320 maps of 12 or 24 channels that copy
 * was the layer's largest cost.
 *
 * A narrow panel (16 columns or fewer) takes two tiles of pixels at a time, a wide one one tile
 * of pixels on both halves of the panel.  Blocks of pixels never cross an output row. */
#ifndef WB_AMX_RUNS_H
#define WB_AMX_RUNS_H

#include "wb_gemm_bf16.h"

/* Longest run (KW * C words) this form takes: its copy buffers live on the stack. */
#define WBA_RUN_MAX 1024

/* The image the tiles read: the input itself, borders implied, or a zero-bordered copy. */
typedef struct {
    const uint16_t* x;
    ptrdiff_t h, w, pt, pl;   /* its rows and columns, and the borders not in it */
    ptrdiff_t words;          /* words a tile may read from x */
} wba_image;

/* Whether wba_runs_block takes this convolution. */
static inline int wba_runs_apply(const wbb_geo* g) {
    ptrdiff_t run = g->kw * g->c;
    return g->c % 32 != 0 && g->dw == 1 && run % 2 == 0 && run <= WBA_RUN_MAX;
}

#if WBB_AMX
/* One run of pixels of an output row as a tile reads them. */
typedef struct {
    ptrdiff_t b, oy, ox;
    int rows;       /* pixels (a tile loads 16 rows; the others' sums are never stored) */
    int ka, kb;     /* the kernel rows inside the image */
    int copy;       /* read from the copy buffer, not in place */
} wba_run;

/* The run starting at output pixel `at`, ending by i1. */
static inline void wba_next_run(const wbb_geo* g, const wba_image* im, ptrdiff_t at, ptrdiff_t i1, wba_run* r) {
    ptrdiff_t plane = g->oh * g->ow, lim, lo, hi, iy;
    r->b = at / plane;
    r->oy = at % plane / g->ow;
    r->ox = at % g->ow;
    lim = g->ow - r->ox;
    if (i1 - at < lim) lim = i1 - at;
    if (lim > 16) lim = 16;
    /* pixels whose window lies inside the row: ox * sw - pl in [0, w - kw] */
    lo = (im->pl + g->sw - 1) / g->sw;
    hi = im->w + im->pl - g->kw >= 0 ? (im->w + im->pl - g->kw) / g->sw + 1 : 0;
    if (hi < lo) hi = lo;
    if (r->ox < lo) {
        r->copy = 1;
        if (lo - r->ox < lim) lim = lo - r->ox;
    } else if (r->ox < hi) {
        r->copy = 0;
        if (hi - r->ox < lim) lim = hi - r->ox;
    } else {
        r->copy = 1;
    }
    r->rows = (int)lim;
    r->ka = 0;
    r->kb = g->kh;
    iy = r->oy * g->sh - im->pt;
    while (r->ka < g->kh && iy + r->ka * g->dh < 0) r->ka++;
    while (r->kb > r->ka && iy + (r->kb - 1) * g->dh >= im->h) r->kb--;
    if (!r->copy && r->kb > r->ka) {
        ptrdiff_t last = ((r->b * im->h + iy + (r->kb - 1) * g->dh) * im->w + r->ox * g->sw - im->pl) * g->c;
        if (last + 15 * g->sw * g->c + g->kw * g->c > im->words)
            r->copy = 1;
    }
}

/* Where run r's kernel row ki starts for its first pixel, and the words from one pixel to the
 * next: in place, or copied into buf (R words a pixel, zeros in the border; the rows past the
 * run's pixels keep what they held). */
static inline const uint16_t* wba_run_rows(const wbb_geo* g, const wba_image* im, const wba_run* r, int ki,
                                           uint16_t* buf, ptrdiff_t* step) {
    const ptrdiff_t c = g->c, run = g->kw * c, iy = r->oy * g->sh - im->pt + ki * g->dh;
    const uint16_t* row = im->x + (r->b * im->h + iy) * im->w * c;
    if (!r->copy) {
        *step = g->sw * c;
        return row + (r->ox * g->sw - im->pl) * c;
    }
    for (int p = 0; p < r->rows; p++) {   /* rows past r->rows only give sums never stored */
        uint16_t* dst = buf + p * run;
        ptrdiff_t ix = (r->ox + p) * g->sw - im->pl;
        if (ix >= 0 && ix + g->kw <= im->w) {
            memcpy(dst, row + ix * c, (size_t)run * 2);
            continue;
        }
        for (int kj = 0; kj < g->kw; kj++, ix++, dst += c)
            if (ix >= 0 && ix < im->w)
                memcpy(dst, row + ix * c, (size_t)c * 2);
            else
                memset(dst, 0, (size_t)c * 2);
    }
    *step = run;
    return buf;
}

/* Tiles, tail depth t (even, < 32; 0: none): 0, 1 the sums; 2, 4 an A and a B tile of 32 depth;
 * 3, 5 the same for the tail, A tile 3 reading t words a row and B tile 5 t / 2 pair rows; 6, 7 a
 * second A (narrow panels) or B (wide) for each depth. */
static inline void wba_configure_runs(int t, int wide) {
    wba_tilecfg cfg;
    int tt = t > 0 ? t : 32;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.rows[i] = 16;
        cfg.colsb[i] = 64;
    }
    cfg.colsb[3] = (uint16_t)(2 * tt);
    cfg.rows[5] = (uint8_t)(tt / 2);
    if (wide)
        cfg.rows[7] = (uint8_t)(tt / 2);
    else
        cfg.colsb[7] = (uint16_t)(2 * tt);
    _tile_loadconfig(&cfg);
}

/* One depth step q: A tile TA and B tile TB of the step's shape, TX the second A (narrow panels)
 * or B (wide) of that shape.  Tile numbers are immediates, hence a macro. */
#define WBA_RUN_STEP(TA, TB, TX, q)                          \
    do {                                                     \
        _tile_loadd(TB, b, 4 * WBB_NR);                      \
        if (use0) {                                          \
            _tile_loadd(TA, a0 + 32 * (q), s0 * 2);          \
            _tile_dpbf16ps(0, TA, TB);                       \
            if (wide) {                                      \
                _tile_loadd(TX, b + 32, 4 * WBB_NR);         \
                _tile_dpbf16ps(1, TA, TX);                   \
            }                                                \
        }                                                    \
        if (use1) {                                          \
            _tile_loadd(TX, a1 + 32 * (q), s1 * 2);          \
            _tile_dpbf16ps(1, TX, TB);                       \
        }                                                    \
    } while (0)

/* Output pixels i0..i1-1 (of n * oh * ow), panels p0..p1-1 of the n output channels (weights pb
 * packed as for conv_im2col), from image im; c out (pixels ldc elements apart) bfloat16 or float32. */
static void wba_runs_block(const wbb_geo* g, const wba_image* im, ptrdiff_t n, const uint16_t* pb, void* c,
                           ptrdiff_t ldc, int f32, const wbb_epi* ep, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t p0,
                           ptrdiff_t p1) {
    float stage[32 * 32] __attribute__((aligned(64)));
    const ptrdiff_t run = g->kw * g->c, full = run / 32, tail = run % 32;
    uint16_t buf[2][16 * WBA_RUN_MAX] __attribute__((aligned(64)));
    ptrdiff_t panel_words = wbb_depth_pad(g->kh * run) * WBB_NR, p, i;
    int configured = -1;
    if (i1 <= i0 || p1 <= p0)
        return;
    for (p = p0; p < p1; p++) {
        ptrdiff_t col0 = p * WBB_NR;
        int nr = (int)(n - col0 < WBB_NR ? n - col0 : WBB_NR), wide = nr > 16;
        const uint16_t* bp = pb + p * panel_words;
        if (configured != wide) {
            wba_configure_runs((int)tail, wide);
            configured = wide;
        }
        for (i = i0; i < i1;) {
            wba_run r[2];
            wba_next_run(g, im, i, i1, &r[0]);
            const int two = !wide && i + r[0].rows < i1;
            if (two)
                wba_next_run(g, im, i + r[0].rows, i1, &r[1]);
            const int ka = two && r[1].ka < r[0].ka ? r[1].ka : r[0].ka;
            const int kb = two && r[1].kb > r[0].kb ? r[1].kb : r[0].kb;
            _tile_zero(0);
            _tile_zero(1);
            for (int ki = ka; ki < kb; ki++) {
                const int use0 = ki >= r[0].ka && ki < r[0].kb, use1 = two && ki >= r[1].ka && ki < r[1].kb;
                ptrdiff_t s0 = 0, s1 = 0;
                const uint16_t* a0 = use0 ? wba_run_rows(g, im, &r[0], ki, buf[0], &s0) : NULL;
                const uint16_t* a1 = use1 ? wba_run_rows(g, im, &r[1], ki, buf[1], &s1) : NULL;
                const uint16_t* b = bp + ki * run * WBB_NR;   /* depth d is at d * WBB_NR words */
                for (ptrdiff_t q = 0; q <= full; q++, b += 32 * WBB_NR) {
                    if (q == full && tail == 0)
                        break;
                    if (q < full)
                        WBA_RUN_STEP(2, 4, 6, q);
                    else
                        WBA_RUN_STEP(3, 5, 7, q);
                }
            }
            _tile_stored(0, stage, 128);
            if (wide || two)
                _tile_stored(1, wide ? stage + 16 : stage + 16 * 32, 128);
            wba_finish_rows(stage, 0, r[0].rows, wide, c, ldc, f32, nr, ep, i, col0);
            if (two)
                wba_finish_rows(stage, 16, r[1].rows, wide, c, ldc, f32, nr, ep, i + r[0].rows, col0);
            i += r[0].rows + (two ? r[1].rows : 0);
        }
    }
    _tile_release();
}

/* wba_runs_block on the input x itself (n, h, w, c) bfloat16, its borders implied. */
static inline void wbi_runs(const wbb_geo* g, const uint16_t* x, ptrdiff_t n, const uint16_t* pb, void* c,
                            ptrdiff_t ldc, int f32, const wbb_epi* ep, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t p0,
                            ptrdiff_t p1) {
    wba_image im = {x, g->h, g->w, g->pt, g->pl, g->n * g->h * g->w * g->c};
    wba_runs_block(g, &im, n, pb, c, ldc, f32, ep, i0, i1, p0, p1);
}
#else
/* Without AMX, conv_implicit never reads the image in place with padding. */
static inline void wbi_runs(const wbb_geo* g, const uint16_t* x, ptrdiff_t n, const uint16_t* pb, void* c,
                            ptrdiff_t ldc, int f32, const wbb_epi* ep, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t p0,
                            ptrdiff_t p1) {
    (void)g; (void)x; (void)n; (void)pb; (void)c; (void)ldc; (void)f32; (void)ep; (void)i0; (void)i1; (void)p0;
    (void)p1;
}
#endif

#endif
