# isa-variants: avx2, avx512, avx512bf16
# cython: language_level=3
"""The elementwise half of an LSTM step, bound once: from the gate pre-activations ``g`` (batch,
4 hidden, in ONNX's i, o, f, c order) update the cell state ``c`` and the hidden state ``h`` in
place and write ``h`` into row ``s`` of the output, in one call: sigmoid and tanh are
``wb_vmath.h``'s vectorised polynomials, so a step costs no Python-level array operation.

``RecurrentSteps`` runs whole directions instead (``wb_lstm.h``): every step's product, gates and
states in C, the directions side by side on the kernel pool's threads; an LSTM's, a GRU's or an
RNN's."""
import numpy as np
from workbench._kernels.buffers import aligned_array
cimport numpy as cnp
from libc.stdint cimport uint16_t
from libc.stdlib cimport free, malloc

from wb_pool cimport wb_pool_import, wb_pool_run

cnp.import_array()
wb_pool_import()

cdef extern from "wb_lstm.h" nogil:
    enum: WBL_NB
    enum: WBL_UNITS
    ctypedef struct wbl_dir:
        const void* r
        const float* xw
        float* hf
        uint16_t* hb
        float* h
        float* c
        float* y
        Py_ssize_t ys0, ys1, seq, batch, hid
        int reverse, bf16, kind
        const float* rb
    enum: WBL_LSTM
    enum: WBL_GRU
    enum: WBL_RNN
    int wbl_gates(int kind)
    Py_ssize_t wbl_blocks(Py_ssize_t hid)
    Py_ssize_t wbl_hpad(Py_ssize_t hid)
    int wbl_native(int bf16)
    void wbl_run(const wbl_dir* d)
    void wbl_run_split(const wbl_dir* d, int nt)

#: Whether this build runs LstmSteps with vector kernels: float32 and bfloat16 weights.
native_float32 = bool(wbl_native(0))
native_bfloat16 = bool(wbl_native(1))

cdef extern from "wb_vmath.h" nogil:
    int wbm_map(int code, const float* x, float* y, Py_ssize_t n)

cdef enum:
    SIGMOID = 6
    TANH = 8


def _check(a, name, shape):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        raise TypeError(f"recurrent: {name} must be a float32 NumPy array")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"recurrent: {name} must have shape {tuple(shape)}, got {a.shape}")
    if not a.flags.writeable:
        raise ValueError(f"recurrent: {name} is read-only")


cdef class LstmCell:
    """``LstmCell(g, c, h, t, y)``: ``g`` (batch, 4H), ``c``, ``h`` and the scratch ``t`` (batch, H),
    C-contiguous; ``y`` None or (seq, batch, H) with its last axis contiguous (one direction of
    the LSTM's output).  ``cell(s)``: one step, its hidden state written to ``y[s]``."""
    cdef float* g
    cdef float* c
    cdef float* h
    cdef float* t
    cdef float* y
    cdef Py_ssize_t batch, hid, seq, ys0, ys1
    cdef tuple keep

    def __init__(self, g, c, h, t, y=None):
        batch, hid = c.shape[0], c.shape[1]
        _check(g, "g", (batch, 4 * hid))
        for name, a in (("c", c), ("h", h), ("t", t), ("g", g)):
            _check(a, name, a.shape)
            if not a.flags.c_contiguous:
                raise ValueError(f"recurrent: {name} must be C-contiguous")
        _check(h, "h", (batch, hid))
        _check(t, "t", (batch, hid))
        self.batch, self.hid, self.seq = batch, hid, 0
        self.g, self.c = <float*> cnp.PyArray_DATA(g), <float*> cnp.PyArray_DATA(c)
        self.h, self.t = <float*> cnp.PyArray_DATA(h), <float*> cnp.PyArray_DATA(t)
        self.y = NULL
        if y is not None:
            if y.ndim != 3 or y.shape[1] != batch or y.shape[2] != hid:
                raise ValueError(f"recurrent: y must have shape (seq, {batch}, {hid}), got {y.shape}")
            _check(y, "y", y.shape)
            if y.strides[2] != 4 or min(y.strides) < 0:
                raise ValueError(f"recurrent: y's last axis must be contiguous, got strides {y.strides}")
            self.y, self.seq = <float*> cnp.PyArray_DATA(y), y.shape[0]
            self.ys0, self.ys1 = y.strides[0] // 4, y.strides[1] // 4
        self.keep = (g, c, h, t, y)

    def __call__(self, Py_ssize_t s):
        if self.y != NULL and not 0 <= s < self.seq:
            raise IndexError(f"recurrent: step {s} outside the output's {self.seq} steps")
        cdef Py_ssize_t b, j, H = self.hid
        cdef float* g
        cdef float* c
        cdef float* h
        cdef float* t
        cdef float* yr
        with nogil:
            for b in range(self.batch):
                g, c, h, t = self.g + b * 4 * H, self.c + b * H, self.h + b * H, self.t + b * H
                wbm_map(SIGMOID, g, g, 3 * H)          # i, o, f
                wbm_map(TANH, g + 3 * H, g + 3 * H, H)  # c~
                for j in range(H):
                    c[j] = g[2 * H + j] * c[j] + g[j] * g[3 * H + j]
                wbm_map(TANH, c, t, H)
                for j in range(H):
                    h[j] = g[H + j] * t[j]
                if self.y != NULL:
                    yr = self.y + s * self.ys0 + b * self.ys1
                    for j in range(H):
                        yr[j] = h[j]


#: The cell kinds :class:`RecurrentSteps` runs, and their gates a hidden unit.
KINDS = {"lstm": WBL_LSTM, "gru": WBL_GRU, "rnn": WBL_RNN}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def packed_shape(Py_ssize_t hid, bint bf16, int gates=4):
    """The shape of one direction's R packed by :func:`pack_steps`: (blocks, H, columns) float32,
    or (blocks, ceil(H / 2), columns, 2) bfloat16 (as uint16) pairs; a block's columns are its
    hidden units' gates (4 for an LSTM, 3 for a GRU, 1 for an RNN)."""
    if bf16:
        return (wbl_blocks(hid), (hid + 1) // 2, gates * WBL_UNITS, 2)
    return (wbl_blocks(hid), hid, gates * WBL_UNITS)


def pack_steps(r, bint bf16, int gates=4):
    """One direction's recurrent weights ``r`` (gates x H, H), ONNX's gate order (i, o, f, c for
    an LSTM, z, r, h for a GRU), packed for :class:`RecurrentSteps`: blocks of 32 hidden units,
    each the gates' columns of its units for every k (zero beyond H); bfloat16 (LSTM only)
    rounded to nearest even, as uint16."""
    import ml_dtypes
    r = np.asarray(r, np.float32)
    if gates not in (1, 3, 4) or (bf16 and gates != 4):
        raise ValueError(f"recurrent: {gates} gates{' in bfloat16' if bf16 else ''} are not packed")
    if r.ndim != 2 or r.shape[0] != gates * r.shape[1]:
        raise ValueError(f"recurrent: R must have shape ({gates} hidden, hidden), got {r.shape}")
    hid = r.shape[1]
    nblk, pad = wbl_blocks(hid), wbl_hpad(hid)
    depth = 2 * ((hid + 1) // 2) if bf16 else hid
    cols = np.zeros((gates, pad, depth), np.float32)          # gate, unit, k
    cols[:, :hid, :hid] = r.reshape(gates, hid, hid)
    # block, gate, unit in block, k  ->  block, k, (gate, unit): the block's columns for each k
    blocks = cols.reshape(gates, nblk, WBL_UNITS, depth).transpose(1, 3, 0, 2).reshape(nblk, depth, gates * WBL_UNITS)
    if not bf16:
        return aligned_array(blocks)
    pairs = blocks.reshape(nblk, depth // 2, 2, WBL_NB).transpose(0, 1, 3, 2)
    return aligned_array(np.ascontiguousarray(pairs).astype(ml_dtypes.bfloat16).view(np.uint16))


cdef void _run_direction(void* ctx, Py_ssize_t i, int slot) noexcept nogil:
    wbl_run((<wbl_dir*> ctx) + i)


cdef class RecurrentSteps:
    """``RecurrentSteps(dirs, bf16, kind="lstm")``: the recurrence of one or two directions bound
    once; each of ``dirs`` a dict of ``r`` (:func:`pack_steps`), ``xw`` (seq, batch, gates x H)
    the projection, ``h`` (batch, H) the state and for an LSTM ``c`` the cell (initial in, last
    out), for a GRU ``rb`` (H) Rb's h rows, ``y`` None or (seq, batch, H) with its last axis
    contiguous, and ``reverse``.  ``steps(num_threads)`` runs every step: the directions side by
    side, one per thread, or (``split``) one after the other, each step's product shared out over
    ``num_threads`` threads.  ``kind`` "gru" (linear_before_reset = 1) and "rnn" (tanh) take
    float32 weights."""
    cdef wbl_dir* dirs
    cdef Py_ssize_t n
    cdef list keep

    def __cinit__(self):
        self.dirs, self.n = NULL, 0

    cdef int kind, gates

    def __init__(self, dirs, bint bf16, kind="lstm"):
        if kind not in KINDS or (bf16 and kind != "lstm"):
            raise ValueError(f"recurrent: no {'bfloat16 ' if bf16 else ''}steps for kind {kind!r}; "
                             f"kinds: {', '.join(KINDS)} (bfloat16: lstm)")
        self.kind, self.gates = KINDS[kind], GATES[kind]
        if not 1 <= len(dirs) <= 2:
            raise ValueError(f"recurrent: RecurrentSteps takes one or two directions, got {len(dirs)}")
        if not wbl_native(bf16):
            raise RuntimeError("recurrent: this build has no vector kernel for RecurrentSteps "
                               f"({'bfloat16' if bf16 else 'float32'} weights)")
        self.keep = []
        self.dirs = <wbl_dir*> malloc(len(dirs) * sizeof(wbl_dir))
        if self.dirs == NULL:
            raise MemoryError()
        for i, d in enumerate(dirs):
            self._bind(i, d, bf16)
        self.n = len(dirs)

    cdef _bind(self, Py_ssize_t i, dict d, bint bf16):
        lstm, gru = self.kind == WBL_LSTM, self.kind == WBL_GRU
        xw, h, y, r = d["xw"], d["h"], d.get("y"), d["r"]
        c = d.get("c") if lstm else None
        rb = d.get("rb") if gru else None
        if not isinstance(xw, np.ndarray) or xw.ndim != 3:
            raise ValueError(f"recurrent: xw must be a (seq, batch, {self.gates} hidden) array")
        if not isinstance(h, np.ndarray) or h.ndim != 2:
            raise ValueError("recurrent: h must be a (batch, hidden) array")
        seq, batch, hid = xw.shape[0], xw.shape[1], h.shape[1]
        for name, a, shape in (("xw", xw, (seq, batch, self.gates * hid)), ("h", h, (batch, hid)),
                               ("c", c, (batch, hid)), ("rb", rb, (hid,))):
            if a is None and ((name == "c" and not lstm) or (name == "rb" and not gru)):
                continue
            if name == "rb" and isinstance(a, np.ndarray) and not a.flags.writeable:
                a = np.array(a)   # only read: a frozen prepared state's is as good as a copy of it
                rb = a
            _check(a, name, shape)
            if not a.flags.c_contiguous:
                raise ValueError(f"recurrent: {name} must be C-contiguous")
        want = packed_shape(hid, bf16, self.gates)
        if (not isinstance(r, np.ndarray) or r.dtype != (np.uint16 if bf16 else np.float32)
                or tuple(r.shape) != want or not r.flags.c_contiguous):
            raise ValueError(f"recurrent: r must be a C-contiguous {'uint16' if bf16 else 'float32'} "
                             f"array of shape {want}, got {getattr(r, 'dtype', type(r).__name__)} "
                             f"{getattr(r, 'shape', '')}")
        cdef wbl_dir* p = self.dirs + i
        hf, hb = np.zeros((2, batch, wbl_hpad(hid)), np.float32), np.zeros((2, batch, wbl_hpad(hid)), np.uint16)
        p.r, p.xw = cnp.PyArray_DATA(r), <const float*> cnp.PyArray_DATA(xw)
        p.hf, p.hb = <float*> cnp.PyArray_DATA(hf), <uint16_t*> cnp.PyArray_DATA(hb)
        p.h = <float*> cnp.PyArray_DATA(h)
        p.c = <float*> cnp.PyArray_DATA(c) if c is not None else NULL
        p.rb = <const float*> cnp.PyArray_DATA(rb) if rb is not None else NULL
        p.seq, p.batch, p.hid, p.reverse, p.bf16 = seq, batch, hid, bool(d.get("reverse")), bf16
        p.kind = self.kind
        p.y, p.ys0, p.ys1 = NULL, 0, 0
        if y is not None:
            if not isinstance(y, np.ndarray) or y.ndim != 3 or tuple(y.shape) != (seq, batch, hid):
                raise ValueError(f"recurrent: y must have shape {(seq, batch, hid)}, got {getattr(y, 'shape', y)}")
            _check(y, "y", y.shape)
            if y.strides[2] != 4 or min(y.strides) < 0 or y.strides[0] % 4 or y.strides[1] % 4:
                raise ValueError(f"recurrent: y's last axis must be contiguous, got strides {y.strides}")
            p.y, p.ys0, p.ys1 = <float*> cnp.PyArray_DATA(y), y.strides[0] // 4, y.strides[1] // 4
        self.keep.append((r, xw, hf, hb, h, c, rb, y))

    def steps(self, int num_threads=1, bint split=False):
        cdef int nt = max(1, min(num_threads, <int> self.n))
        cdef Py_ssize_t i
        with nogil:
            if split:
                for i in range(self.n):
                    wbl_run_split(self.dirs + i, max(1, num_threads))
            else:
                wb_pool_run(_run_direction, <void*> self.dirs, self.n, nt)

    def __dealloc__(self):
        free(self.dirs)


#: The LSTM's name for it (its first user).
LstmSteps = RecurrentSteps


cdef class GruCell:
    """``GruCell(xw, hr, h, zr, y)``: the elementwise half of a GRU step, bound once.  ``xw``
    (seq, batch, 3H) the input projection with W's bias (ONNX's z, r, h order), ``hr`` (batch,
    3H) the step's recurrent product with R's bias, ``h`` (batch, H) the state, ``zr`` (batch, 2H)
    scratch, ``y`` None or (seq, batch, H) with its last axis contiguous.

    ``gates(s)``: z and r of step ``s`` into ``zr``; ``reset(rh)``: ``rh = r * h`` (the reset
    state whose product with R's h rows ``linear_before_reset = 0`` needs); ``update(s, scale)``:
    ``n = tanh(xw[s]_h + (r * hr_h if scale else hr_h))``, ``h = (1 - z) n + z h``, row ``s`` of
    ``y``."""
    cdef float* xw
    cdef float* hr
    cdef float* h
    cdef float* zr
    cdef float* y
    cdef Py_ssize_t seq, batch, hid, ys0, ys1
    cdef tuple keep

    def __init__(self, xw, hr, h, zr, y=None):
        seq, batch, hid = xw.shape[0], h.shape[0], h.shape[1]
        for name, a, shape in (("xw", xw, (seq, batch, 3 * hid)), ("hr", hr, (batch, 3 * hid)), ("h", h, (batch, hid)),
                               ("zr", zr, (batch, 2 * hid))):
            _check(a, name, shape)
            if not a.flags.c_contiguous:
                raise ValueError(f"recurrent: {name} must be C-contiguous")
        self.seq, self.batch, self.hid = seq, batch, hid
        self.xw, self.hr = <float*> cnp.PyArray_DATA(xw), <float*> cnp.PyArray_DATA(hr)
        self.h, self.zr = <float*> cnp.PyArray_DATA(h), <float*> cnp.PyArray_DATA(zr)
        self.y = NULL
        if y is not None:
            _check(y, "y", (seq, batch, hid))
            if y.strides[2] != 4 or min(y.strides) < 0:
                raise ValueError(f"recurrent: y's last axis must be contiguous, got strides {y.strides}")
            self.y = <float*> cnp.PyArray_DATA(y)
            self.ys0, self.ys1 = y.strides[0] // 4, y.strides[1] // 4
        self.keep = (xw, hr, h, zr, y)

    def _step(self, Py_ssize_t s):
        if not 0 <= s < self.seq:
            raise IndexError(f"recurrent: step {s} outside the {self.seq} steps")

    def gates(self, Py_ssize_t s):
        self._step(s)
        cdef Py_ssize_t b, j, H = self.hid
        cdef float* x
        cdef float* r
        cdef float* g
        with nogil:
            for b in range(self.batch):
                x, r, g = self.xw + (s * self.batch + b) * 3 * H, self.hr + b * 3 * H, self.zr + b * 2 * H
                for j in range(2 * H):
                    g[j] = x[j] + r[j]
                wbm_map(SIGMOID, g, g, 2 * H)

    def reset(self, rh):
        _check(rh, "rh", (self.batch, self.hid))
        cdef float* out = <float*> cnp.PyArray_DATA(rh)
        cdef Py_ssize_t b, j, H = self.hid
        with nogil:
            for b in range(self.batch):
                for j in range(H):
                    out[b * H + j] = self.zr[b * 2 * H + H + j] * self.h[b * H + j]

    def update(self, Py_ssize_t s, bint scale):
        self._step(s)
        cdef Py_ssize_t b, j, H = self.hid
        cdef float* x
        cdef float* r
        cdef float* g
        cdef float* h
        cdef float* n
        cdef float* yr
        with nogil:
            for b in range(self.batch):
                x, r = self.xw + (s * self.batch + b) * 3 * H + 2 * H, self.hr + b * 3 * H + 2 * H
                g, h = self.zr + b * 2 * H, self.h + b * H
                n = r   # the candidate overwrites the product it reads, in place
                for j in range(H):
                    n[j] = x[j] + (g[H + j] * r[j] if scale else r[j])
                wbm_map(TANH, n, n, H)
                for j in range(H):
                    h[j] = (1.0 - g[j]) * n[j] + g[j] * h[j]
                if self.y != NULL:
                    yr = self.y + s * self.ys0 + b * self.ys1
                    for j in range(H):
                        yr[j] = h[j]
