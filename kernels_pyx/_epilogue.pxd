# The fused epilogue of Conv/Gemm/elementwise routines: bias, residual add, activation.
# Activation codes (see workbench/routines/epilogue.py, which encodes a layer's attributes):
#   0 none, 1 Relu, 2 Clip(p0, p1), 3 LeakyRelu(p0), 4 HardSigmoid(p0, p1), 5 HardSwish,
#   6 Sigmoid, 7 PRelu(per-channel slope), 8 Tanh
from libc.math cimport expf, tanhf

cdef enum:
    ACT_NONE = 0
    ACT_RELU = 1
    ACT_CLIP = 2
    ACT_LEAKY = 3
    ACT_HARDSIGMOID = 4
    ACT_HARDSWISH = 5
    ACT_SIGMOID = 6
    ACT_PRELU = 7
    ACT_TANH = 8


cdef inline float activate(float v, int act, float p0, float p1, float slope) noexcept nogil:
    cdef float t
    if act == ACT_RELU:
        return 0 if v < 0 else v   # NaN fails the test and stays NaN, as in ONNX Runtime
    if act == ACT_CLIP:
        return p0 if v < p0 else (p1 if v > p1 else v)
    if act == ACT_LEAKY:
        return v if v >= 0 else v * p0
    if act == ACT_HARDSIGMOID:
        t = p0 * v + p1
        return 0 if t < 0 else (1 if t > 1 else t)
    if act == ACT_HARDSWISH:
        t = v * (1.0 / 6.0) + 0.5
        return v * (0 if t < 0 else (1 if t > 1 else t))
    if act == ACT_SIGMOID:
        return 1 / (1 + expf(-v))
    if act == ACT_PRELU:
        return v if v >= 0 else v * slope
    if act == ACT_TANH:
        return tanhf(v)
    return v


cdef inline void activate_run(float* y, Py_ssize_t n, int act, float p0, float p1, float s) noexcept nogil:
    """``activate`` on n values sharing one PRelu slope ``s``, with one loop per code and float
    constants so that GCC vectorises each loop (the per-element branch of ``activate`` does not)."""
    cdef Py_ssize_t i
    cdef float t, v, zero = 0, one = 1, sixth = <float> (1.0 / 6.0), half = 0.5
    if act == 1:
        for i in range(n):
            v = y[i]
            y[i] = zero if v < zero else v   # NaN stays NaN
    elif act == 2:
        for i in range(n):
            v = y[i]
            v = p0 if v < p0 else v
            y[i] = p1 if v > p1 else v
    elif act == 3 or act == 7:
        s = p0 if act == 3 else s
        for i in range(n):  # max(v, 0) + s * min(v, 0): two selects GCC vectorises, NaN kept by both
            v = y[i]
            t = zero if v > zero else v
            v = zero if v < zero else v
            y[i] = v + s * t
    elif act == 4 or act == 5:
        if act == 5:
            p0, p1 = sixth, half
        for i in range(n):
            v = y[i]
            t = v * p0 + p1
            t = zero if t < zero else t
            t = one if t > one else t
            y[i] = v * t if act == 5 else t
    elif act != 0:
        for i in range(n):
            y[i] = activate(y[i], act, p0, p1, s)


cdef inline void epilogue_rows(float* out, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                               bint channel_is_row, const float* bias, const float* residual,
                               Py_ssize_t ld_res, int act, float p0, float p1,
                               const float* slope) noexcept nogil:
    """Apply bias + residual + activation to a (rows, cols) block with leading dimension ``ld``.

    ``channel_is_row``: channels index rows (channels-first output, NCHW) or columns (NHWC).
    ``bias``/``residual``/``slope`` may be NULL.  The channel of row r / column j is r / j
    relative to the block's first row/column: callers offset the pointers for sub-blocks.
    """
    cdef Py_ssize_t r, j
    cdef float v, b = 0, s = 0
    cdef float* o
    cdef const float* res
    for r in range(rows):
        o = out + r * ld
        res = residual + r * ld_res if residual != NULL else NULL
        if channel_is_row:
            b = bias[r] if bias != NULL else 0
            s = slope[r] if slope != NULL else 0
        for j in range(cols):
            v = o[j]
            if channel_is_row:
                v = v + b
            elif bias != NULL:
                v = v + bias[j]
            if res != NULL:
                v = v + res[j]
            if act != ACT_NONE:
                if not channel_is_row and slope != NULL:
                    s = slope[j]
                v = activate(v, act, p0, p1, s)
            o[j] = v
