"""``cpu:float32:{nchw,nhwc}/direct`` for EltwiseChain: the fused binary steps in one pass.

Broadcasting is turned into per-input element strides over the output's physical loop order,
as for a single binary layer (:func:`.eltwise.broadcast_loops`, at most four coalesced loops);
every intermediate has the output's shape, so the kernel (``kernels_pyx/eltwise_chain.pyx``)
keeps it in a block buffer of its own.  Inputs and the output may be channel slices of wider
NHWC buffers (a Concat's part).
"""
from types import SimpleNamespace

from ..graph import NCHW, NHWC
from . import Routine
from .eltwise import all_float32, as_stored, broadcast_loops, fused_activation, kernels

MAX_INPUTS = 8
MAX_STEPS = 8


def _physical_to_logical(shape, nhwc):
    return (shape[0], shape[3], shape[1], shape[2]) if nhwc and len(shape) == 4 else shape


def _steps(layer):
    """``(op, a, b, code, p0, p1)`` per step, or None when a step's activation has no code here."""
    out = layer.out_specs[0].shape
    steps = []
    for step in layer.attrs["steps"]:
        act = fused_activation(SimpleNamespace(attrs=step), out, extended=True)
        if act is None or act[3] is not None:
            return None
        steps.append((step["op"], step["args"][0], step["args"][1], act[0], act[1], act[2]))
    return steps


class _Chain(Routine, register=False):
    uses_blas = False
    op = "EltwiseChain"
    algo = "direct"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        if (any(s is None for s in specs) or not all_float32(specs, layer.out_specs) or len(specs) > MAX_INPUTS
                or len(layer.attrs["steps"]) > MAX_STEPS):
            return False
        out = layer.out_specs[0].shape
        if cls.layout == NHWC and len(out) != 4:
            return False
        nhwc = cls.layout == NHWC
        return (broadcast_loops(out, [(s.shape, nhwc and len(s.shape) == 4) for s in specs], nhwc) is not None
                and _steps(layer) is not None)

    @classmethod
    def prepare(cls, layer):
        return {"consts": {i: as_stored(v, cls.layout == NHWC) for i, v in layer.consts.items()},
                "steps": _steps(layer)}

    @classmethod
    def _operands(cls, layer, state, args, out):
        """``(inputs, dims, strides)``: the plan cached per shapes; where an array is a channel
        slice of a wider buffer, one loop per axis on its real strides."""
        xs = [state["consts"].get(i, x) for i, x in enumerate(args)]
        nhwc = cls.layout == NHWC
        logical = [_physical_to_logical(x.shape, nhwc) for x in xs]
        if all(v.flags.c_contiguous for v in xs + [out]):
            key = tuple(x.shape for x in xs)
            plan = state.get(key)
            if plan is None:
                plan = state[key] = broadcast_loops(layer.out_specs[0].shape,
                                                    [(s, nhwc and len(s) == 4) for s in logical], nhwc)
        else:
            def strides(v):
                return _physical_to_logical([x // v.itemsize for x in v.strides], nhwc and v.ndim == 4)
            plan = broadcast_loops(layer.out_specs[0].shape, [(s, nhwc and len(s) == 4, strides(v))
                                                              for s, v in zip(logical, xs)], nhwc, coalesce=False)
        dims, strides = plan
        return xs, dims, strides

    @classmethod
    def _kernel(cls, layer, state, args, out):
        xs, dims, strides = cls._operands(layer, state, args, out)
        return kernels("eltwise_chain").Chain(xs, strides, out, dims, state["steps"])

    @classmethod
    def bind(cls, layer, state, args, outs):
        return cls._kernel(layer, state, args, outs[0])

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._kernel(layer, state, args, outs[0])(num_threads)


class ChainNchw(_Chain):
    layout = NCHW


class ChainNhwc(_Chain):
    layout = NHWC
    strided_in = strided_out = True   # a residual squeeze-excite's sum writes its Concat part
