# isa-variants: avx2, avx512
# cython: language_level=3
"""The elementwise half of an LSTM step, bound once: from the gate pre-activations ``g`` (batch,
4 hidden, in ONNX's i, o, f, c order) update the cell state ``c`` and the hidden state ``h`` in
place and write ``h`` into row ``s`` of the output, in one call: sigmoid and tanh are
``wb_vmath.h``'s vectorised polynomials, so a step costs no Python-level array operation."""
import numpy as np
cimport numpy as cnp

cnp.import_array()

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
