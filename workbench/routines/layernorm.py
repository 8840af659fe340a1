"""``cpu:float32:nchw/direct``: LayerNormalization over the trailing axes from ``axis``, with
constant scale and bias (``workbench._kernels.layernorm``).

The normalized axes are flattened into rows of ``cols`` elements, ``scale``/``bias`` broadcast
to them once in :meth:`prepare`.  The NumPy routine (``ufunc.py``) runs eight ufunc calls; on
the transformer blocks of PP-OCR recognisers (40 x 120) that took 45 us a layer.
"""
import numpy as np

from ..runtime import cpu
from ..ir.graph import NCHW
from . import Routine
from .eltwise import all_float32


def _kernels():
    return cpu.kernel_module("layernorm")


class LayerNormRows(Routine):
    uses_blas = False
    op = "LayerNormalization"
    layout = NCHW
    algo = "direct"
    priority = 12

    @classmethod
    def _geometry(cls, layer, shape):
        axis = layer.attrs["axis"] % len(shape)
        return int(np.prod(shape[:axis], dtype=np.int64)), int(np.prod(shape[axis:], dtype=np.int64)), shape[axis:]

    @classmethod
    def applies(cls, layer, specs):
        shape = specs[0].shape
        if _kernels() is None or len(shape) == 0 or not all_float32(specs[:1], layer.out_specs) or 1 not in layer.consts:
            return False
        _, cols, tail = cls._geometry(layer, shape)
        if cols < 1 or specs[0].size == 0:
            return False
        has_bias = len(layer.inputs) > 2 and bool(layer.inputs[2])
        if has_bias and 2 not in layer.consts:
            return False
        for i in (1, 2) if has_bias else (1,):
            try:
                np.broadcast_to(layer.consts[i], tail)
            except ValueError:
                return False
        return True

    @classmethod
    def prepare(cls, layer):
        rows, cols, tail = cls._geometry(layer, layer.out_specs[0].shape)

        def flat(i):
            if i not in layer.consts:
                return None
            return np.ascontiguousarray(np.broadcast_to(np.asarray(layer.consts[i], np.float32), tail).reshape(-1))
        return {"rows": rows, "cols": cols, "scale": flat(1), "bias": flat(2), "eps": layer.attrs["epsilon"]}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        _kernels().layernorm(args[0], outs[0], state["rows"], state["cols"], state["scale"], state["bias"],
                             state["eps"], num_threads)

    @classmethod
    def bind(cls, layer, state, args, outs):
        return _kernels().LayerNorm(args[0], outs[0], state["rows"], state["cols"], state["scale"], state["bias"],
                                    state["eps"])
