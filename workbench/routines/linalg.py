"""``cpu:float32:nchw/blas``: Gemm and MatMul through SGEMM (``workbench._kernels.linalg``).

Gemm folds ``beta * C`` into a per-column bias or a full (M, N) addend once, in :meth:`prepare`,
and applies it with the fused activation in the kernel's epilogue.  MatMul with a 2-D (or 1-D)
right operand is one GEMM over all the left operand's rows; a batched right operand runs one GEMM
per batch with NumPy broadcasting of the batch dimensions (offset tables built once per shape).
MatMul of any rank (attention's (B, H, M, K) @ (B, H, K, N)) runs its batches in parallel, one whole
product per thread at a time.  Inputs and outputs are in native (channels-first) order: 4-D
operands are not activations in a spatial layout.
"""
import numpy as np

from ..ir.graph import NCHW
from . import Routine
from .eltwise import all_float32, as_stored, fused_activation, kernels, memo


def _activation(layer):
    """(code, p0, p1, slope) for the kernels: a per-channel slope only on 2-D outputs (per column)."""
    shape = layer.out_specs[0].shape
    act = fused_activation(layer, shape)
    if act is None or (act[3] is not None and len(shape) != 2):
        return None
    return act


class GemmBlas(Routine):
    op = "Gemm"
    layout = NCHW
    algo = "blas"
    priority = 10

    @classmethod
    def _c_role(cls, layer, c_shape):
        """How C enters the epilogue: "bias" (one value per column) or "residual" (M x N)."""
        m, n = layer.out_specs[0].shape
        return "bias" if int(np.prod(c_shape)) == 1 or tuple(c_shape) in ((n,), (1, n)) else "residual"

    @classmethod
    def applies(cls, layer, specs):
        c = specs[2] if len(specs) > 2 else None
        # A run-time C is read in place: only without scaling, and per column or full-size.
        c_ok = (c is None or 2 in layer.consts
                or (layer.attrs["beta"] == 1.0 and tuple(c.shape) in ((layer.out_specs[0].shape[1],),
                                                                        (1, layer.out_specs[0].shape[1]),
                                                                        tuple(layer.out_specs[0].shape))))
        return (all_float32(specs, layer.out_specs) and len(specs[0].shape) == 2 and len(specs[1].shape) == 2
                and c_ok and _activation(layer) is not None)

    @classmethod
    def prepare(cls, layer):
        m, n = layer.out_specs[0].shape
        bias = residual = None
        c = layer.consts.get(2)
        if c is not None and layer.attrs["beta"] != 0:
            c = np.asarray(c, np.float32) * np.float32(layer.attrs["beta"])
            if cls._c_role(layer, c.shape) == "bias":
                bias = np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (n,)), np.float32)
            else:
                residual = np.ascontiguousarray(np.broadcast_to(c, (m, n)), np.float32)
        b = layer.consts.get(1)
        return {"b": None if b is None else as_stored(b, False), "bias": bias, "residual": residual,
                "c_const": 2 in layer.consts, "act": _activation(layer)}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        a = layer.attrs
        b = state["b"] if state["b"] is not None else args[1]
        bias, residual = state["bias"], state["residual"]
        c = args[2] if len(args) > 2 and not state["c_const"] else None
        if c is not None and a["beta"] != 0:
            if cls._c_role(layer, c.shape) == "bias":
                bias = c
            else:
                residual = c
        code, p0, p1, slope = state["act"]
        kernels("linalg").gemm(args[0], b, outs[0], a["transA"], a["transB"], a["alpha"], bias, residual,
                               code, p0, p1, slope, num_threads)


def _matmul_plan(a_shape, b_shape):
    """How to run ``a @ b``: ("single", M_total, N, K) or ("batched", a_off, b_off, M, N, K)."""
    a2 = (1,) + tuple(a_shape) if len(a_shape) == 1 else tuple(a_shape)
    b2 = tuple(b_shape) + (1,) if len(b_shape) == 1 else tuple(b_shape)
    (m, k), (_, n) = a2[-2:], b2[-2:]
    a_batch, b_batch = a2[:-2], b2[:-2]
    if not b_batch or int(np.prod(b_batch)) == 1 and len(b_batch) <= len(a_batch):
        return ("single", int(np.prod(a_batch, dtype=np.int64)) * m, n, k)
    batch = np.broadcast_shapes(a_batch, b_batch)

    def offsets(own, span):
        index = np.arange(int(np.prod(own, dtype=np.int64)), dtype=np.int64).reshape(own)
        return np.ascontiguousarray(np.broadcast_to(index, batch).reshape(-1) * span)
    return ("batched", offsets(a_batch, m * k), offsets(b_batch, k * n), m, n, k)


class MatMulBlas(Routine):
    op = "MatMul"
    layout = NCHW
    algo = "blas"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        ranks = [len(s.shape) for s in specs] + [len(layer.out_specs[0].shape)]
        # A fused bias (passes/fuse_matmul_bias.py) comes only with a constant 2-D B: one GEMM.
        return (all_float32(specs, layer.out_specs) and min(ranks[:2]) >= 1
                and (2 not in layer.consts or ranks[1] == 2)
                and int(np.prod(layer.out_specs[0].shape, dtype=np.int64)) > 0
                and specs[0].shape[-1] > 0 and _activation(layer) is not None)

    @classmethod
    def prepare(cls, layer):
        return {"consts": {i: as_stored(v, False) for i, v in layer.consts.items()}, "act": _activation(layer)}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        a, b = (state["consts"].get(i, args[i]) for i in (0, 1))
        plan = memo(state, (a.shape, b.shape), lambda: _matmul_plan(a.shape, b.shape))
        code, p0, p1, slope = state["act"]
        k = kernels("linalg")
        if plan[0] == "single":
            _, rows, n, kk = plan
            k.gemm(a.reshape(rows, kk), b.reshape(kk, n), outs[0].reshape(rows, n), False, False, 1.0,
                   state["consts"].get(2), None, code, p0, p1, slope, num_threads)
        else:
            _, a_off, b_off, m, n, kk = plan
            k.batched_matmul(a, b, outs[0], a_off, b_off, m, n, kk, code, p0, p1, slope, num_threads)
