# The global pools of pool.pyx (all inline): mean or max over every pixel, per row of an NCHW
# tensor or per channel block and run of pixels of an NHWC one, on the shared pool.
from _pool_windows cimport _max
from wb_pool cimport wb_jobs_per_chunk, wb_pool_run


cdef enum:
    LANES = 16
    PARTS = 16384   # floats of partial results on the caller's stack (NHWC runs of pixels)


cdef inline float _reduce_row(const float* xr, Py_ssize_t cols, bint is_max) noexcept nogil:
    """Sum or max of a row in LANES independent partial results: without -ffast-math the
    compiler keeps a single running sum/max sequential; separate lanes vectorise (and the sum
    is closer to the reference's pairwise one)."""
    cdef float acc[LANES]
    cdef Py_ssize_t j, l, block, body = cols - cols % LANES
    cdef float v, total
    for l in range(LANES):
        acc[l] = xr[0] if is_max else 0
    for block in range(body // LANES):
        j = block * LANES
        if is_max:
            for l in range(LANES):
                v = xr[j + l]
                acc[l] = _max(acc[l], v)
        else:
            for l in range(LANES):
                acc[l] = acc[l] + xr[j + l]
    total = acc[0]
    for l in range(1, LANES):
        total = _max(total, acc[l]) if is_max else total + acc[l]
    for j in range(body, cols):
        v = xr[j]
        total = _max(total, v) if is_max else total + v
    return total


cdef struct _GlobalCtx:
    const float* x
    float* y
    Py_ssize_t rows, cols, hw, C, block, blocks
    Py_ssize_t jobs, group   # jobs in all; jobs per chunk
    Py_ssize_t runs          # NHWC: runs of pixels an image is split into
    float* parts             # NHWC: a row of C partial results per (image, run); y itself for one run
    bint is_max


cdef inline void _global_rows(const float* x, float* y, Py_ssize_t rows, Py_ssize_t cols, bint is_max, int nt) noexcept nogil:
    cdef _GlobalCtx c
    c.x, c.y, c.cols, c.is_max = x, y, cols, is_max
    c.jobs, c.group = rows, wb_jobs_per_chunk(rows, cols, nt)
    wb_pool_run(_global_rows_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)


cdef inline void _global_rows_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """Rows i * group ... of a global pool over NCHW."""
    cdef const _GlobalCtx* c = <const _GlobalCtx*> ctx
    cdef const float* x = c.x
    cdef float* y = c.y
    cdef Py_ssize_t r, cols = c.cols, r0 = i * c.group, r1 = min(r0 + c.group, c.jobs)
    cdef bint is_max = c.is_max
    cdef float acc
    for r in range(r0, r1):
        acc = _reduce_row(x + r * cols, cols, is_max)
        y[r] = acc if is_max else acc / cols


cdef inline void _global_nhwc(const float* x, float* y, Py_ssize_t n, Py_ssize_t hw, Py_ssize_t C, bint is_max,
                       int nt) noexcept nogil:
    # Jobs are (image, block of channels, run of pixels).  Images of many pixels are split into
    # runs of pixels, all channels each, every job leaving its partial result in a row of
    # ``parts`` (combined after): blocks of 64 channels read a fraction of every cache line of the
    # image, each block again (96 channels at 160x160: 11 GB/s where whole pixels stream at 50),
    # and one image of 24 or 48 channels was one job, on one thread.  Small images (7x7 of 2048
    # channels) keep the channel blocks, their only parallelism.
    # The partial rows live on this (the caller's) stack while the pool runs: no allocation a run.
    cdef _GlobalCtx c
    cdef float parts[PARTS]
    c.x, c.y, c.hw, c.C, c.is_max = x, y, hw, C, is_max
    c.block, c.runs = 64, 1
    if hw >= 256 and 2 * n * C <= PARTS:
        c.block, c.runs = C, max(1, min(hw // 64, (4 * nt + n - 1) // n, PARTS // (n * C)))
    c.blocks = (C + c.block - 1) // c.block
    c.jobs = n * c.blocks * c.runs
    c.group = wb_jobs_per_chunk(c.jobs, hw // c.runs * c.block, nt)
    c.parts = y if c.runs == 1 else parts
    wb_pool_run(_global_nhwc_chunk, &c, (c.jobs + c.group - 1) // c.group, nt)
    cdef Py_ssize_t b, r, ch
    cdef float v
    cdef const float* row
    if c.runs > 1:
        for b in range(n):
            for ch in range(C):
                y[b * C + ch] = c.parts[b * c.runs * C + ch]
            for r in range(1, c.runs):
                row = c.parts + (b * c.runs + r) * C
                for ch in range(C):
                    v = row[ch]
                    y[b * C + ch] = _max(y[b * C + ch], v) if is_max else y[b * C + ch] + v
    if not is_max:
        for ch in range(n * C):
            y[ch] = y[ch] / hw


cdef inline void _global_nhwc_chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """(image, block of channels, run of pixels) jobs i * group ... of a global pool over NHWC:
    the run's sum or max into its row of c.parts."""
    cdef const _GlobalCtx* c = <const _GlobalCtx*> ctx
    cdef const float* x = c.x
    cdef Py_ssize_t hw = c.hw, C = c.C, block = c.block, blocks = c.blocks, runs = c.runs
    cdef Py_ssize_t j0 = i * c.group, j1 = min(j0 + c.group, c.jobs)
    cdef Py_ssize_t job, b, r, c0, c1, ch, k, k0, k1
    cdef bint is_max = c.is_max
    cdef const float* xv
    cdef float* yv
    cdef float v
    for job in range(j0, j1):
        r = job % runs
        b = job // runs // blocks
        c0 = (job // runs % blocks) * block
        c1 = min(c0 + block, C)
        k0, k1 = r * hw // runs, (r + 1) * hw // runs
        yv = c.parts + (b * runs + r) * C
        xv = x + (b * hw + k0) * C
        for ch in range(c0, c1):
            yv[ch] = xv[ch]
        for k in range(k0 + 1, k1):
            xv = x + (b * hw + k) * C
            if is_max:
                for ch in range(c0, c1):
                    v = xv[ch]
                    yv[ch] = _max(yv[ch], v)
            else:
                for ch in range(c0, c1):
                    yv[ch] = yv[ch] + xv[ch]
