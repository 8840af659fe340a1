# eltwise_chain.pyx's blocks of several short rows (included there, after _chunk): the rows of
# one job gathered end to end, the steps run once over them, the rows scattered back.


cdef inline const float* _block_operand(const _Job* c, int ref, float (*tmp)[BLOCK], float (*wide)[BLOCK],
                                       float (*pat)[TILE]) noexcept nogil:
    """Operand ``ref`` of a gathered block: an earlier step's result, a pattern, or a gathered input."""
    if ref < 0:
        return tmp[-ref - 1]
    if c.kind[ref] == 1:
        return &pat[c.pat[ref]][0]
    return wide[ref]


cdef void _chunk_rows(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    """_chunk for short rows (a channel slice of an NHWC tensor: 24 channels a pixel written into a
    Concat's 96): a block is ``rows`` rows of the third loop, each input's gathered end to end
    (widened where bfloat16), the steps run once over them all, and the rows scattered back to
    the output; a row at a time, the setup of each row cost more than its arithmetic."""
    cdef _Job* c = <_Job*> ctx
    cdef float tmp[MAX_STEPS][BLOCK]
    cdef float wide[MAX_INPUTS][BLOCK]
    cdef float pat[MAX_PATTERNS][TILE]
    cdef const char* tiled[MAX_PATTERNS]
    cdef const Py_ssize_t* d = c.d
    cdef Py_ssize_t job, rest, i0, i1, i2, nr, r, k, m, j, at, n = d[3]
    cdef Py_ssize_t blocks = (d[2] + c.rows - 1) // c.rows
    cdef int s, ref
    cdef const float* pa
    cdef const float* pb
    cdef const char* src
    cdef char* po
    for k in range(MAX_PATTERNS):
        tiled[k] = NULL
    for job in range(i * c.group, min(c.jobs, (i + 1) * c.group)):
        i2 = (job % blocks) * c.rows
        rest = job // blocks
        i1 = rest % d[1]
        i0 = rest // d[1]
        nr = min(c.rows, d[2] - i2)
        m = nr * n
        for k in range(c.nin):
            at = i0 * c.st[k][0] + i1 * c.st[k][1]
            if c.kind[k] == 1:   # one row's pattern, the same for every row (stride 0 along them)
                src = c.x[k] + at * (2 if c.bf[k] else 4)
                if tiled[c.pat[k]] != src:
                    tiled[c.pat[k]] = src
                    j = 0
                    while j + c.unit[k] <= TILE:
                        if c.bf[k]:
                            wbc_widen(&pat[c.pat[k]][j], <const uint16_t*> src, 1, c.unit[k])
                        else:
                            memcpy(&pat[c.pat[k]][j], src, c.unit[k] * sizeof(float))
                        j += c.unit[k]
                continue
            for r in range(nr):
                src = c.x[k] + (at + (i2 + r) * c.st[k][2]) * (2 if c.bf[k] else 4)
                if c.bf[k]:
                    wbc_widen(&wide[k][r * n], <const uint16_t*> src, c.st[k][3], n)
                elif c.st[k][3] == 1:
                    memcpy(&wide[k][r * n], src, n * sizeof(float))
                else:
                    for j in range(n):
                        wide[k][r * n + j] = (<const float*> src)[j * c.st[k][3]]
        for s in range(c.nsteps):
            pa = _block_operand(c, c.a[s], tmp, wide, pat)
            pb = _block_operand(c, c.b[s], tmp, wide, pat)
            _step(c.op[s], tmp[s], pa, 1, pb, 1, m)
            _act_row(tmp[s], m, c.act[s], c.p0[s], c.p1[s], 0)
        for r in range(nr):
            po = c.out + (i0 * c.so[0] + i1 * c.so[1] + (i2 + r) * c.so[2]) * (2 if c.out_bf else 4)
            if c.out_bf:
                wbc_round(<uint16_t*> po, &tmp[c.nsteps - 1][r * n], n)
            else:
                memcpy(po, &tmp[c.nsteps - 1][r * n], n * sizeof(float))
