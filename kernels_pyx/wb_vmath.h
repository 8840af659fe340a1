/* Vectorisable float32 exp, erf, tanh, sigmoid, SiLU and GELU: no libm calls, no branches.
 *
 * Every function is straight-line code whose only conditions are selects between values both
 * computed, so GCC vectorises a loop over them for whatever ISA the file is compiled for (the
 * eltwise kernels build as baseline, AVX2 and AVX-512 variants).  The polynomials were fitted
 * in float64 and checked evaluated in float32 against float64 references (relative error
 * <= 2e-7 on normal results, GELU's 6e-7; the tests check 1e-6).
 *
 * NaN propagates (each select keeps the input where a comparison with NaN is false); +-Inf give
 * the limits ONNX Runtime gives (exp(-inf) = 0, erf(+-inf) = +-1, silu(-inf) = -inf * 0 = NaN,
 * as Sigmoid followed by Mul computes it).  exp overflows to inf and underflows through the
 * denormals to 0: 2^n is applied as two factors, each a normal float.
 */
#ifndef WB_VMATH_H
#define WB_VMATH_H

#include <stddef.h>
#include <stdint.h>

#include "wb_vmath512.h"

/* The selects below are if-converted into blends only when comparisons may not trap (they do not:
 * the default FP environment masks every exception). */
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

typedef union { float f; int32_t i; uint32_t u; } wbm_bits;

static inline float wbm_copysign(float mag, float sign) {
    wbm_bits m, s;
    m.f = mag;
    s.f = sign;
    m.u = (m.u & 0x7fffffffu) | (s.u & 0x80000000u);
    return m.f;
}

static inline float wbm_abs(float x) {
    wbm_bits b;
    b.f = x;
    b.u &= 0x7fffffffu;
    return b.f;
}

/* Cephes' expf polynomial: p(r) 2^n for r in [-ln2/2, ln2/2], 2^n applied as two factors, each
 * a normal float, so that the result overflows to inf and underflows through the denormals. */
static inline float wbm_exp_scaled(float r, float n) {
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t n1 = ni >> 1;
    wbm_bits s1, s2;
    s1.u = (uint32_t)(n1 + 127) << 23;
    s2.u = (uint32_t)(ni - n1 + 127) << 23;
    return p * s1.f * s2.f;
}

/* n rounded by the 1.5 * 2^23 trick; ln 2 in two parts, the first exact times any such n. */
static inline float wbm_exp(float x) {
    float c = x < -104.0f ? -104.0f : x;
    c = c > 89.0f ? 89.0f : c;
    float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = c - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    return wbm_exp_scaled(r, n);
}

static inline float wbm_sigmoid(float x) {
    /* exp of -|x| only: 1 / (1 + e) or e / (1 + e), never inf / inf */
    float e = wbm_exp(-wbm_abs(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

#define WBM_ERF_T 0.921875f

/* erf(t) - t for 0 <= t <= WBM_ERF_T, as t * P(t^2) */
static inline float wbm_erf_small(float t) {
    float s = t * t;
    float p = -6.024636e-4f;
    p = p * s + 5.0009014e-3f;
    p = p * s - 2.67729607e-2f;
    p = p * s + 1.128203926e-1f;
    p = p * s - 3.761252409e-1f;
    p = p * s + 1.283791593e-1f;
    return t * p;
}

/* erfc(t) for WBM_ERF_T <= t <= 4 as exp(Q(t)), Q fitted to log(erfc); 0 past 4, where erfc < 1.6e-8
 * and float32 1 - erf is 0 already (what ONNX Runtime's Erf-spelled GELU gives there). */
static inline float wbm_erfc_tail(float t) {
    float u = (t > 4.0f ? 4.0f : t) - WBM_ERF_T;
    float q = 1.6131019042e-06f;
    q = q * u - 3.3674558233e-05f;
    q = q * u + 3.3691037749e-04f;
    q = q * u - 2.2041221588e-03f;
    q = q * u + 1.090294118e-02f;
    q = q * u - 4.4847135468e-02f;
    q = q * u - 8.329843795e-01f;
    q = q * u - 2.5080128463f;
    q = q * u - 1.6485618909f;
    float e = wbm_exp(q);
    return t > 4.0f ? 0.0f : e;
}

static inline float wbm_erf(float x) {
    float t = wbm_abs(x);
    float small = t + wbm_erf_small(t);
    float big = 1.0f - wbm_erfc_tail(t);
    return wbm_copysign(t <= WBM_ERF_T ? small : big, x);
}

/* Phi(-a) = 0.5 erfc(a / sqrt 2) for 0 <= a <= 16, as exp(-a^2 / 2) S(u): S, a polynomial in
 * u = 1 / (1 + 0.282 a), fitted to 0.5 erfcx(a / sqrt 2) on [0, 5.75] (relative error 2e-7),
 * where GELU is down to 1e-8; a^2 is split into an exact head and a tail (Dekker), so that exp's
 * argument carries no rounding of its own.  One exp and one polynomial, where going through erf
 * computes both of its branches. */
static inline float wbm_phi_neg(float a) {
    wbm_bits b;
    b.f = a;
    b.u &= 0xfffff000u;
    float ah = b.f, al = a - ah;
    float hh = ah * ah, lo = (ah + ah) * al + al * al;
    float n = (hh * -0.72134752044448170f + 12582912.0f) - 12582912.0f;
    float r = (-0.5f * hh - n * 0.693359375f) + n * 2.12194440e-4f;
    float e = wbm_exp_scaled(r - 0.5f * lo, n);
    float u = 1.0f / ((a > 5.75f ? 5.75f : a) * 0.282f + 1.0f);
    float s = -1.1039561778e-01f;
    s = s * u + 4.0274375677e-01f;
    s = s * u - 2.6874804497e-01f;
    s = s * u + 3.0869683623e-01f;
    s = s * u + 4.3553214520e-02f;
    s = s * u + 1.2512616813e-01f;
    s = s * u - 9.7638875013e-04f;
    return e * s;
}

/* x Phi(x), Phi(x) = 1 - Phi(-x) on the positive side (no cancellation on the negative one);
 * |x| clamped to 16, where Phi(-16) is 0 in float32 already (NaN passes the clamp) */
static inline float wbm_gelu(float x) {
    float a = wbm_abs(x);
    float c = wbm_phi_neg(a > 16.0f ? 16.0f : a);
    return x * (x >= 0.0f ? 1.0f - c : c);
}

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) */
static inline float wbm_gelu_tanh(float x) {
    float u2 = 1.5957691216057308f * (x + 0.044715f * x * x * x);
    return x * wbm_sigmoid(u2);
}

static inline float wbm_silu(float x) {
    return x * wbm_sigmoid(x);
}

#define WBM_TANH_T 0.625f

static inline float wbm_tanh(float x) {
    float a = wbm_abs(x);
    float s = a * a;
    float p = -5.7189789e-3f;
    p = p * s + 2.06531408e-2f;
    p = p * s - 5.37446636e-2f;
    p = p * s + 1.333151275e-1f;
    p = p * s - 3.333328522e-1f;
    float small = a + a * s * p;
    float big = 1.0f - 2.0f / (wbm_exp(2.0f * a) + 1.0f);
    return wbm_copysign(a < WBM_TANH_T ? small : big, x);
}

/* Codes shared with _epilogue.pxd / eltwise.pyx. */
enum { WBM_SIGMOID = 6, WBM_TANH = 8, WBM_SILU = 9, WBM_GELU = 10, WBM_GELU_TANH = 11, WBM_ERF = 12,
       WBM_EXP = 13 };

/* y[i] = f(x[i]) for the function named by code; 0 on success, -1 for an unknown code.
 * One loop per function so that each vectorises. x may be y. */
static inline int wbm_map(int code, const float* x, float* y, ptrdiff_t n) {
    ptrdiff_t i;
#if defined(__AVX512F__)
    if (wbm512_has(code)) {
        wbm512_map(code, x, y, n);
        return 0;
    }
#endif
    switch (code) {
    case WBM_SIGMOID: for (i = 0; i < n; i++) y[i] = wbm_sigmoid(x[i]); break;
    case WBM_TANH: for (i = 0; i < n; i++) y[i] = wbm_tanh(x[i]); break;
    case WBM_SILU: for (i = 0; i < n; i++) y[i] = wbm_silu(x[i]); break;
    case WBM_GELU: for (i = 0; i < n; i++) y[i] = wbm_gelu(x[i]); break;
    case WBM_GELU_TANH: for (i = 0; i < n; i++) y[i] = wbm_gelu_tanh(x[i]); break;
    case WBM_ERF: for (i = 0; i < n; i++) y[i] = wbm_erf(x[i]); break;
    case WBM_EXP: for (i = 0; i < n; i++) y[i] = wbm_exp(x[i]); break;
    default: return -1;
    }
    return 0;
}

#pragma GCC pop_options

#endif
