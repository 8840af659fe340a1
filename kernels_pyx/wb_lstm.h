/* An LSTM direction's whole recurrence in one call: every step's h @ R^T, its gates and states,
 * with no return to Python between steps.
 *
 * Batch 1 makes each step a matrix-vector product that reads the whole recurrent matrix (4H x H)
 * once, each weight for one multiply-add: the step is bound by the bandwidth of wherever R lives
 * and by the vector unit's rate alike.  R is packed in blocks of WBL_UNITS hidden units, each
 * holding the four gates' columns of those units (4 x WBL_UNITS = WBL_NB columns) for every k,
 * contiguous ([block][k][WBL_NB] float32, or [block][k/2][WBL_NB][2] bfloat16 pairs for
 * VDPBF16PS).  A block's product is followed at once by its units' gates and states, so that a
 * thread that computes a block finishes its units: the threads of a step share nothing but h,
 * which each step reads whole (double-buffered: a step reads one copy and writes the other).
 *
 * Two ways to use the threads: one direction per thread (wbl_run), with nothing to wait for
 * between steps but each core streaming all of its direction's R, or each step's blocks split
 * over the threads (wbl_run_split), each core keeping the same share of R in its own L2 step
 * after step, at the price of a pool job per step.  Steps alternate the order of the blocks on
 * one thread, so that the blocks a step read last, the ones still in L2 where R is a little larger
 * than it, are the next step's first.
 *
 * The gate pre-activations are in ONNX's i, o, f, c order; xw[s] = x[s] W^T + Wb + Rb is
 * computed beforehand, rows of 4H.
 *
 * A GRU (linear_before_reset = 1, as PyTorch and Keras export it) and an RNN (tanh) run on the
 * same blocks with 3 and 1 gates a unit: the GRU's z, r, h columns (xw holding x W^T + Wb, and Rb
 * for z and r; Rb's h rows, which r scales with the product, apart in rb), h' = (1 - z) n + z h
 * with n = tanh(xw_h + r (h R_h^T + Rb_h)); the RNN's h' = tanh(xw + h R^T).  Float32 weights
 * only. */
#ifndef WB_LSTM_H
#define WB_LSTM_H

#include <stddef.h>
#include <stdint.h>

#include "wb_bf16.h"
#include "wb_pool.h"
#include "wb_vmath.h"

#define WBL_UNITS 32                /* hidden units per packed block */
#define WBL_NB (4 * WBL_UNITS)      /* gate columns per block: 8 vectors of 16 */
#define WBL_SIGMOID 6               /* wb_vmath.h's codes */
#define WBL_TANH 8
#define WBL_LSTM 0                  /* the cell kinds */
#define WBL_GRU 1
#define WBL_RNN 2

typedef struct {
    const void* r;        /* packed R^T: float32, or bfloat16 pairs where bf16 */
    const float* xw;      /* (seq, batch, 4H) */
    float* hf;            /* (2, batch, hpad) the state h, double-buffered */
    uint16_t* hb;         /* (2, batch, hpad) the same rounded to bfloat16 (bf16 only) */
    float* h;             /* (batch, H): the initial state in, the last out */
    float* c;             /* (batch, H), updated in place */
    float* y;             /* NULL, or the output's rows: y + s * ys0 + b * ys1 */
    ptrdiff_t ys0, ys1;
    ptrdiff_t seq, batch, hid;
    int reverse, bf16;
    int kind;             /* WBL_LSTM, WBL_GRU or WBL_RNN */
    const float* rb;      /* GRU: Rb's h rows (H) */
} wbl_dir;

/* Gate columns a hidden unit has. */
static inline int wbl_gates(int kind) { return kind == WBL_LSTM ? 4 : kind == WBL_GRU ? 3 : 1; }

static inline ptrdiff_t wbl_blocks(ptrdiff_t hid) { return (hid + WBL_UNITS - 1) / WBL_UNITS; }
static inline ptrdiff_t wbl_hpad(ptrdiff_t hid) { return wbl_blocks(hid) * WBL_UNITS; }
static inline ptrdiff_t wbl_pairs(ptrdiff_t hid) { return (hid + 1) / 2; }

/* Whether this build has the vector kernels (the others take the scalar loops below). */
static inline int wbl_native(int bf16) { return bf16 ? WBB_NATIVE : WB512_NATIVE; }

#if WB512_NATIVE
/* acc[16 nv] = h @ the block's float32 columns w ([k][16 nv]); nv a constant where inlined. */
static inline __attribute__((always_inline)) void wbl_f32_cols(const float* w, const float* hf, ptrdiff_t H,
                                                               float* acc, const int nv) {
    __m512 a[WBL_NB / 16];
    for (int u = 0; u < nv; u++) a[u] = _mm512_setzero_ps();
    for (ptrdiff_t k = 0; k < H; k++, w += 16 * nv) {
        __m512 hk = _mm512_set1_ps(hf[k]);
        for (int u = 0; u < nv; u++) a[u] = _mm512_fmadd_ps(hk, _mm512_loadu_ps(w + 16 * u), a[u]);
    }
    for (int u = 0; u < nv; u++) _mm512_storeu_ps(acc + 16 * u, a[u]);
}
#endif

/* acc[gates x WBL_UNITS] = h[b] @ R^T over block blk's columns. */
static inline void wbl_product(const wbl_dir* d, ptrdiff_t blk, const float* hf, const uint16_t* hb, float* acc) {
    const ptrdiff_t H = d->hid;
    if (!d->bf16) {   /* float32: 4, 3 or 1 gates */
        const ptrdiff_t nb = wbl_gates(d->kind) * WBL_UNITS;
        const float* w = (const float*)d->r + blk * H * nb;
#if WB512_NATIVE
        if (nb == WBL_NB) wbl_f32_cols(w, hf, H, acc, WBL_NB / 16);
        else if (nb == 3 * WBL_UNITS) wbl_f32_cols(w, hf, H, acc, 3 * WBL_UNITS / 16);
        else wbl_f32_cols(w, hf, H, acc, WBL_UNITS / 16);
#else
        for (ptrdiff_t j = 0; j < nb; j++) {
            float s = 0.f;
            for (ptrdiff_t k = 0; k < H; k++) s += hf[k] * w[k * nb + j];
            acc[j] = s;
        }
#endif
        return;
    }
    /* bfloat16 pairs (LSTM only) */
    const ptrdiff_t kp = wbl_pairs(H);
    const uint16_t* w = (const uint16_t*)d->r + blk * kp * WBL_NB * 2;
#if WBB_NATIVE
    const uint32_t* hp = (const uint32_t*)hb;
    __m512 a[WBL_NB / 16];
    for (int u = 0; u < WBL_NB / 16; u++) a[u] = _mm512_setzero_ps();
    for (ptrdiff_t k = 0; k < kp; k++, w += 2 * WBL_NB) {
        __m512bh hk = (__m512bh)_mm512_set1_epi32((int)hp[k]);
        for (int u = 0; u < WBL_NB / 16; u++)
            a[u] = _mm512_dpbf16_ps(a[u], hk, (__m512bh)_mm512_loadu_si512(w + 32 * u));
    }
    for (int u = 0; u < WBL_NB / 16; u++) _mm512_storeu_ps(acc + 16 * u, a[u]);
#else
    for (ptrdiff_t j = 0; j < WBL_NB; j++) {
        float s = 0.f;
        for (ptrdiff_t k = 0; k < 2 * kp; k++) s += wbb_widen(hb[k]) * wbb_widen(w[(k / 2) * 2 * WBL_NB + 2 * j + k % 2]);
        acc[j] = s;
    }
#endif
}

/* wbl_block for a GRU or an RNN. */
static void wbl_block_gru_rnn(const wbl_dir* d, ptrdiff_t blk, ptrdiff_t step, ptrdiff_t s) {
    const ptrdiff_t H = d->hid, hp = wbl_hpad(H), u0 = blk * WBL_UNITS, G = wbl_gates(d->kind);
    const ptrdiff_t n = H - u0 < WBL_UNITS ? H - u0 : WBL_UNITS;
    const ptrdiff_t cur = (step & 1) * d->batch * hp, nxt = d->batch * hp - cur;
    float g[WBL_NB], t[WBL_UNITS];
    for (ptrdiff_t b = 0; b < d->batch; b++) {
        const float* xw = d->xw + (s * d->batch + b) * G * H + u0;
        const float* hc = d->hf + cur + b * hp + u0;
        float* hn = d->hf + nxt + b * hp + u0;
        wbl_product(d, blk, d->hf + cur + b * hp, d->hb + cur + b * hp, g);
        if (d->kind == WBL_RNN) {
            for (ptrdiff_t j = 0; j < n; j++) t[j] = g[j] + xw[j];
            wbm_map(WBL_TANH, t, hn, n);
        } else {
            for (int q = 0; q < 2; q++)
                for (ptrdiff_t j = 0; j < n; j++) g[q * WBL_UNITS + j] += xw[q * H + j];
            wbm_map(WBL_SIGMOID, g, g, 2 * WBL_UNITS);                 /* z, r */
            for (ptrdiff_t j = 0; j < n; j++)
                t[j] = xw[2 * H + j] + g[WBL_UNITS + j] * (g[2 * WBL_UNITS + j] + d->rb[u0 + j]);
            wbm_map(WBL_TANH, t, t, n);
            for (ptrdiff_t j = 0; j < n; j++) hn[j] = (1.f - g[j]) * t[j] + g[j] * hc[j];
        }
        if (d->y) {
            float* yr = d->y + s * d->ys0 + b * d->ys1 + u0;
            for (ptrdiff_t j = 0; j < n; j++) yr[j] = hn[j];
        }
    }
}

/* Block blk of step `step` (the output's row s), every batch row: its units' gates, c, and h
 * written to the other copy of the state (and to y[s]). */
static void wbl_block(const wbl_dir* d, ptrdiff_t blk, ptrdiff_t step, ptrdiff_t s) {
    if (d->kind != WBL_LSTM) {
        wbl_block_gru_rnn(d, blk, step, s);
        return;
    }
    const ptrdiff_t H = d->hid, hp = wbl_hpad(H), u0 = blk * WBL_UNITS;
    const ptrdiff_t n = H - u0 < WBL_UNITS ? H - u0 : WBL_UNITS;
    const ptrdiff_t cur = (step & 1) * d->batch * hp, nxt = d->batch * hp - cur;
    float g[WBL_NB], t[WBL_UNITS];
    for (ptrdiff_t b = 0; b < d->batch; b++) {
        const float* xw = d->xw + (s * d->batch + b) * 4 * H + u0;
        float *c = d->c + b * H + u0, *hn = d->hf + nxt + b * hp + u0;
        wbl_product(d, blk, d->hf + cur + b * hp, d->hb + cur + b * hp, g);
        for (int q = 0; q < 4; q++)
            for (ptrdiff_t j = 0; j < n; j++) g[q * WBL_UNITS + j] += xw[q * H + j];
        wbm_map(WBL_SIGMOID, g, g, 3 * WBL_UNITS);                 /* i, o, f */
        wbm_map(WBL_TANH, g + 3 * WBL_UNITS, g + 3 * WBL_UNITS, WBL_UNITS);   /* c~ */
        for (ptrdiff_t j = 0; j < n; j++) c[j] = g[2 * WBL_UNITS + j] * c[j] + g[j] * g[3 * WBL_UNITS + j];
        wbm_map(WBL_TANH, c, t, n);
        for (ptrdiff_t j = 0; j < n; j++) hn[j] = g[WBL_UNITS + j] * t[j];
        if (d->bf16) wbb_narrow(hn, d->hb + nxt + b * hp + u0, n);
        if (d->y) {
            float* yr = d->y + s * d->ys0 + b * d->ys1 + u0;
            for (ptrdiff_t j = 0; j < n; j++) yr[j] = hn[j];
        }
    }
}

static inline ptrdiff_t wbl_step(const wbl_dir* d, ptrdiff_t step) {
    return d->reverse ? d->seq - 1 - step : step;
}

/* The state's first copy from h (the padding zero), and h from the copy the last step wrote. */
static void wbl_begin(const wbl_dir* d) {
    const ptrdiff_t H = d->hid, hp = wbl_hpad(H);
    for (ptrdiff_t i = 0; i < 2 * d->batch * hp; i++) {
        d->hf[i] = 0.f;
        if (d->bf16) d->hb[i] = 0;
    }
    for (ptrdiff_t b = 0; b < d->batch; b++) {
        for (ptrdiff_t j = 0; j < H; j++) d->hf[b * hp + j] = d->h[b * H + j];
        if (d->bf16) wbb_narrow(d->hf + b * hp, d->hb + b * hp, H);
    }
}

static void wbl_end(const wbl_dir* d) {
    const ptrdiff_t H = d->hid, hp = wbl_hpad(H), last = (d->seq & 1) * d->batch * hp;
    for (ptrdiff_t b = 0; b < d->batch; b++)
        for (ptrdiff_t j = 0; j < H; j++) d->h[b * H + j] = d->hf[last + b * hp + j];
}

/* Every step of one direction on the calling thread. */
static void wbl_run(const wbl_dir* d) {
    const ptrdiff_t nblk = wbl_blocks(d->hid);
    wbl_begin(d);
    for (ptrdiff_t step = 0; step < d->seq; step++)
        for (ptrdiff_t i = 0; i < nblk; i++)
            wbl_block(d, step & 1 ? nblk - 1 - i : i, step, wbl_step(d, step));
    wbl_end(d);
}

typedef struct {
    const wbl_dir* d;
    ptrdiff_t step, nblk, parts;
} wbl_job;

static void wbl_part_chunk(void* ctx, Py_ssize_t part, int slot) {
    const wbl_job* job = (const wbl_job*)ctx;
    const ptrdiff_t s = wbl_step(job->d, job->step);
    (void)slot;
    for (ptrdiff_t b = part * job->nblk / job->parts; b < (part + 1) * job->nblk / job->parts; b++)
        wbl_block(job->d, b, job->step, s);
}

/* Every step of one direction, each step's blocks split into nt contiguous runs, one per pool
 * thread: the pool gives each thread the same run step after step (a late thread's run is taken
 * whole by another). */
static void wbl_run_split(const wbl_dir* d, int nt) {
    const ptrdiff_t nblk = wbl_blocks(d->hid);
    wbl_job job = {d, 0, nblk, nt < nblk ? nt : nblk};
    wbl_begin(d);
    for (job.step = 0; job.step < d->seq; job.step++)
        wb_pool_run(wbl_part_chunk, &job, job.parts, nt);
    wbl_end(d);
}

#endif
