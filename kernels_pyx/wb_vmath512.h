/* AVX-512 forms of wb_vmath.h's functions (exp, sigmoid, SiLU, tanh, erf, GELU in both forms),
 * on 16 floats.
 *
 * The polynomials are wb_vmath.h's; what changes is what GCC cannot derive from the scalar
 * source.  2^n is applied by VSCALEFPS, one instruction that is exact through the denormals and
 * gives 0 and inf past them, where the scalar form builds two exponent factors.  The divisions
 * of sigmoid and tanh become a 14-bit reciprocal estimate and one Newton step: a ZMM division
 * occupies the divider for about ten cycles, which made it the largest cost of a SiLU.  The
 * results agree with the scalar forms to within 2 ulp; NaN and +-Inf give what the scalar forms
 * give.
 *
 * They serve wbm_map's loops in AVX-512 builds and the register epilogue of our SGEMM
 * (sgemm_epi512.h), where a SiLU after a convolution is applied before the store.
 */
#ifndef WB_VMATH512_H
#define WB_VMATH512_H

#if defined(__AVX512F__)
#include <immintrin.h>

#define WBM512_AI static inline __attribute__((always_inline))

/* wb_vmath.h's wbm_exp_scaled: p(r) 2^n */
WBM512_AI __m512 wbm512_exp_scaled(__m512 r, __m512 n) {
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.9875691500e-4f), r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

WBM512_AI __m512 wbm512_exp(__m512 x) {
    /* the value second: MAXPS/MINPS return their second operand on NaN */
    __m512 c = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), c);
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    return wbm512_exp_scaled(r, n);
}

/* 1 / d for finite d in [1, 2^30]: the estimate's relative error 2^-14 squared by the step. */
WBM512_AI __m512 wbm512_recip(__m512 d) {
    __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

WBM512_AI __m512 wbm512_sigmoid(__m512 x) {
    /* exp of -|x| only, so 1 + e stays in [1, 2]: 1 / (1 + e) or e / (1 + e) */
    __m512 e = wbm512_exp(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(x)));
    __m512 r = wbm512_recip(_mm512_add_ps(_mm512_set1_ps(1.0f), e));
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);   /* false for NaN: e */
    return _mm512_mul_ps(_mm512_mask_mov_ps(e, pos, _mm512_set1_ps(1.0f)), r);
}

WBM512_AI __m512 wbm512_silu(__m512 x) { return _mm512_mul_ps(x, wbm512_sigmoid(x)); }

/* For the kernels whose products are bfloat16 (half an ulp: 2^-9 relative): 2^t to 1.0e-4
 * relative, a degree-3 minimax polynomial on the fraction, for a third of wbm512_exp's work.
 * The clamp keeps the fraction finite at +-inf (NaN passes: the value second). */
WBM512_AI __m512 wbm512_exp2_lowp(__m512 t) {
    __m512 c = _mm512_min_ps(_mm512_set1_ps(150.0f), _mm512_max_ps(_mm512_set1_ps(-150.0f), t));
    __m512 n = _mm512_roundscale_ps(c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(c, n);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(5.500892922e-2f), f, _mm512_set1_ps(2.422109842e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.932829022e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* 1 / (1 + 2^(-x log2 e)) to 1.7e-4 relative (the reciprocal estimate adds 2^-14): 1 + e is 1
 * or more, and infinite e gives 0. */
WBM512_AI __m512 wbm512_sigmoid_lowp(__m512 x) {
    __m512 e = wbm512_exp2_lowp(_mm512_mul_ps(x, _mm512_set1_ps(-1.44269504088896341f)));
    return _mm512_rcp14_ps(_mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

WBM512_AI __m512 wbm512_silu_lowp(__m512 x) { return _mm512_mul_ps(x, wbm512_sigmoid_lowp(x)); }

/* x Phi(x) to about 2e-4 relative: Phi(-a) = erfc(a / sqrt 2) / 2 by Abramowitz and Stegun's
 * 7.1.26 (1.5e-7 absolute; its coefficients halved here), the reciprocal and 2^x in their
 * low-precision forms.  a = min(16, |x|): NaN passes. */
WBM512_AI __m512 wbm512_gelu_lowp(__m512 x) {
    __m512 a = _mm512_min_ps(_mm512_set1_ps(16.0f), _mm512_abs_ps(x));
    __m512 t = _mm512_rcp14_ps(_mm512_fmadd_ps(a, _mm512_set1_ps(0.2316419f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(0.5307027145f), t, _mm512_set1_ps(-0.7265760135f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.7107068705f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.142248368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.127414796f));
    __m512 e = wbm512_exp2_lowp(_mm512_mul_ps(_mm512_mul_ps(a, a), _mm512_set1_ps(-0.72134752044448170f)));
    __m512 c = _mm512_mul_ps(_mm512_mul_ps(p, t), e);   /* Phi(-a) */
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mul_ps(x, _mm512_mask_sub_ps(c, pos, _mm512_set1_ps(1.0f), c));
}

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u), as wbm512_gelu_tanh, with the low-precision sigmoid. */
WBM512_AI __m512 wbm512_gelu_tanh_lowp(__m512 x) {
    __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    __m512 u2 = _mm512_mul_ps(_mm512_set1_ps(1.5957691216057308f), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
    return _mm512_mul_ps(x, wbm512_sigmoid_lowp(u2));
}


WBM512_AI __m512 wbm512_tanh(__m512 x) {
    __m512 a = _mm512_abs_ps(x), s = _mm512_mul_ps(a, a);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(-5.7189789e-3f), s, _mm512_set1_ps(2.06531408e-2f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-5.37446636e-2f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(1.333151275e-1f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-3.333328522e-1f));
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(a, s), p, a);
    /* 1 - 2 / (exp(2a) + 1); past a = 10 the float result is 1 already, and the clamp keeps the
     * reciprocal's argument finite (NaN passes the clamp) */
    __m512 e = wbm512_exp(_mm512_add_ps(_mm512_min_ps(_mm512_set1_ps(10.0f), a), _mm512_min_ps(_mm512_set1_ps(10.0f), a)));
    __m512 big = _mm512_fnmadd_ps(_mm512_set1_ps(2.0f), wbm512_recip(_mm512_add_ps(e, _mm512_set1_ps(1.0f))),
                                  _mm512_set1_ps(1.0f));
    __mmask16 near0 = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.625f), _CMP_LT_OQ);   /* WBM_TANH_T */
    __m512 t = _mm512_mask_mov_ps(big, near0, small);
    /* copysign(t, x) */
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(t), _mm512_castps_si512(x),
                                                         _mm512_set1_epi32(0x7fffffff), 0xe4));
}

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) */
WBM512_AI __m512 wbm512_gelu_tanh(__m512 x) {
    __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    __m512 u2 = _mm512_mul_ps(_mm512_set1_ps(1.5957691216057308f), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
    return _mm512_mul_ps(x, wbm512_sigmoid(u2));
}

/* erf(t) - t for 0 <= t <= WBM_ERF_T (wbm_erf_small) */
WBM512_AI __m512 wbm512_erf_small(__m512 t) {
    __m512 s = _mm512_mul_ps(t, t);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(-6.024636e-4f), s, _mm512_set1_ps(5.0009014e-3f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-2.67729607e-2f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(1.128203926e-1f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(-3.761252409e-1f));
    p = _mm512_fmadd_ps(p, s, _mm512_set1_ps(1.283791593e-1f));
    return _mm512_mul_ps(t, p);
}

/* erfc(t) for WBM_ERF_T <= t as exp(Q(t)), 0 past 4 (wbm_erfc_tail) */
WBM512_AI __m512 wbm512_erfc_tail(__m512 t) {
    __m512 u = _mm512_sub_ps(_mm512_min_ps(_mm512_set1_ps(4.0f), t), _mm512_set1_ps(0.921875f));
    __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(1.6131019042e-06f), u, _mm512_set1_ps(-3.3674558233e-05f));
    q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(3.3691037749e-04f));
    q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-2.2041221588e-03f));
    q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(1.090294118e-02f));
    q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-4.4847135468e-02f));
    q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-8.329843795e-01f));
    q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-2.5080128463f));
    q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(-1.6485618909f));
    __mmask16 past = _mm512_cmp_ps_mask(t, _mm512_set1_ps(4.0f), _CMP_GT_OQ);
    return _mm512_mask_mov_ps(wbm512_exp(q), past, _mm512_setzero_ps());
}

WBM512_AI __m512 wbm512_erf(__m512 x) {
    __m512 t = _mm512_abs_ps(x);
    __m512 small = _mm512_add_ps(t, wbm512_erf_small(t));
    __m512 big = _mm512_sub_ps(_mm512_set1_ps(1.0f), wbm512_erfc_tail(t));
    __mmask16 near0 = _mm512_cmp_ps_mask(t, _mm512_set1_ps(0.921875f), _CMP_LE_OQ);   /* WBM_ERF_T */
    __m512 e = _mm512_mask_mov_ps(big, near0, small);
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(e), _mm512_castps_si512(x),
                                                         _mm512_set1_epi32(0x7fffffff), 0xe4));
}

/* wbm_phi_neg: Phi(-a) for 0 <= a <= 16, as exp(-a^2 / 2) S(1 / (1 + 0.282 a)); a^2 split
 * exactly by an FMA. */
WBM512_AI __m512 wbm512_phi_neg(__m512 a) {
    __m512 hh = _mm512_mul_ps(a, a);
    __m512 lo = _mm512_fmsub_ps(a, a, hh);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(hh, _mm512_set1_ps(-0.72134752044448170f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(hh, _mm512_set1_ps(-0.5f), _mm512_mul_ps(n, _mm512_set1_ps(-0.693359375f)));
    r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
    __m512 e = wbm512_exp_scaled(_mm512_fmadd_ps(lo, _mm512_set1_ps(-0.5f), r), n);
    __m512 d = _mm512_fmadd_ps(_mm512_min_ps(_mm512_set1_ps(5.75f), a), _mm512_set1_ps(0.282f), _mm512_set1_ps(1.0f));
    __m512 u = wbm512_recip(d);
    __m512 s = _mm512_fmadd_ps(_mm512_set1_ps(-1.1039561778e-01f), u, _mm512_set1_ps(4.0274375677e-01f));
    s = _mm512_fmadd_ps(s, u, _mm512_set1_ps(-2.6874804497e-01f));
    s = _mm512_fmadd_ps(s, u, _mm512_set1_ps(3.0869683623e-01f));
    s = _mm512_fmadd_ps(s, u, _mm512_set1_ps(4.3553214520e-02f));
    s = _mm512_fmadd_ps(s, u, _mm512_set1_ps(1.2512616813e-01f));
    s = _mm512_fmadd_ps(s, u, _mm512_set1_ps(-9.7638875013e-04f));
    return _mm512_mul_ps(e, s);
}

/* x Phi(x) (wbm_gelu) */
WBM512_AI __m512 wbm512_gelu(__m512 x) {
    __m512 c = wbm512_phi_neg(_mm512_min_ps(_mm512_set1_ps(16.0f), _mm512_abs_ps(x)));   /* NaN passes */
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mul_ps(x, _mm512_mask_sub_ps(c, pos, _mm512_set1_ps(1.0f), c));
}

/* Whether wbm512_act computes the function of wb_vmath.h's code (WBM_SIGMOID, WBM_TANH,
 * WBM_SILU, WBM_GELU, WBM_GELU_TANH, WBM_ERF, WBM_EXP). */
static inline int wbm512_has(int code) { return code == 6 || (code >= 8 && code <= 13); }

WBM512_AI __m512 wbm512_act(int code, __m512 v) {
    switch (code) {
    case 6: return wbm512_sigmoid(v);
    case 8: return wbm512_tanh(v);
    case 9: return wbm512_silu(v);
    case 10: return wbm512_gelu(v);
    case 11: return wbm512_gelu_tanh(v);
    case 12: return wbm512_erf(v);
    case 13: return wbm512_exp(v);
    default: return v;
    }
}

/* wbm512_act for the bfloat16 kernels: sigmoid, SiLU and both GELUs in their low-precision forms. */
WBM512_AI __m512 wbm512_act_lowp(int code, __m512 v) {
    switch (code) {
    case 6: return wbm512_sigmoid_lowp(v);
    case 9: return wbm512_silu_lowp(v);
    case 10: return wbm512_gelu_lowp(v);
    case 11: return wbm512_gelu_tanh_lowp(v);
    default: return wbm512_act(code, v);
    }
}

/* y[i] = f(x[i]) for a code wbm512_has; x may be y.  The switch sits outside the loops. */
#define WBM512_LOOP(f)                                                                       \
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, f(_mm512_loadu_ps(x + i)));      \
    if (i < n) {                                                                             \
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);                                      \
        _mm512_mask_storeu_ps(y + i, m, f(_mm512_maskz_loadu_ps(m, x + i)));                 \
    }
static inline void wbm512_map(int code, const float* x, float* y, ptrdiff_t n) {
    ptrdiff_t i;
    switch (code) {
    case 6: WBM512_LOOP(wbm512_sigmoid) break;
    case 8: WBM512_LOOP(wbm512_tanh) break;
    case 9: WBM512_LOOP(wbm512_silu) break;
    case 10: WBM512_LOOP(wbm512_gelu) break;
    case 11: WBM512_LOOP(wbm512_gelu_tanh) break;
    case 12: WBM512_LOOP(wbm512_erf) break;
    case 13: WBM512_LOOP(wbm512_exp) break;
    default: break;
    }
}
#undef WBM512_LOOP

#endif
#endif
