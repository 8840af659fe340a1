/* Elementwise kernels of qint8 (uint8) tensors: 256-entry tables and binary operations.
 *
 * A function of one uint8 tensor has 256 possible inputs, so any unary elementwise layer (an
 * activation, a chain of scalar operations) is a table of its 256 results, requantized to the
 * output's parameters (uint8) or dequantized (float32).  On CPUs with AVX512-VBMI a table of
 * bytes is two VPERMI2B (128 entries each) and a blend on the index's top bit, 64 bytes at a
 * time; elsewhere a byte lookup a byte.
 *
 * A binary operation reads two uint8 tensors of their own parameters (one may be broadcast: a
 * stride 0) and computes in float32 in the output's units, as ONNX Runtime's QLinearAdd does:
 *   add: y = (a - za) * ra + (b - zb) * rb      (ra = sa / so, rb = sb / so; sub: rb negated)
 *   mul: y = (a - za) * (b - zb) * ra           (ra = sa * sb / so)
 * then the activation in real units (act(y * so) / so), and uint8 clamp(rne(y) + zo, qlo, qhi)
 * (a NaN to the low end) or float32 clamp(y, flo, fhi) (so = 1; a NaN kept).
 */
#ifndef WB_ELTWISE_Q8_H
#define WB_ELTWISE_Q8_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include "wb_vmath.h"
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

#define WBE_CHUNK 256   /* elements a binary job computes into its float buffer at a time */

/* ---- tables ---------------------------------------------------------------------------- */

static void wbe_lut_u8_scalar(const uint8_t* x, uint8_t* y, ptrdiff_t n, const uint8_t* t) {
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = t[x[i]];
}

#if defined(__AVX512BW__)
__attribute__((target("avx512vbmi")))
static void wbe_lut_u8_vbmi(const uint8_t* x, uint8_t* y, ptrdiff_t n, const uint8_t* t) {
    const __m512i t0 = _mm512_loadu_si512((const void*)t), t1 = _mm512_loadu_si512((const void*)(t + 64));
    const __m512i t2 = _mm512_loadu_si512((const void*)(t + 128)), t3 = _mm512_loadu_si512((const void*)(t + 192));
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i v = _mm512_loadu_si512((const void*)(x + i));
        __m512i lo = _mm512_permutex2var_epi8(t0, v, t1), hi = _mm512_permutex2var_epi8(t2, v, t3);
        _mm512_storeu_si512((void*)(y + i), _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
    }
    if (i < n) {
        __mmask64 m = ((__mmask64)1 << (n - i)) - 1;
        __m512i v = _mm512_maskz_loadu_epi8(m, x + i);
        __m512i lo = _mm512_permutex2var_epi8(t0, v, t1), hi = _mm512_permutex2var_epi8(t2, v, t3);
        _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
    }
}
#endif

static int wbe_vbmi(void) {
#if defined(__AVX512BW__)
    return __builtin_cpu_supports("avx512vbmi");
#else
    return 0;
#endif
}

/* y[i] = t[x[i]] for n bytes; vbmi: this CPU has AVX512-VBMI (wbe_vbmi) */
static inline void wbe_lut_u8(const uint8_t* x, uint8_t* y, ptrdiff_t n, const uint8_t* t, int vbmi) {
#if defined(__AVX512BW__)
    if (vbmi) {
        wbe_lut_u8_vbmi(x, y, n, t);
        return;
    }
#endif
    (void)vbmi;
    wbe_lut_u8_scalar(x, y, n, t);
}

static inline void wbe_lut_f32(const uint8_t* x, float* y, ptrdiff_t n, const float* t) {
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = t[x[i]];
}

/* ---- binary operations ------------------------------------------------------------------ */

enum { WBE_ADD = 0, WBE_MUL = 1 };

typedef struct {
    const uint8_t* a; const uint8_t* b;
    ptrdiff_t n[3], astr[3], bstr[3];     /* the output's three dimensions, a's and b's strides (bytes; the last 0 or 1) */
    int op; float za, zb, ra, rb;
    int act; float ap0, ap1, amult, ainv;
    void* out; int out_u8; float zo, qlo, qhi, flo, fhi;
} wbe_binary;

/* epilogue.py's codes 3-6 and 8-11 on t[0..n) in the output's units (amult: to real units) */
static inline void wbe_act(float* t, ptrdiff_t n, int act, float p0, float p1, float amult, float ainv) {
    ptrdiff_t i;
    for (i = 0; i < n; i++) t[i] *= amult;
    if (act == 3) {
        for (i = 0; i < n; i++) t[i] = t[i] < 0.0f ? t[i] * p0 : t[i];
    } else if (act == 4 || act == 5) {
        const float a = act == 4 ? p0 : 1.0f / 6.0f, b = act == 4 ? p1 : 0.5f;
        for (i = 0; i < n; i++) {
            float h = t[i] * a + b;
            h = h > 0.0f ? h : 0.0f;
            h = h < 1.0f ? h : 1.0f;
            t[i] = t[i] != t[i] ? t[i] : (act == 4 ? h : t[i] * h);
        }
    } else {
        wbm_map(act, t, t, n);
    }
    for (i = 0; i < n; i++) t[i] *= ainv;
}

/* Elements j0..j1 of row (i0, i1). */
static void wbe_binary_run(const wbe_binary* p, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1) {
    float t[WBE_CHUNK];
    const uint8_t* a = p->a + i0 * p->astr[0] + i1 * p->astr[1];
    const uint8_t* b = p->b + i0 * p->bstr[0] + i1 * p->bstr[1];
    const ptrdiff_t sa = p->astr[2], sb = p->bstr[2];
    const ptrdiff_t row = (i0 * p->n[1] + i1) * p->n[2];
    for (ptrdiff_t c0 = j0; c0 < j1; c0 += WBE_CHUNK) {
        const ptrdiff_t len = j1 - c0 < WBE_CHUNK ? j1 - c0 : WBE_CHUNK;
        const uint8_t* pa = a + c0 * sa;
        const uint8_t* pb = b + c0 * sb;
        ptrdiff_t j;
        if (p->op == WBE_ADD) {
            if (sa && sb) {
                for (j = 0; j < len; j++) t[j] = ((float)pa[j] - p->za) * p->ra + ((float)pb[j] - p->zb) * p->rb;
            } else if (sa) {
                const float vb = ((float)pb[0] - p->zb) * p->rb;
                for (j = 0; j < len; j++) t[j] = ((float)pa[j] - p->za) * p->ra + vb;
            } else {
                const float va = ((float)pa[0] - p->za) * p->ra;
                for (j = 0; j < len; j++) t[j] = va + ((float)pb[j * sb] - p->zb) * p->rb;
            }
        } else {
            if (sa && sb) {
                for (j = 0; j < len; j++) t[j] = ((float)pa[j] - p->za) * ((float)pb[j] - p->zb) * p->ra;
            } else if (sa) {
                const float vb = ((float)pb[0] - p->zb) * p->ra;
                for (j = 0; j < len; j++) t[j] = ((float)pa[j] - p->za) * vb;
            } else {
                const float va = ((float)pa[0] - p->za) * p->ra;
                for (j = 0; j < len; j++) t[j] = va * ((float)pb[j * sb] - p->zb);
            }
        }
        if (p->act)
            wbe_act(t, len, p->act, p->ap0, p->ap1, p->amult, p->ainv);
        if (p->out_u8) {
            uint8_t* o = (uint8_t*)p->out + row + c0;
            for (j = 0; j < len; j++) {
                float r = nearbyintf(t[j]) + p->zo;
                r = r >= p->qlo ? r : p->qlo;   /* a NaN to the low end */
                r = r <= p->qhi ? r : p->qhi;
                o[j] = (uint8_t)r;
            }
        } else {
            float* o = (float*)p->out + row + c0;
            for (j = 0; j < len; j++) {
                float y = t[j];
                o[j] = y < p->flo ? p->flo : (y > p->fhi ? p->fhi : y);   /* a NaN kept */
            }
        }
    }
}

#endif
