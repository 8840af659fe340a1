"""``cpu:float32:nchw/reference``: the NumPy reference of every op, as a routine.

The fallback that always applies (any dtype, despite the name's ``float32``: the descriptor
names the family).  It allocates its result and copies it into the output buffer, so it is
never fast; the fast families exist for that.
"""
import numpy as np

from ..ir import ops
from . import Routine

#: The ops whose NumPy reference multiplies matrices (np.matmul, ``@``), which the BLAS runs; the
#: others' references never call it, so a plan that falls back to them for a Slice or a Pad does
#: not hold the BLAS at one thread for each run (:attr:`Routine.uses_blas`).
BLAS_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "SoftmaxDot", "LSTM"})


class _Reference(Routine, register=False):
    algo = "reference"
    priority = -100
    op_impl = None

    @classmethod
    def applies(cls, layer, specs):
        return True

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        for out, value in zip(outs, cls.op_impl.compute(layer, args)):
            np.copyto(out, value, casting="unsafe")


for _name, _impl in sorted((k, v) for k, v in ops.OPS.items() if k != "If"):   # an If runs graphs: control_flow.py
    type(f"Reference{_name}", (_Reference,), {"op": _name, "op_impl": _impl, "__module__": __name__,
                                              "uses_blas": _name in BLAS_OPS})
