# The job split of gemm_bf16.pyx's calls (included there, after _Ctx): how the rows and the
# weight panels of one product are shared out into the jobs its threads take.

# A job reads its panels from L2 at least once: a fifth of the cost of reading them from memory.
cdef double L2_WEIGHT = 0.2

cdef enum:
    A_BUDGET = 786432     # bytes of A a job may count on keeping in L2 across its panels
    B_RESIDENT = 1048576  # bytes of packed weights that stay in L2 from one row job to the next


cdef void _schedule(_Ctx* g, int num_threads, Py_ssize_t max_tile) noexcept nogil:
    """The jobs for ``num_threads``: the rows in ``row_jobs`` groups of whole strips (at most
    ``max_tile`` rows each: a gathering call's scratch holds that many), the panels in
    ``col_jobs`` groups.  A job runs its panels in turn, each over all its rows: a panel is read
    once from memory and again from L2 for each block of rows."""
    g.strips = (g.m + WBB_ROWS - 1) // WBB_ROWS
    if 2.0 * wbb_packed_words(g.k, g.n) <= B_RESIDENT:
        _schedule_rows(g, num_threads, max_tile)
    else:
        _schedule_deep(g, num_threads, max_tile)


cdef void _schedule_rows(_Ctx* g, int num_threads, Py_ssize_t max_tile) noexcept nogil:
    """Weights that stay in L2: row tiles first; where they are too few to give every thread 3
    jobs, shorter tiles, then the panels split into groups as well."""
    cdef Py_ssize_t m = g.m
    g.row_tile = min(ROW_TILE, max_tile)
    # Where B outweighs A (a classifier: 32 rows against 8210 columns) every job takes all the
    # rows of a tile and a share of the panels, so each panel is read once; shorter row tiles
    # would read all of B once per tile.
    cdef bint b_heavy = g.n >= 4 * m
    if num_threads > 1 and (m + g.row_tile - 1) // g.row_tile < 3 * num_threads and not b_heavy:
        g.row_tile = max(WBB_ROWS,
                         min(g.row_tile, (m + 3 * num_threads - 1) // (3 * num_threads) // WBB_ROWS * WBB_ROWS))
    # Row jobs of equal strips and, where they are the only split, as many as a multiple of the
    # threads: with 676 rows in tiles of 96 (7 full, 1 of 4 rows) one thread took 4 full tiles,
    # the other 3 and the short one, and the layer ran at 88% of twice the one-thread rate.
    cdef Py_ssize_t row_jobs = max(1, (g.strips + g.row_tile // WBB_ROWS - 1) // (g.row_tile // WBB_ROWS))
    if num_threads > 1 and row_jobs >= 3 * num_threads and row_jobs % num_threads:
        row_jobs = min(g.strips, (row_jobs + num_threads - 1) // num_threads * num_threads)
    g.row_jobs = row_jobs
    # Column jobs likewise: near-equal groups of panels, and all the jobs a multiple of the
    # threads where the panels allow (a 7x7 map's 5 jobs of 2 panels ran 3 on one thread).
    cdef Py_ssize_t cols = 1
    if num_threads > 1 and row_jobs < 3 * num_threads:
        cols = min(g.panels, (3 * num_threads + row_jobs - 1) // row_jobs)
        while (row_jobs * cols) % num_threads and cols < g.panels:
            cols += 1
    g.col_jobs = max(cols, 1)


cdef void _schedule_deep(_Ctx* g, int num_threads, Py_ssize_t max_tile) noexcept nogil:
    """Weights too large to stay in L2 (deep layers: 14x14x512 holds 0.26 MB of image against
    4.7 MB of weights): every row job reads all of B from memory again, and each panel group
    reads the rows of A once where a job's rows fit in L2 (A_BUDGET), else once a panel.  The
    split of least traffic (row_jobs x B + col_jobs x A, and a fifth of B again from L2 for
    every row job); among splits within 3% of it, the one with the most jobs (up to 3 a
    thread); the jobs number a multiple of the threads (or at least 4 a thread), and at least 2
    a thread where there are as many."""
    cdef Py_ssize_t rj, cj, jobs, best_r = 0, best_c = 1, best_jobs = 0, per, lo, want, cap, sweep
    cdef double a_bytes = <double> g.m * g.a_row_bytes, b_bytes = 2.0 * wbb_packed_words(g.k, g.n)
    cdef double cost, least = -1
    per = max(1, max_tile // WBB_ROWS)          # strips a job may take
    g.row_tile = per * WBB_ROWS
    lo = (g.strips + per - 1) // per
    want = min(2 * num_threads, g.strips * g.panels) if num_threads > 1 else 1
    cap = 3 * num_threads
    for sweep in range(2):   # the least traffic, then the most jobs within 3% of it
        for cj in range(1, g.panels + 1):
            for rj in range(lo, g.strips + 1):
                jobs = rj * cj
                if jobs < want or (jobs % num_threads != 0 and jobs < 4 * num_threads):
                    continue
                cost = (a_bytes * cj if a_bytes / rj <= A_BUDGET else a_bytes * g.panels) + \
                       (1 + L2_WEIGHT) * b_bytes * rj
                if sweep == 0:
                    if least < 0 or cost < least:
                        least, best_r, best_c = cost, rj, cj
                elif cost <= least * 1.03 and best_jobs < jobs <= cap:
                    best_r, best_c, best_jobs = rj, cj, jobs
                if jobs > cap:
                    break
    if best_r == 0:   # too few strips and panels to share out: one job each
        best_r, best_c = max(lo, g.strips), g.panels
    g.row_jobs, g.col_jobs = best_r, max(best_c, 1)
