# isa-variants: avx2, avx512
# cython: language_level=3
"""A chain of broadcasting binary ops (Add/Sub/Mul/Div, each with a fused activation) in one pass.

Exporters spell what one kernel could do as several elementwise layers, ``x + x * se`` then
``+ upsampled`` in PP-OCR's detection necks; run one at a time, each intermediate makes a round
trip through memory.  :class:`Chain` walks the loop nest of the output once (up to four
coalesced dims, every operand with its own element strides, as ``eltwise.binary`` does) and
evaluates the whole program on a block of at most ``BLOCK`` elements of one innermost row at a
time, the intermediates in per-thread buffers that stay in L1.  Each step is the same float32
operation, in the same order, as the layer it came from: the result is bit for bit the unfused
one.

Inputs and the output may also be bfloat16 (2-byte arrays: ml_dtypes' bfloat16 or their uint16
bits): a bfloat16 input is widened to float32 block by block as it is read, the steps run in
float32 as before, and a bfloat16 output is rounded once, to nearest even, as the block is
stored.  So a chain between bfloat16 convolutions moves half the bytes and needs no cast.

A program is a list of steps ``(op, a, b, act, p0, p1)``: ``op`` one of ``OPS``, ``a`` and ``b``
operand references (``k >= 0``: input ``k``; ``k < 0``: the result of step ``-k - 1``, an
earlier one), ``act`` an activation code of ``eltwise.pyx`` (not PRelu).  The last step's result
is the output.

An input may also be read along the row through an index pattern instead of a stride (``rows``),
so that a short innermost row need not bound the blocks:

- periodic, ``(unit, 0)``: element ``p`` of the row is ``x[p % unit]``: a per-channel operand of an
  NHWC tensor (``x * se``), whose rows were one pixel (24 or 96 floats) long, a block's setup as
  long as its arithmetic; the rows are then whole planes, and the operand a tile made per job;
- repeated, ``(unit, rep)``: element ``p`` is ``x[p // (unit * rep) * unit + p % unit]``: each run of
  ``unit`` floats ``rep`` times over, a nearest upsample along the row (NHWC: ``unit`` channels;
  NCHW: ``unit`` 1), the rows of the other upsampled axis given by a stride-0 loop.  The chain
  then reads the small map where it lies instead of a copy of it ``rep * rep`` times the size.
"""
import numpy as np
cimport numpy as cnp

from _epilogue cimport ACT_PRELU
from _eltwise_rows cimport AddT, SubT, MulT, DivT, ACT_LAST, _act_row, _row
from libc.string cimport memcpy
from libc.stdint cimport uint16_t

from wb_pool cimport wb_jobs_per_chunk, wb_pool_import, wb_pool_run

# the argument checks of the base build (no ISA-specific code in them)
from workbench._kernels.eltwise import _extent, _rows_array

BFLOAT16_NAMES = ("bfloat16", "uint16")


def _operand(a, name, writeable=False):
    """Check an operand or the output (float32, or bfloat16 / its uint16 bits; C-contiguous or
    with a contiguous last axis); returns 1 where it is bfloat16."""
    if isinstance(a, np.ndarray) and a.dtype.name in BFLOAT16_NAMES:
        if writeable and not a.flags.writeable:
            raise ValueError(f"eltwise_chain: {name} is read-only")
        if not a.flags.c_contiguous and (a.ndim == 0 or a.strides[a.ndim - 1] != 2 or min(a.strides) < 0):
            raise ValueError(f"eltwise_chain: {name} must be C-contiguous or a view with a contiguous last axis "
                             f"(a channel slice), got strides {a.strides}")
        return 1
    _rows_array(a, name, "eltwise_chain", writeable=writeable)
    return 0

cnp.import_array()
wb_pool_import()

cdef extern from "wb_chain_bf16.h" nogil:
    void wbc_widen(float* o, const uint16_t* x, Py_ssize_t st, Py_ssize_t n) noexcept nogil
    void wbc_round(uint16_t* o, const float* x, Py_ssize_t n) noexcept nogil

OPS = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3}

cdef enum:
    MAX_INPUTS = 8
    MAX_STEPS = 8
    BLOCK = 256   # elements per step and block: MAX_STEPS buffers of it stay in L1
    MAX_PATTERNS = 4   # inputs read through a periodic or repeated pattern
    TILE = 3 * BLOCK   # a periodic input's tile: its unit (at most BLOCK) over a block at any phase

# Below this many elements the parallel region costs more than it saves: one thread.
cdef Py_ssize_t GRAIN = 32768


def set_grain(Py_ssize_t elements):
    """Set the work size below which a chain runs on one thread; returns the previous one."""
    global GRAIN
    old, GRAIN = GRAIN, max(elements, 0)
    return old


cdef struct _Job:
    char* out
    int out_bf                     # the output is bfloat16
    const char* x[MAX_INPUTS]
    int bf[MAX_INPUTS]             # input k is bfloat16
    Py_ssize_t st[MAX_INPUTS][4]   # element strides of each input over the loop nest
    Py_ssize_t d[4]
    Py_ssize_t so[4]               # the output's (its last 1)
    int kind[MAX_INPUTS]           # 0: strided; 1: periodic; 2: repeated (see the module doc)
    int pat[MAX_INPUTS]            # its pattern buffer (kinds 1 and 2)
    Py_ssize_t unit[MAX_INPUTS]
    Py_ssize_t rep[MAX_INPUTS]
    int nin
    int nsteps
    int op[MAX_STEPS]
    int a[MAX_STEPS]
    int b[MAX_STEPS]
    int act[MAX_STEPS]
    float p0[MAX_STEPS]
    float p1[MAX_STEPS]
    Py_ssize_t chunk, chunks, jobs, group
    Py_ssize_t rows                # > 1: short rows, taken this many at a time (_chunk_rows)


cdef inline void _step(int op, float* o, const float* a, Py_ssize_t sa, const float* b, Py_ssize_t sb,
                       Py_ssize_t n) noexcept nogil:
    if op == 0:
        _row(<AddT*> NULL, o, a, sa, b, sb, n)
    elif op == 1:
        _row(<SubT*> NULL, o, a, sa, b, sb, n)
    elif op == 2:
        _row(<MulT*> NULL, o, a, sa, b, sb, n)
    else:
        _row(<DivT*> NULL, o, a, sa, b, sb, n)


cdef inline void _repeat(float* o, const char* x, int bf, Py_ssize_t p, Py_ssize_t m, Py_ssize_t unit,
                         Py_ssize_t rep) noexcept nogil:
    """Elements p..p+m-1 of a repeated row (each run of ``unit`` elements of ``x`` ``rep``
    times), as float32 (``bf``: ``x`` is bfloat16)."""
    cdef Py_ssize_t t = 0, run, span = unit * rep, j, k
    if unit == 1:
        j, k = p // rep, p % rep
        while t < m:
            if bf:
                wbc_widen(o + t, <const uint16_t*> x + j, 1, 1)
            else:
                o[t] = (<const float*> x)[j]
            t += 1
            k += 1
            if k == rep:
                j, k = j + 1, 0
        return
    while t < m:
        j = p % unit
        run = min(unit - j, m - t)
        if bf:
            wbc_widen(o + t, <const uint16_t*> x + p // span * unit + j, 1, run)
        else:
            memcpy(o + t, <const float*> x + p // span * unit + j, run * sizeof(float))
        t += run
        p += run


cdef inline const float* _patterned(const _Job* c, float (*pat)[TILE], int k, Py_ssize_t p) noexcept nogil:
    """Input ``k``'s elements from row position ``p`` on, in its pattern buffer."""
    return &pat[c.pat[k]][p % c.unit[k]] if c.kind[k] == 1 else &pat[c.pat[k]][0]


cdef void _chunk(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    cdef _Job* c = <_Job*> ctx
    cdef float tmp[MAX_STEPS][BLOCK]
    cdef float wide[MAX_INPUTS][BLOCK]   # a block of each strided bfloat16 input, widened
    cdef float pat[MAX_PATTERNS][TILE]
    cdef const char* tiled[MAX_PATTERNS]
    cdef const char* base[MAX_INPUTS]
    cdef const Py_ssize_t* d = c.d
    cdef Py_ssize_t job, rest, i0, i1, i2, r0, n, k, b0, m, j, at
    cdef int s, ref
    cdef const float* pa
    cdef const float* pb
    cdef Py_ssize_t sa, sb
    cdef char* po
    cdef float* dst
    for k in range(MAX_PATTERNS):
        tiled[k] = NULL
    for job in range(i * c.group, min(c.jobs, (i + 1) * c.group)):
        r0 = (job % c.chunks) * c.chunk
        rest = job // c.chunks
        i2 = rest % d[2]
        rest = rest // d[2]
        i1 = rest % d[1]
        i0 = rest // d[1]
        n = min(c.chunk, d[3] - r0)
        for k in range(c.nin):
            at = i0 * c.st[k][0] + i1 * c.st[k][1] + i2 * c.st[k][2]
            if c.kind[k] == 0:
                at += r0 * c.st[k][3]
            base[k] = c.x[k] + at * (2 if c.bf[k] else 4)
            if c.kind[k] == 1 and tiled[c.pat[k]] != base[k]:   # its unit end to end, a block at any phase
                tiled[c.pat[k]] = base[k]
                j = 0
                while j + c.unit[k] <= TILE:
                    if c.bf[k]:
                        wbc_widen(&pat[c.pat[k]][j], <const uint16_t*> base[k], 1, c.unit[k])
                    else:
                        memcpy(&pat[c.pat[k]][j], base[k], c.unit[k] * sizeof(float))
                    j += c.unit[k]
        po = c.out + (i0 * c.so[0] + i1 * c.so[1] + i2 * c.so[2] + r0) * (2 if c.out_bf else 4)
        b0 = 0
        while b0 < n:
            m = min(<Py_ssize_t> BLOCK, n - b0)
            for k in range(c.nin):
                if c.kind[k] == 2:
                    _repeat(pat[c.pat[k]], base[k], c.bf[k], r0 + b0, m, c.unit[k], c.rep[k])
                elif c.kind[k] == 0 and c.bf[k]:
                    wbc_widen(wide[k], <const uint16_t*> base[k] + b0 * c.st[k][3], c.st[k][3], m)
            for s in range(c.nsteps):
                ref = c.a[s]
                if ref < 0:
                    pa, sa = tmp[-ref - 1], 1
                elif c.kind[ref] == 0 and c.bf[ref]:
                    pa, sa = wide[ref], 1
                elif c.kind[ref] == 0:
                    pa, sa = <const float*> base[ref] + b0 * c.st[ref][3], c.st[ref][3]
                else:
                    pa, sa = _patterned(c, pat, ref, r0 + b0), 1
                ref = c.b[s]
                if ref < 0:
                    pb, sb = tmp[-ref - 1], 1
                elif c.kind[ref] == 0 and c.bf[ref]:
                    pb, sb = wide[ref], 1
                elif c.kind[ref] == 0:
                    pb, sb = <const float*> base[ref] + b0 * c.st[ref][3], c.st[ref][3]
                else:
                    pb, sb = _patterned(c, pat, ref, r0 + b0), 1
                dst = (<float*> po + b0) if s == c.nsteps - 1 and not c.out_bf else tmp[s]
                _step(c.op[s], dst, pa, sa, pb, sb, m)
                _act_row(dst, m, c.act[s], c.p0[s], c.p1[s], 0)
            if c.out_bf:
                wbc_round(<uint16_t*> po + b0, tmp[c.nsteps - 1], m)
            b0 += m


include "_chain_rows.pxi"


def _pattern_last(pattern, Py_ssize_t n):
    """The last element a row of ``n`` reads through ``pattern`` (None: none past its base)."""
    if pattern is None:
        return 0
    unit, rep = (int(v) for v in pattern)
    if rep == 0:
        return min(unit, n) - 1
    return (n - 1) // (unit * rep) * unit + min(unit, (n - 1) % (unit * rep) + 1) - 1


cdef class Chain:
    """The program ``steps`` over ``inputs`` into ``out``, checked once when made; each call
    ``(num_threads)`` runs it (an executor's step on its own buffers).

    ``inputs``: up to 8 float32 or bfloat16 arrays (the output either too), C-contiguous or with a
    contiguous last axis; ``strides``:
    per input, 4 element strides over the loop nest ``dims`` (outermost first, 0 where it
    broadcasts); ``out``: ``prod(dims)`` elements written in loop order, C-contiguous or of shape
    ``dims`` with its last axis contiguous (a channel slice, written where it lies).  ``rows``:
    per input None, or ``(unit, rep)`` for one read along the row through a pattern (the module
    doc; its last stride is then not used): at most 4 inputs, ``unit`` at most 256 where periodic.
    """
    cdef _Job job
    cdef tuple keep

    def __init__(self, inputs, strides, out, dims, steps, rows=None):
        cdef Py_ssize_t size = 1
        cdef int k, j, patterns = 0
        inputs, strides, steps = list(inputs), list(strides), list(steps)
        rows = [None] * len(inputs) if rows is None else list(rows)
        if len(rows) != len(inputs):
            raise ValueError(f"eltwise_chain: rows needs one entry per input ({len(inputs)}), got {len(rows)}")
        if not 1 <= len(inputs) <= MAX_INPUTS or len(strides) != len(inputs):
            raise ValueError(f"eltwise_chain: 1 to {MAX_INPUTS} inputs with a stride list each, got {len(inputs)} "
                             f"inputs and {len(strides)} stride lists")
        if not 1 <= len(steps) <= MAX_STEPS:
            raise ValueError(f"eltwise_chain: 1 to {MAX_STEPS} steps, got {len(steps)}")
        if len(dims) != 4:
            raise ValueError(f"eltwise_chain: dims needs 4 values, got {dims}")
        self.job.out_bf = _operand(out, "out", writeable=True)
        for k in range(4):
            self.job.d[k] = dims[k]
            if dims[k] < 1:
                raise ValueError(f"eltwise_chain: dims {tuple(dims)} must be positive")
            size *= dims[k]
        if out.size != size:
            raise ValueError(f"eltwise_chain: out has {out.size} elements, the loop nest {tuple(dims)} writes {size}")
        if out.flags.c_contiguous:
            self.job.so[0], self.job.so[1], self.job.so[2], self.job.so[3] = dims[1] * dims[2] * dims[3], \
                dims[2] * dims[3], dims[3], 1
        elif out.ndim == 4 and tuple(out.shape) == tuple(dims):
            for k in range(4):
                self.job.so[k] = out.strides[k] // out.itemsize if dims[k] > 1 else 0
            self.job.so[3] = 1
        else:
            raise ValueError(f"eltwise_chain: out must be C-contiguous, or of the loop nest's shape {tuple(dims)}; "
                             f"got shape {out.shape}, strides {out.strides}")
        for k in range(MAX_INPUTS):
            self.job.x[k] = NULL
        for k, (x, st) in enumerate(zip(inputs, strides)):
            self.job.bf[k] = _operand(x, f"input {k}")
            if len(st) != 4 or min(st) < 0:
                raise ValueError(f"eltwise_chain: input {k} needs 4 non-negative strides, got {st}")
            self.job.kind[k] = 0
            if rows[k] is not None:
                unit, rep = (int(v) for v in rows[k])
                if patterns == MAX_PATTERNS or unit < 1 or rep < 0 or (rep == 0 and unit > BLOCK):
                    raise ValueError(f"eltwise_chain: input {k}: row pattern {tuple(rows[k])} needs unit >= 1 "
                                     f"(at most {BLOCK} where periodic), rep >= 0, and at most {MAX_PATTERNS} "
                                     f"patterned inputs")
                self.job.kind[k], self.job.pat[k], self.job.unit[k], self.job.rep[k] = 1 if rep == 0 else 2, \
                    patterns, unit, rep
                patterns += 1
                st = list(st[:3]) + [0]
            last = sum((dd - 1) * v for dd, v in zip(dims, st)) + _pattern_last(rows[k], dims[3])
            if last >= _extent(x):
                raise ValueError(f"eltwise_chain: input {k} spans {_extent(x)} elements; dims {tuple(dims)} with "
                                 f"strides {tuple(st)} read up to element {last}")
            self.job.x[k] = <const char*> cnp.PyArray_DATA(<cnp.ndarray> x)
            for j in range(4):
                self.job.st[k][j] = st[j]
        for j, (op, a, b, act, p0, p1) in enumerate(steps):
            if op not in OPS:
                raise ValueError(f"eltwise_chain: step {j}: unknown op {op!r}; expected one of {sorted(OPS)}")
            for ref in (a, b):
                if not (0 <= ref < len(inputs) or -j <= ref < 0):
                    raise ValueError(f"eltwise_chain: step {j} reads operand {ref}: neither an input "
                                     f"(0..{len(inputs) - 1}) nor an earlier step (-1..{-j})")
            if act == ACT_PRELU or not 0 <= act <= ACT_LAST:
                raise ValueError(f"eltwise_chain: step {j}: activation code {act} is not supported here")
            self.job.op[j], self.job.a[j], self.job.b[j] = OPS[op], a, b
            self.job.act[j], self.job.p0[j], self.job.p1[j] = act, p0, p1
        self.job.nsteps, self.job.nin = len(steps), len(inputs)
        self.job.out = <char*> cnp.PyArray_DATA(<cnp.ndarray> out)
        # short rows of bfloat16 are taken several at a time (each is widened or rounded through
        # a buffer anyway; float32 rows, read and written where they lie, gained nothing), where
        # every patterned input is one per-row pattern the rows share (a per-channel operand)
        # and the rows hold whole periods of it
        self.job.rows = 1
        if (self.job.out_bf or any(self.job.bf[k] for k in range(len(inputs)))) and dims[3] * 4 <= BLOCK \
                and dims[2] > 1 and all(
                self.job.kind[k] == 0 or (self.job.kind[k] == 1 and self.job.st[k][2] == 0
                                          and dims[3] % self.job.unit[k] == 0) for k in range(len(inputs))):
            self.job.rows = min(BLOCK // dims[3], dims[2])
        self.keep = (tuple(inputs), out)

    def __call__(self, int num_threads):
        cdef _Job job = self.job   # the split is per call
        cdef const Py_ssize_t* d = job.d
        cdef Py_ssize_t outer = d[0] * d[1] * d[2], size = outer * d[3]
        cdef int nt = 1 if size < GRAIN else max(num_threads, 1)
        if job.rows > 1:
            job.jobs = d[0] * d[1] * ((d[2] + job.rows - 1) // job.rows)
            job.group = wb_jobs_per_chunk(job.jobs, job.rows * d[3], nt)
            with nogil:
                wb_pool_run(_chunk_rows, &job, (job.jobs + job.group - 1) // job.group, nt)
            return 1
        # the inner row split only where the outer loops give too few jobs to share out
        cdef Py_ssize_t want = 8 * nt if nt > 1 else 1
        cdef Py_ssize_t chunk = d[3] if outer >= want else max(min(d[3], max(1024, -(-d[3] * outer // want))), 1)
        job.chunk, job.chunks = chunk, (d[3] + chunk - 1) // chunk
        job.jobs = outer * job.chunks
        job.group = wb_jobs_per_chunk(job.jobs, chunk, nt)
        with nogil:
            wb_pool_run(_chunk, &job, (job.jobs + job.group - 1) // job.group, nt)
