/* qint8 GEMM: uint8 activations times int8 weights, exact int32 sums (VPDPBUSD), and a
 * requantizing epilogue.
 *
 * out[m, n] = epilogue((sum_k a[m, k] * w[n, k]) - comp[n])
 *   y = sum * mult[n] + bias[n]
 *   with mid: y = (clamp(rne(y) + zmid, 0, 255) - zmid) * mmid (rounded to an intermediate
 *             tensor's uint8 first, as a pre-quantized model rounds a Conv's output before its add)
 *   y += (res[m, n] - rzp) * rmult (a uint8 residual, its zero point rzp; a float32 one with rzp 0;
 *        none if res is NULL)
 *   y = act(y) in real units (act: epilogue.py's codes 1-6 and 8-11: ReLU, clip, leaky ReLU, hard
 *       sigmoid, hard swish, sigmoid, tanh, SiLU, GELU; amult the output's scale and ainv its
 *       inverse: y is in the output's units, scaled to real values and back), after the residual
 *       or, with act_first, before it (a residual added after the activation)
 *   float32 out: clamp(y, flo, fhi), a NaN kept
 *   uint8 out:   clamp(rne(y) + zo, qlo, qhi)
 * where comp[n] = za * sum_k w[n, k] takes the activations' zero point out (u8 x s8 multiplies
 * raw bytes; NULL: none), mult[n] = s_a * s_w[n] (/ s_out) and bias[n] the bias in output units.
 *
 * Packed weights: 16-column blocks, each ``groups`` groups of 64 bytes (ceil(K/4) rounded up to
 * 16: whole AMX tiles); in a group, column j's four weights k = 4g..4g+3 at bytes 4j..4j+3 (zero
 * past N and K), one VPDPBUSD operand, and 16 groups in a row are an AMX B tile as TDPBUSD
 * reads it.  A row's last group, where K % 4 != 0, is read through a zero-filled copy: no byte
 * past a row is read.  Without AVX512-VNNI the same arithmetic runs in scalar loops (WBQ_NATIVE 0).
 *
 * The amxint8 build runs blocks of 32 rows by 32 columns on AMX tiles (WBQ_AMX): TDPBUSD
 * multiplies a 16 x 64 tile of A by a 64 x 16 tile of B into 16 x 16 int32 sums, 16384
 * multiply-adds where a VPDPBUSD does 64; four C tiles, two of A, two of B.  A's rows are read in
 * place where a block has 16 or 32 rows and the depth fills the tile, else through a
 * zero-filled copy; the sums go through a staging tile to the same epilogue.
 */
#ifndef WB_GEMM_Q8_H
#define WB_GEMM_Q8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <immintrin.h>
#include "wb_vmath.h"

#define WBQ_MR 6     /* rows of a micro-tile */
#define WBQ_NB 2     /* 16-column blocks of a micro-tile */

typedef struct {
    const uint8_t* a; ptrdiff_t lda, K;
    const int8_t* w; ptrdiff_t groups;          /* packed weights, ceil(K/4) groups a block */
    ptrdiff_t N;
    const int32_t* comp; const float* mult; const float* bias;
    const void* res; ptrdiff_t ldr; int res_u8, rzp; float rmult;
    int mid, zmid; float mmid;
    int act, act_first; float ap0, ap1, amult, ainv;   /* the activation in real units (0: none) */
    void* out; ptrdiff_t ldo; int out_u8, zo, qlo, qhi; float flo, fhi;
} wbq_args;

static inline int32_t wbq_a4(const uint8_t* row, ptrdiff_t k, ptrdiff_t K) {
    int32_t v = 0;
    memcpy(&v, row + k, (size_t)(K - k < 4 ? K - k : 4));
    return v;
}

/* act of epilogue.py's codes 3-6 and 8-11 on one real value, as the float32 kernels compute it */
static inline float wbq_act1(int act, float t, float p0, float p1) {
    switch (act) {
    case 1: return t < 0.0f ? 0.0f : t;   /* a NaN kept */
    case 2: return t < p0 ? p0 : (t > p1 ? p1 : t);
    case 3: return t < 0.0f ? t * p0 : t;
    case 4: case 5: {
        float a = act == 4 ? p0 : 1.0f / 6.0f, b = act == 4 ? p1 : 0.5f;
        float h = t * a + b;
        h = h > 0.0f ? h : 0.0f;
        h = h < 1.0f ? h : 1.0f;
        return t != t ? t : (act == 4 ? h : t * h);
    }
    case 6: return wbm_sigmoid(t);
    case 8: return wbm_tanh(t);
    case 9: return wbm_silu(t);
    case 10: return wbm_gelu(t);
    case 11: return wbm_gelu_tanh(t);
    default: return t;
    }
}

static inline void wbq_store(const wbq_args* p, ptrdiff_t m, ptrdiff_t n0, ptrdiff_t cols, const int32_t* sums) {
    for (ptrdiff_t j = 0; j < cols; j++) {
        ptrdiff_t n = n0 + j;
        float y = fmaf((float)(sums[j] - (p->comp ? p->comp[n] : 0)), p->mult[n], p->bias[n]);
        if (p->mid) {
            float r1 = nearbyintf(y) + (float)p->zmid;
            r1 = r1 >= 0.0f ? r1 : 0.0f;   /* a NaN to the low end */
            r1 = r1 > 255.0f ? 255.0f : r1;
            y = (r1 - (float)p->zmid) * p->mmid;
        }
        if (p->act && p->act_first)
            y = wbq_act1(p->act, y * p->amult, p->ap0, p->ap1) * p->ainv;
        if (p->res)
            y = fmaf(p->res_u8 ? (float)((int32_t)((const uint8_t*)p->res)[m * p->ldr + n] - p->rzp)
                               : ((const float*)p->res)[m * p->ldr + n], p->rmult, y);
        if (p->act && !p->act_first)
            y = wbq_act1(p->act, y * p->amult, p->ap0, p->ap1) * p->ainv;
        if (p->out_u8) {
            float r = nearbyintf(y) + (float)p->zo;
            r = r >= (float)p->qlo ? r : (float)p->qlo;   /* a NaN to the low end */
            r = r > (float)p->qhi ? (float)p->qhi : r;
            ((uint8_t*)p->out)[m * p->ldo + n] = (uint8_t)r;
        } else {
            y = y < p->flo ? p->flo : (y > p->fhi ? p->fhi : y);   /* a NaN kept */
            ((float*)p->out)[m * p->ldo + n] = y;
        }
    }
}

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define WBQ_NATIVE 1

/* The epilogue's per-column constants of columns n0..n0+15 (a kernel loading them once for many rows). */
typedef struct {
    __mmask16 k;
    __m512i comp;
    __m512 mult, bias;
} wbq_consts;

static inline wbq_consts wbq_load(const wbq_args* p, ptrdiff_t n0) {
    wbq_consts c;
    ptrdiff_t cols = p->N - n0 < 16 ? p->N - n0 : 16;
    c.k = (__mmask16)((1u << cols) - 1u);
    c.comp = p->comp ? _mm512_maskz_loadu_epi32(c.k, p->comp + n0) : _mm512_setzero_si512();
    c.mult = _mm512_maskz_loadu_ps(c.k, p->mult + n0);
    c.bias = _mm512_maskz_loadu_ps(c.k, p->bias + n0);
    return c;
}

/* wbq_act1 on 16 values: the same operations as the float32 kernels' (sgemm_epi512.h), a NaN kept */
static inline __m512 wbq_act(const wbq_args* p, __m512 y) {
    const __m512 am = _mm512_set1_ps(p->amult), zero = _mm512_setzero_ps();
    __m512 t = _mm512_mul_ps(y, am);
    if (p->act == 1) {
        t = _mm512_max_ps(zero, t);   /* the value second: a NaN kept */
    } else if (p->act == 2) {
        t = _mm512_min_ps(_mm512_set1_ps(p->ap1), _mm512_max_ps(_mm512_set1_ps(p->ap0), t));
    } else if (p->act == 3) {
        t = _mm512_mask_mul_ps(t, _mm512_cmp_ps_mask(t, zero, _CMP_LT_OQ), t, _mm512_set1_ps(p->ap0));
    } else if (p->act == 4 || p->act == 5) {
        __m512 a = _mm512_set1_ps(p->act == 4 ? p->ap0 : 1.0f / 6.0f), b = _mm512_set1_ps(p->act == 4 ? p->ap1 : 0.5f);
        __m512 h = _mm512_min_ps(_mm512_set1_ps(1.0f), _mm512_max_ps(zero, _mm512_fmadd_ps(t, a, b)));
        t = p->act == 4 ? h : _mm512_mul_ps(t, h);
    } else {
        t = wbm512_act(p->act, t);
    }
    return _mm512_mul_ps(t, _mm512_set1_ps(p->ainv));
}

static inline void wbq_finish(const wbq_args* p, ptrdiff_t m, ptrdiff_t n0, __m512i acc, const wbq_consts* c) {
    const __mmask16 k = c->k;
    __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, c->comp)), c->mult, c->bias);
    if (p->mid) {
        y = _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(-1e9f)), _mm512_set1_ps(1e9f));
        __m512i q1 = _mm512_add_epi32(_mm512_cvtps_epi32(y), _mm512_set1_epi32(p->zmid));
        q1 = _mm512_min_epi32(_mm512_max_epi32(q1, _mm512_setzero_si512()), _mm512_set1_epi32(255));
        y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q1, _mm512_set1_epi32(p->zmid))), _mm512_set1_ps(p->mmid));
    }
    if (p->act && p->act_first)
        y = wbq_act(p, y);
    if (p->res) {
        __m512 r = p->res_u8
            ? _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, (const uint8_t*)p->res + m * p->ldr + n0)),
                                                  _mm512_set1_epi32(p->rzp)))
            : _mm512_maskz_loadu_ps(k, (const float*)p->res + m * p->ldr + n0);
        y = _mm512_fmadd_ps(r, _mm512_set1_ps(p->rmult), y);
    }
    if (p->act && !p->act_first)
        y = wbq_act(p, y);
    if (p->out_u8) {
        /* bounded first (a NaN to the low end): a float past int32 converts to INT_MIN */
        y = _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(-1e9f)), _mm512_set1_ps(1e9f));
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(y), _mm512_set1_epi32(p->zo));   /* MXCSR: to nearest even */
        q = _mm512_max_epi32(q, _mm512_set1_epi32(p->qlo));
        q = _mm512_min_epi32(q, _mm512_set1_epi32(p->qhi));
        _mm_mask_storeu_epi8((uint8_t*)p->out + m * p->ldo + n0, k, _mm512_cvtepi32_epi8(q));
    } else {
        /* max/min return their second operand where one is a NaN: y's NaN is kept */
        y = _mm512_min_ps(_mm512_set1_ps(p->fhi), _mm512_max_ps(_mm512_set1_ps(p->flo), y));
        _mm512_mask_storeu_ps((float*)p->out + m * p->ldo + n0, k, y);
    }
}

static inline void wbq_epilogue(const wbq_args* p, ptrdiff_t m, ptrdiff_t n0, __m512i acc) {
    wbq_consts c = wbq_load(p, n0);
    wbq_finish(p, m, n0, acc, &c);
}

#if defined(__AMX_INT8__) && defined(__AMX_TILE__)
#define WBQ_AMX 1
#include "wb_amx.h"

/* One job on tiles: rows m0..m1 against column blocks b0..b1. */
static void wbq_job_amx(const wbq_args* p, ptrdiff_t m0_, ptrdiff_t m1, ptrdiff_t b0_, ptrdiff_t b1) {
    uint8_t abuf[32 * 64] __attribute__((aligned(64)));
    int32_t stage[32 * 32] __attribute__((aligned(64)));
    const ptrdiff_t K = p->K, G = p->groups;
    wba_configure();
    for (ptrdiff_t b0 = b0_; b0 < b1; b0 += 2) {
        const int wide = b1 - b0 >= 2;
        const int8_t* w = p->w + b0 * G * 64;
        for (ptrdiff_t m0 = m0_; m0 < m1; m0 += 32) {
            const int mr = m1 - m0 < 32 ? (int)(m1 - m0) : 32;
            const int two = mr > 16, height = two ? 32 : 16, in_place = mr == height;
            const uint8_t* a = p->a + m0 * p->lda;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (ptrdiff_t k0 = 0; k0 < K; k0 += 64) {
                _tile_loadd(6, w + k0 / 4 * 64, 64);
                if (wide)
                    _tile_loadd(7, w + (G + k0 / 4) * 64, 64);
                if (in_place && k0 + 64 <= K) {
                    _tile_loadd(4, a + k0, p->lda);
                    if (two)
                        _tile_loadd(5, a + 16 * p->lda + k0, p->lda);
                } else {
                    const int kt = K - k0 < 64 ? (int)(K - k0) : 64;
                    const __mmask64 m = kt >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << kt) - 1);
                    for (int i = 0; i < height; i++)
                        _mm512_store_si512(abuf + 64 * i, i < mr ? _mm512_maskz_loadu_epi8(m, a + i * p->lda + k0)
                                                                 : _mm512_setzero_si512());
                    _tile_loadd(4, abuf, 64);
                    if (two)
                        _tile_loadd(5, abuf + 16 * 64, 64);
                }
                _tile_dpbusd(0, 4, 6);
                if (wide)
                    _tile_dpbusd(1, 4, 7);
                if (two) {
                    _tile_dpbusd(2, 5, 6);
                    if (wide)
                        _tile_dpbusd(3, 5, 7);
                }
            }
            wba_store(stage, two, wide);
            for (int c = 0; c <= wide && (b0 + c) * 16 < p->N; c++) {
                const wbq_consts k = wbq_load(p, (b0 + c) * 16);
                for (int r = 0; r < mr; r++)
                    wbq_finish(p, m0 + r, (b0 + c) * 16, _mm512_load_si512((const void*)(stage + 32 * r + 16 * c)), &k);
            }
        }
    }
    _tile_release();
}
static int wbq_permit(void) { return wba_permit(); }
#else
#define WBQ_AMX 0
static int wbq_permit(void) { return 0; }
#endif

/* Rows m0..m0+MR, column blocks b0..b0+NBK: the fixed-size micro-tile the compiler keeps in
 * registers (MR and NBK are constants at each call site). */
static inline __attribute__((always_inline)) void wbq_tile(const wbq_args* p, ptrdiff_t m0, ptrdiff_t b0,
                                                            const int MR, const int NBK) {
    __m512i acc[WBQ_MR][WBQ_NB];
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NBK; c++) acc[r][c] = _mm512_setzero_si512();
    const int8_t* w = p->w + b0 * p->groups * 64;
    ptrdiff_t full = p->K / 4, g;
    for (g = 0; g < full; g++) {
        __m512i b[WBQ_NB];
        for (int c = 0; c < NBK; c++) b[c] = _mm512_load_si512((const void*)(w + (c * p->groups + g) * 64));
        for (int r = 0; r < MR; r++) {
            int32_t v;
            memcpy(&v, p->a + (m0 + r) * p->lda + 4 * g, 4);
            __m512i av = _mm512_set1_epi32(v);
            for (int c = 0; c < NBK; c++) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], av, b[c]);
        }
    }
    if (full * 4 < p->K) {
        __m512i b[WBQ_NB];
        for (int c = 0; c < NBK; c++) b[c] = _mm512_load_si512((const void*)(w + (c * p->groups + g) * 64));
        for (int r = 0; r < MR; r++) {
            __m512i av = _mm512_set1_epi32(wbq_a4(p->a + (m0 + r) * p->lda, 4 * g, p->K));
            for (int c = 0; c < NBK; c++) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], av, b[c]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int c = 0; c < NBK; c++) wbq_epilogue(p, m0 + r, (b0 + c) * 16, acc[r][c]);
}

#define WBQ_ROWS(NBK)                                                                    \
    switch (rows) {                                                                      \
        case 6: wbq_tile(p, m0, b0, 6, NBK); break;                                      \
        case 5: wbq_tile(p, m0, b0, 5, NBK); break;                                      \
        case 4: wbq_tile(p, m0, b0, 4, NBK); break;                                      \
        case 3: wbq_tile(p, m0, b0, 3, NBK); break;                                      \
        case 2: wbq_tile(p, m0, b0, 2, NBK); break;                                      \
        default: wbq_tile(p, m0, b0, 1, NBK); break;                                     \
    }

/* One job: rows m0..m1 against column blocks b0..b1. */
static void wbq_job(const wbq_args* p, ptrdiff_t m0_, ptrdiff_t m1, ptrdiff_t b0_, ptrdiff_t b1) {
#if WBQ_AMX
    wbq_job_amx(p, m0_, m1, b0_, b1);
    return;
#endif
    for (ptrdiff_t b0 = b0_; b0 < b1; b0 += WBQ_NB) {
        int nbk = b1 - b0 < WBQ_NB ? (int)(b1 - b0) : WBQ_NB;
        for (ptrdiff_t m0 = m0_; m0 < m1; m0 += WBQ_MR) {
            int rows = m1 - m0 < WBQ_MR ? (int)(m1 - m0) : WBQ_MR;
            if (nbk == 2) { WBQ_ROWS(2) } else { WBQ_ROWS(1) }
        }
    }
}

#else
#define WBQ_NATIVE 0
#define WBQ_AMX 0
static int wbq_permit(void) { return 0; }

static void wbq_job(const wbq_args* p, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t b0, ptrdiff_t b1) {
    int32_t sums[16];
    for (ptrdiff_t b = b0; b < b1; b++) {
        const int8_t* w = p->w + b * p->groups * 64;
        ptrdiff_t n0 = b * 16, cols = p->N - n0 < 16 ? p->N - n0 : 16;
        for (ptrdiff_t m = m0; m < m1; m++) {
            const uint8_t* row = p->a + m * p->lda;
            for (ptrdiff_t j = 0; j < cols; j++) {
                int32_t s = 0;
                for (ptrdiff_t k = 0; k < p->K; k++)
                    s += (int32_t)row[k] * (int32_t)w[(k / 4) * 64 + 4 * j + (k % 4)];
                sums[j] = s;
            }
            wbq_store(p, m, n0, cols, sums);
        }
    }
}
#endif

/* Weights (N, K) int8 into dst (ceil(N/16) * groups * 64 bytes, zeroed by the caller). */
static void wbq_pack(const int8_t* w, ptrdiff_t N, ptrdiff_t K, ptrdiff_t groups, int8_t* dst) {
    for (ptrdiff_t n = 0; n < N; n++)
        for (ptrdiff_t k = 0; k < K; k++)
            dst[((n / 16) * groups + k / 4) * 64 + (n % 16) * 4 + k % 4] = w[n * K + k];
}

#endif
