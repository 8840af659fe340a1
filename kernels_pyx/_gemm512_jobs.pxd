# Parallel jobs over our AVX-512 SGEMM (sgemm_avx512.h), for kernels_pyx/gemm512.pyx and the
# convolutions on it (conv_im2col512.pyx, conv_shuffle512.pyx): the (row tile, column tile) job
# scheduler with its fused epilogue, B packing split over threads, and the im2col convolution
# jobs (per pixel tile, or everything gathered first for small outputs).  All inline and nogil;
# the Python-visible entry points that check shapes stay in those modules.  Parallel loops run on the shared pool (wb_pool.h): chunks, each thread starting
# on its own contiguous range (so a thread keeps the same output pixels from layer to layer),
# and the caller never waiting for a thread that took no work.
from _wb512_epi cimport wb512_epi, wb512_epi_handles
from conv_gemm cimport Epi, Geo, _cols_nchw_row, _cols_nhwc_pixel, _epilogue, _imin


cdef extern from "sgemm_avx512.h" nogil:
    int WB512_NATIVE
    int WB512_MR
    int WB512_NR
    Py_ssize_t wb512_packed_b_floats(Py_ssize_t k, Py_ssize_t n)
    Py_ssize_t wb512_abuf_floats()
    void wb512_pack_b(Py_ssize_t k, Py_ssize_t n, const float* b, Py_ssize_t ldb, int trans_b, float* dst,
                      Py_ssize_t p0, Py_ssize_t p1)
    void wb512_gemm_direct(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* a, Py_ssize_t lda,
                           const float* pb, float* c, Py_ssize_t ldc, int accumulate, float* abuf,
                           Py_ssize_t j0, Py_ssize_t j1, const wb512_epi* ep)


# Job tile: rows a multiple of the micro-kernel's 12 and of the A block (144); columns a
# multiple of the 32-column panel, B block (256 x 512 floats) and C block both fit in L2.
cdef enum:
    TILE_M = 144
    TILE_N = 512
    ROW_SPLIT_STRIPS = 8   # strips of 12 rows a thread needs before threads split C by rows


from wb_pool cimport wb_pool_run


cdef struct Job:
    Py_ssize_t m, n, k, lda, ldc, ld_res
    Py_ssize_t rparts, cparts   # C's partition into (row part, column part) chunks, set by gemm_jobs
    const float* a
    const float* pb
    float* c
    int accumulate
    int channel_is_row   # 0: channels index columns (NHWC), 1: rows (NCHW), -1: no epilogue
    const Epi* e
    const float* res     # residual of this C, same layout, leading dimension ld_res


cdef inline bint _fused_epi(wb512_epi* ep, const Epi* e, const float* res, Py_ssize_t ld_res,
                            bint channel_is_row, Py_ssize_t row0) noexcept nogil:
    """Fill ``ep`` for :c:func:`wb512_gemm_direct` to apply ``e`` (with residual ``res``) block by
    block, for C starting at row ``row0``; False when ``e`` has an activation it does not handle
    (those run as a separate pass, :c:func:`_epilogue`)."""
    if not wb512_epi_handles(e.act):
        return False
    ep.bias = e.bias + row0 if e.bias != NULL and channel_is_row else e.bias
    ep.bias_per_row = channel_is_row
    ep.res = res + row0 * ld_res if res != NULL else NULL
    ep.ld_res, ep.act, ep.p0, ep.p1 = ld_res, e.act, e.p0, e.p1
    ep.post_scale = e.post_scale + row0 if e.post_scale != NULL and channel_is_row else e.post_scale
    ep.post_shift = e.post_shift + row0 if e.post_shift != NULL and channel_is_row else e.post_shift
    ep.res_post = e.res_post
    return True


cdef inline void _block(const Job* j, float* abuf, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0,
                       Py_ssize_t j1) noexcept nogil:
    """Rows i0..i1-1, columns j0..j1-1 of C, epilogue included."""
    cdef const Epi* e = j.e
    cdef float* o = j.c + i0 * j.ldc + j0
    cdef wb512_epi ep
    cdef bint plain = j.channel_is_row < 0 or e == NULL or (e.bias == NULL and j.res == NULL and e.act == 0
                                                            and e.post_scale == NULL)
    if not plain and _fused_epi(&ep, e, j.res, j.ld_res, j.channel_is_row == 1, i0):
        wb512_gemm_direct(i1 - i0, j.n, j.k, j.a + i0 * j.lda, j.lda, j.pb, j.c + i0 * j.ldc, j.ldc,
                          j.accumulate, abuf, j0, j1, &ep)
        return
    wb512_gemm_direct(i1 - i0, j.n, j.k, j.a + i0 * j.lda, j.lda, j.pb, j.c + i0 * j.ldc, j.ldc,
                      j.accumulate, abuf, j0, j1, NULL)
    if plain:
        return
    if j.channel_is_row:
        _epilogue(o, i1 - i0, j1 - j0, j.ldc, True, e.bias + i0 if e.bias != NULL else NULL,
                  j.res + i0 * j.ld_res + j0 if j.res != NULL else NULL, j.ld_res, e,
                  e.slope + i0 if e.slope != NULL else NULL)
    else:
        _epilogue(o, i1 - i0, j1 - j0, j.ldc, False, e.bias + j0 if e.bias != NULL else NULL,
                  j.res + i0 * j.ld_res + j0 if j.res != NULL else NULL, j.ld_res, e,
                  e.slope + j0 if e.slope != NULL else NULL)


cdef inline void _rows(const Job* j, float* abuf, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0..r1-1 of C, all columns, in TILE_M x TILE_N blocks."""
    _area(j, abuf, r0, r1, 0, j.n)


cdef inline void _area(const Job* j, float* abuf, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0,
                       Py_ssize_t c1) noexcept nogil:
    """Rows r0..r1-1, columns c0..c1-1 of C in TILE_M x TILE_N blocks."""
    cdef Py_ssize_t i0 = r0, j0
    while i0 < r1:
        j0 = c0
        while j0 < c1:
            _block(j, abuf, i0, _imin(i0 + TILE_M, r1), j0, _imin(j0 + TILE_N, c1))
            j0 += TILE_N
        i0 += TILE_M


cdef inline Py_ssize_t _cut(Py_ssize_t i, Py_ssize_t parts, Py_ssize_t units, Py_ssize_t size,
                            Py_ssize_t total) noexcept nogil:
    """Start of part ``i`` of ``parts`` near-equal runs of ``units`` units of ``size`` (the
    last unit may be short: ``total`` in all)."""
    return _imin(i * units // parts * size, total)


cdef inline void _part(const Job* j, float* abuf, Py_ssize_t t) noexcept nogil:
    """Chunk ``t`` of C: row part ``t // cparts``, column part ``t % cparts``."""
    cdef Py_ssize_t ri = t // j.cparts, ci = t % j.cparts
    cdef Py_ssize_t strips = (j.m + WB512_MR - 1) // WB512_MR, panels = (j.n + WB512_NR - 1) // WB512_NR
    _area(j, abuf, _cut(ri, j.rparts, strips, WB512_MR, j.m), _cut(ri + 1, j.rparts, strips, WB512_MR, j.m),
          _cut(ci, j.cparts, panels, WB512_NR, j.n), _cut(ci + 1, j.cparts, panels, WB512_NR, j.n))


cdef inline bint split_rows(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, int nt) noexcept nogil:
    """Whether ``nt`` threads split an (m x k) @ (k x n) product by contiguous ranges of C's rows:
    with ROW_SPLIT_STRIPS strips of 12 rows a thread, and B no bigger than A and C together
    (every thread streams all of B; a bigger one is better split by columns, each thread
    streaming its share: ResNet-50's 14x14 512->1024 downsample, 2 MB of weights)."""
    return nt > 1 and (m + WB512_MR - 1) // WB512_MR >= ROW_SPLIT_STRIPS * nt and k * n <= (k + n) * m


cdef inline void gemm_jobs(Job* j, float* abufs, int nt) noexcept nogil:
    """All of ``j`` (B already packed); ``abufs`` holds ``nt`` A buffers, one per thread.

    C is cut into near-equal row parts (whole strips of 12) times column parts (whole panels of
    32), so that every thread's share is the same work: fixed-size tiles left one thread a third
    more or twice as much (480 rows in 144-row tiles: 288 against 192; 160 columns as 128 + 32).
    Where :c:func:`split_rows` says so, the parts are rows only, at most TILE_M each and a
    multiple of ``nt`` of them: each thread starts on a contiguous range of C's rows, which in a
    convolution are output pixels, and the next layer's thread then finds most of its input in its
    own L2, written there by the same core (a row-to-thread map that changes from layer to layer
    makes every read a cross-core transfer).  Otherwise :c:func:`_choose_parts` weighs balance
    against streaming B once per row part."""
    cdef _JobsCtx c
    cdef Py_ssize_t strips = (j.m + WB512_MR - 1) // WB512_MR, per = TILE_M // WB512_MR
    c.j, c.abufs, c.per = j, abufs, wb512_abuf_floats()
    if nt <= 1:
        j.rparts, j.cparts = 1, 1
    elif split_rows(j.m, j.n, j.k, nt):
        j.rparts, j.cparts = nt * ((strips + nt * per - 1) // (nt * per)), 1
    else:
        _choose_parts(j, nt)
    wb_pool_run(_part_chunk, &c, j.rparts * j.cparts, nt)


cdef enum:
    MAX_PARTS = 16   # row or column parts tried by _choose_parts


cdef extern from * nogil:
    """
    /* (m, n, nt) -> (row parts, column parts) chosen by _choose_parts, one 64-bit word an entry
     * (m and n 24 bits each, nt 6, parts 4 + 4) so that threads racing on an entry read either
     * a whole old one or a whole new one. */
    static uint64_t wb_parts_cache[256];
    static inline uint64_t wb_parts_get(int i) { return __atomic_load_n(&wb_parts_cache[i & 255], __ATOMIC_RELAXED); }
    static inline void wb_parts_put(int i, uint64_t v) { __atomic_store_n(&wb_parts_cache[i & 255], v, __ATOMIC_RELAXED); }
    """
    unsigned long long wb_parts_get(int i)
    void wb_parts_put(int i, unsigned long long v)


cdef inline double _units(Py_ssize_t s0, Py_ssize_t s1, Py_ssize_t strips, Py_ssize_t m) noexcept nogil:
    """Micro-kernel work of strips s0..s1-1 of ``m`` rows: a last strip of at most 4 rows runs the
    4-row kernel, a third of the cost."""
    cdef double u = <double>(s1 - s0)
    if s1 == strips and m - (strips - 1) * WB512_MR <= 4:
        u -= 2.0 / 3.0
    return u


cdef inline void _choose_parts(Job* j, int nt) noexcept nogil:
    """Row parts x column parts whose busiest thread has least to do (tile cost: strip x panel
    products plus streaming its panels of B once, B_STREAM a panel, and its strips of A once,
    A_STREAM a strip; tiles dealt to threads in contiguous ranges as the pool does).  Among those
    within BALANCE_SLACK of the best, the one nearest 4 tiles a thread: chunks to take over from a
    thread that another process holds up.  Remembered per shape (the search takes microseconds,
    as long as a small layer's product)."""
    cdef unsigned long long key = 0, v
    cdef int slot = <int>((j.m * 31 + j.n * 7 + nt) & 255)
    if j.m < (1 << 24) and j.n < (1 << 24) and nt < 64:
        key = <unsigned long long>j.m | (<unsigned long long>j.n << 24) | (<unsigned long long>nt << 48)
        v = wb_parts_get(slot)
        if v != 0 and (v & ((1ULL << 54) - 1)) == key:
            j.rparts, j.cparts = <Py_ssize_t>((v >> 54) & 15) + 1, <Py_ssize_t>((v >> 58) & 15) + 1
            return
    cdef Py_ssize_t strips = (j.m + WB512_MR - 1) // WB512_MR, panels = (j.n + WB512_NR - 1) // WB512_NR
    cdef Py_ssize_t R, C, t, t1, tiles, s, ri, ci, far, best_far = 1 << 30
    cdef Py_ssize_t nr = _imin(strips, MAX_PARTS), nc = _imin(panels, MAX_PARTS)
    cdef double worst[MAX_PARTS][MAX_PARTS]
    cdef double u[MAX_PARTS]
    cdef double p[MAX_PARTS]
    cdef double best = 1e300, load
    cdef double B_STREAM = 0.3, A_STREAM = 0.3, BALANCE_SLACK = 1.04
    for R in range(1, nr + 1):
        for ri in range(R):
            u[ri] = _units(ri * strips // R, (ri + 1) * strips // R, strips, j.m)
        for C in range(1, nc + 1):
            for ci in range(C):
                p[ci] = <double>((ci + 1) * panels // C - ci * panels // C)
            tiles = R * C
            worst[R - 1][C - 1] = 0.0
            for s in range(nt):
                load, t, t1 = 0.0, tiles * s // nt, tiles * (s + 1) // nt
                ri, ci = t // C, t % C
                while t < t1:
                    load += u[ri] * p[ci] + B_STREAM * p[ci] + A_STREAM * u[ri]
                    t += 1
                    ci += 1
                    if ci == C:
                        ci, ri = 0, ri + 1
                if load > worst[R - 1][C - 1]:
                    worst[R - 1][C - 1] = load
            if worst[R - 1][C - 1] < best:
                best = worst[R - 1][C - 1]
    j.rparts, j.cparts = 1, 1
    for R in range(1, nr + 1):
        for C in range(1, nc + 1):
            if worst[R - 1][C - 1] <= BALANCE_SLACK * best:
                far = R * C - 4 * nt if R * C >= 4 * nt else 4 * nt - R * C
                if far < best_far:
                    best_far, j.rparts, j.cparts = far, R, C
    if key:
        wb_parts_put(slot, key | (<unsigned long long>(j.rparts - 1) << 54) | (<unsigned long long>(j.cparts - 1) << 58))


cdef struct _JobsCtx:
    Job* j
    float* abufs
    Py_ssize_t per


cdef inline void _part_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _JobsCtx* c = <_JobsCtx*> ctx
    _part(c.j, c.abufs + slot * c.per, i)


cdef inline void pack_b_par(Py_ssize_t k, Py_ssize_t n, const float* b, Py_ssize_t ldb, int trans_b, float* dst,
                     int nt) noexcept nogil:
    """:c:func:`wb512_pack_b` over all panels, split between ``nt`` threads."""
    cdef _PackCtx c
    c.k, c.n, c.b, c.ldb, c.trans_b, c.dst = k, n, b, ldb, trans_b, dst
    wb_pool_run(_pack_chunk, &c, (n + WB512_NR - 1) // WB512_NR, nt)


cdef struct _PackCtx:
    Py_ssize_t k, n, ldb
    const float* b
    int trans_b
    float* dst


cdef inline void _pack_chunk(void* ctx, Py_ssize_t p, int slot) noexcept nogil:
    cdef _PackCtx* c = <_PackCtx*> ctx
    wb512_pack_b(c.k, c.n, c.b, c.ldb, c.trans_b, c.dst, p, p + 1)


# --- im2col convolutions (group 1) -------------------------------------------------------------
# A job is one tile of output pixels: gather its im2col columns into this thread's buffer,
# multiply, apply the epilogue.  NHWC tiles span the batch (rows of x @ W^T); NCHW tiles are one
# image's pixels, whose columns are the GEMM's B and so are packed after the gather.

cdef enum:
    IM2COL_ROWS = 144     # NHWC pixels per job: one A block
    IM2COL_PIXELS = 128   # NCHW pixels per job: four B panels


cdef inline void _gather_run(const Geo* g, const float* x, const float* pw, float* out, const Epi* e,
                             float* cols, float* abuf, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    """Output pixels q0..q1-1 (consecutive, at most IM2COL_ROWS) by gather, then our SGEMM."""
    cdef Py_ssize_t q
    cdef wb512_epi ep
    for q in range(q0, q1):
        _cols_nhwc_pixel(g, x, cols + (q - q0) * g.kg, q, 0)
    wb512_gemm_direct(q1 - q0, g.m, g.kg, cols, g.kg, pw, out + q0 * g.ldo, g.ldo, 0, abuf, 0, g.m,
                      &ep if _fused_epi(&ep, e, e.res, g.m, False, q0) else NULL)


cdef inline void im2col_nhwc_pixels(const Geo* g, const float* x, const float* pw, float* out, const Epi* e,
                                    float* cols, float* abuf, Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    """Output pixels p0..p1-1 (over the batch) of an NHWC im2col convolution, IM2COL_ROWS at a time."""
    cdef Py_ssize_t q0 = p0, q1
    while q0 < p1:
        q1 = _imin(q0 + IM2COL_ROWS, p1)
        _gather_run(g, x, pw, out, e, cols, abuf, q0, q1)
        if not wb512_epi_handles(e.act):
            _epilogue(out + q0 * g.ldo, q1 - q0, g.m, g.ldo, False, e.bias,
                      e.res + q0 * g.m if e.res != NULL else NULL, g.m, e, e.slope)
        q0 = q1


cdef inline void _im2col_nchw_job(const Geo* g, const float* x, const float* w, float* out, const Epi* e,
                           float* cols, float* pb, float* abuf, Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t tiles = (g.p + IM2COL_PIXELS - 1) // IM2COL_PIXELS
    cdef Py_ssize_t nn = t // tiles, p0 = (t % tiles) * IM2COL_PIXELS, p1 = p0 + IM2COL_PIXELS, r
    if p1 > g.p:
        p1 = g.p
    cdef const float* src = x + nn * g.c * g.h * g.w
    for r in range(g.kg):
        _cols_nchw_row(g, src, cols + r * (p1 - p0), r, p0, p1)
    wb512_pack_b(g.kg, p1 - p0, cols, p1 - p0, 0, pb, 0, (p1 - p0 + WB512_NR - 1) // WB512_NR)
    cdef float* o = out + nn * g.m * g.p + p0
    cdef wb512_epi ep
    cdef const float* res = e.res + nn * g.m * g.p + p0 if e.res != NULL else NULL
    if _fused_epi(&ep, e, res, g.p, True, 0):
        wb512_gemm_direct(g.m, p1 - p0, g.kg, w, g.kg, pb, o, g.p, 0, abuf, 0, p1 - p0, &ep)
        return
    wb512_gemm_direct(g.m, p1 - p0, g.kg, w, g.kg, pb, o, g.p, 0, abuf, 0, p1 - p0, NULL)
    if e.bias != NULL or e.res != NULL or e.act != 0:
        _epilogue(o, g.m, p1 - p0, g.p, True, e.bias,
                  e.res + nn * g.m * g.p + p0 if e.res != NULL else NULL, g.p, e, e.slope)


cdef enum:
    GATHER_PIXELS = 32   # NHWC pixels gathered per chunk


cdef struct _GatherCtx:
    const Geo* g
    const float* x
    float* cols


cdef inline void _gather_nhwc_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _GatherCtx* c = <_GatherCtx*> ctx
    cdef Py_ssize_t q
    for q in range(i * GATHER_PIXELS, _imin((i + 1) * GATHER_PIXELS, c.g.n * c.g.p)):
        _cols_nhwc_pixel(c.g, c.x, c.cols + q * c.g.kg, q, 0)


cdef inline void _gather_nchw_chunk(void* ctx, Py_ssize_t r, int slot) noexcept nogil:
    cdef _GatherCtx* c = <_GatherCtx*> ctx
    _cols_nchw_row(c.g, c.x, c.cols + r * c.g.p, r, 0, c.g.p)


cdef inline void _im2col_whole(const Geo* g, bint nhwc, const float* x, const float* w, float* out, const Epi* e,
                        float* cols, float* pb, float* abufs, int nt) noexcept nogil:
    """Gather every column first (in parallel), then one :c:func:`gemm_jobs` over the whole
    output: for small outputs, whose few pixel tiles would leave threads idle; the GEMM's jobs
    split output channels too."""
    cdef Py_ssize_t nn
    cdef Job j
    cdef _GatherCtx c
    c.g, c.x, c.cols = g, x, cols
    j.k, j.accumulate, j.e = g.kg, 0, e
    if nhwc:
        wb_pool_run(_gather_nhwc_chunk, &c, (g.n * g.p + GATHER_PIXELS - 1) // GATHER_PIXELS, nt)
        j.m, j.n, j.lda, j.ldc, j.ld_res = g.n * g.p, g.m, g.kg, g.ldo, g.m
        j.a, j.pb, j.c, j.res, j.channel_is_row = cols, w, out, e.res, 0
        gemm_jobs(&j, abufs, nt)
        return
    j.m, j.n, j.lda, j.ldc, j.ld_res = g.m, g.p, g.kg, g.p, g.p
    j.a, j.pb, j.channel_is_row = w, pb, 1
    for nn in range(g.n):
        c.x = x + nn * g.c * g.h * g.w
        wb_pool_run(_gather_nchw_chunk, &c, g.kg, nt)
        pack_b_par(g.kg, g.p, cols, g.p, 0, pb, nt)
        j.c = out + nn * g.m * g.p
        j.res = e.res + nn * g.m * g.p if e.res != NULL else NULL
        gemm_jobs(&j, abufs, nt)


cdef inline bint _whole(bint nhwc, Py_ssize_t n, Py_ssize_t p, Py_ssize_t kg, Py_ssize_t m, int nt) noexcept nogil:
    """Whether :func:`conv_im2col` (``m`` output channels) gathers everything first (the columns
    fitting in 64 MiB): with threads, when the output is not to be shared out by pixels (NHWC:
    :c:func:`split_rows` says no; NCHW: under 4 pixel tiles a thread).  The GEMM's jobs then
    split output channels too."""
    cdef bint few = not split_rows(n * p, m, kg, nt) if nhwc else \
        n * ((p + IM2COL_PIXELS - 1) // IM2COL_PIXELS) < 4 * nt
    return nt > 1 and few and (n if nhwc else 1) * p * kg <= 16 * 1024 * 1024
