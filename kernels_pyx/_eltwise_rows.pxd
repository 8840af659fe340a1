# The row loops of the elementwise kernels (eltwise.pyx, eltwise_chain.pyx): one binary op over a
# row with per-operand element strides, its innermost loop specialised per op through a fused
# type for the stride pairs that vectorise, and the fused activation over a row.
from _epilogue cimport (activate, ACT_NONE, ACT_RELU, ACT_CLIP, ACT_LEAKY, ACT_HARDSIGMOID, ACT_HARDSWISH,
                        ACT_SIGMOID, ACT_PRELU, ACT_TANH)

cdef extern from "wb_vmath.h" nogil:
    int wbm_map(int code, const float* x, float* y, Py_ssize_t n)

# Codes beyond _epilogue.pxd's: the fused epilogue of elementwise layers and standalone unary maps.
cdef enum:
    ACT_SILU = 9
    ACT_GELU = 10
    ACT_GELU_TANH = 11
    ACT_ERF = 12
    ACT_EXP = 13
    ACT_LAST = 13

ctypedef struct AddT:
    char _
ctypedef struct SubT:
    char _
ctypedef struct MulT:
    char _
ctypedef struct DivT:
    char _
ctypedef fused OpT:
    AddT
    SubT
    MulT
    DivT

cdef inline float _apply(OpT* tag, float a, float b) noexcept nogil:
    if OpT is AddT:
        return a + b
    elif OpT is SubT:
        return a - b
    elif OpT is MulT:
        return a * b
    else:
        return a / b


cdef inline void _row(OpT* tag, float* o, const float* a, Py_ssize_t sa, const float* b, Py_ssize_t sb,
                      Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef float s
    if sa == 1 and sb == 1:
        for i in range(n):
            o[i] = _apply(tag, a[i], b[i])
    elif sa == 1 and sb == 0:
        s = b[0]
        for i in range(n):
            o[i] = _apply(tag, a[i], s)
    elif sa == 0 and sb == 1:
        s = a[0]
        for i in range(n):
            o[i] = _apply(tag, s, b[i])
    else:
        for i in range(n):
            o[i] = _apply(tag, a[i * sa], b[i * sb])


cdef inline void _act_row(float* o, Py_ssize_t n, int act, float p0, float p1, float slope) noexcept nogil:
    # The branch-free activations get loops of their own, which vectorise (the compiler does not
    # unswitch activate()'s chain of tests); the transcendental ones are wb_vmath.h's loops.
    cdef Py_ssize_t i
    cdef float v, t
    if act == ACT_NONE:
        return
    if act == ACT_RELU:
        for i in range(n):
            v = o[i]
            o[i] = 0 if v < 0 else v   # NaN stays NaN, as in ONNX Runtime
    elif act == ACT_CLIP:
        for i in range(n):
            v = o[i]
            v = p0 if v < p0 else v
            o[i] = p1 if v > p1 else v
    elif act == ACT_LEAKY or act == ACT_PRELU:
        t = p0 if act == ACT_LEAKY else slope
        for i in range(n):
            v = o[i]
            o[i] = v if v >= 0 else v * t
    elif act == ACT_HARDSIGMOID:
        for i in range(n):
            v = p0 * o[i] + p1
            v = 0 if v < 0 else v
            o[i] = 1 if v > 1 else v
    elif act == ACT_HARDSWISH:
        for i in range(n):
            v = o[i]
            t = v * <float> (1.0 / 6.0) + <float> 0.5
            t = 0 if t < 0 else t
            o[i] = v * (1 if t > 1 else t)
    elif act == ACT_SIGMOID or act == ACT_TANH or ACT_SILU <= act <= ACT_LAST:
        wbm_map(act, o, o, n)
    else:
        for i in range(n):
            o[i] = activate(o[i], act, p0, p1, slope)
