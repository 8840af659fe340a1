"""``cpu:float32:{nchw,nhwc}/direct`` for EltwiseChain: the fused binary steps in one pass.

Broadcasting is turned into per-input element strides over the output's physical loop order,
as for a single binary layer (:func:`.loops.broadcast_loops`, at most four coalesced loops);
every intermediate has the output's shape, so the kernel (``kernels_pyx/eltwise_chain.pyx``)
keeps it in a block buffer of its own.  Inputs and the output may be channel slices of wider
NHWC buffers (a Concat's part).

Two loop nests read an input through a row pattern instead of a stride:

- in NHWC, a per-channel operand (``x * se``) left the innermost loop one pixel long; the pixels
  and channels become one row, the operand read periodically (:func:`periodic_rows`);
- a chain that reads a nearest upsample's source where it lies (``attrs["upsample"]``,
  ``passes/fuse_upsample_read.py``) loops over the source rows, each output row of one taking the
  source row repeated along it (:func:`upsample_nest`).
"""
from types import SimpleNamespace

import numpy as np

from ..ir.graph import NCHW, NHWC
from ..ir.ops.elementwise import upsample_factors
from . import Routine
from .eltwise import all_float32, as_stored, fused_activation, kernels, memo
from .loops import MAX_PATTERNS, MAX_PERIOD, broadcast_loops, periodic_rows

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


def upsample_nest(out_shape, shapes, upsample, nhwc):
    """``(dims, strides, rows)`` of a batch-1 chain whose inputs ``upsample`` (``{input: (fh,
    fw)}``, one factor pair for all) are read as nearest upsamples of themselves: loops over the
    source rows and their ``fh`` repeats, the row the output's (NHWC: pixels x channels; NCHW: one
    channel's), the sources' rows repeated along it; the other inputs the output's shape, one
    value per channel, or one value.  None where the chain is not of that form."""
    factors = set(tuple(f) for f in upsample.values())
    if len(out_shape) != 4 or out_shape[0] != 1 or len(factors) != 1:
        return None
    (fh, fw), (_, c, ho, wo) = factors.pop(), out_shape
    h, w = ho // fh, wo // fw
    dims = [1, h, fh, wo * c] if nhwc else [c, h, fh, wo]
    strides, rows = [], []
    for k, shape in enumerate(shapes):
        shape = (1,) * (4 - len(shape)) + tuple(shape)
        if k in upsample:
            if shape != (1, c, h, w):
                return None
            strides.append([0, w * c, 0, 0] if nhwc else [h * w, w, 0, 0])
            rows.append((c, fw) if nhwc else (1, fw))
        elif shape == (1, c, ho, wo):
            strides.append([0, fh * wo * c, wo * c, 1] if nhwc else [ho * wo, fh * wo, wo, 1])
            rows.append(None)
        elif shape == (1, 1, 1, 1):
            strides.append([0, 0, 0, 0])
            rows.append(None)
        elif shape == (1, c, 1, 1) and (not nhwc or c <= MAX_PERIOD):
            strides.append([0, 0, 0, 0] if nhwc else [1, 0, 0, 0])
            rows.append((c, 0) if nhwc else None)
        else:
            return None
    if sum(r is not None for r in rows) > MAX_PATTERNS:
        return None
    return dims, strides, rows


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
        if upsample_factors(layer):
            return (upsample_nest(out, [s.shape for s in specs], upsample_factors(layer), nhwc) is not None
                    and _steps(layer) is not None)
        return (broadcast_loops(out, [(s.shape, nhwc and len(s.shape) == 4) for s in specs], nhwc) is not None
                and _steps(layer) is not None)

    @classmethod
    def prepare(cls, layer):
        return {"consts": {i: as_stored(v, cls.layout == NHWC) for i, v in layer.consts.items()},
                "steps": _steps(layer)}

    @classmethod
    def _operands(cls, layer, state, args, out):
        """``(inputs, dims, strides, rows)``: the plan cached per shapes; where an array is a
        channel slice of a wider buffer, one loop per axis on its real strides."""
        xs = [state["consts"].get(i, x) for i, x in enumerate(args)]
        nhwc = cls.layout == NHWC
        logical = [_physical_to_logical(x.shape, nhwc) for x in xs]
        contiguous = all(v.flags.c_contiguous for v in xs + [out])
        upsample = upsample_factors(layer)
        if upsample and not contiguous:   # a Concat's part: the sources upsampled first
            xs = [_repeated(state, k, x, upsample[k], nhwc) if k in upsample else x for k, x in enumerate(xs)]
            logical = [_physical_to_logical(x.shape, nhwc) for x in xs]
        elif upsample:
            key = ("upsample",) + tuple(x.shape for x in xs)
            if key not in state:
                state[key] = upsample_nest(layer.out_specs[0].shape, logical, upsample, nhwc)
            return (xs, *state[key])
        if contiguous:
            key = tuple(x.shape for x in xs)
            plan = state.get(key)
            if plan is None:
                dims, strides = broadcast_loops(layer.out_specs[0].shape,
                                                [(s, nhwc and len(s) == 4) for s in logical], nhwc)
                plan = state[key] = periodic_rows(dims, strides)
            return (xs, *plan)

        def strides(v):
            return _physical_to_logical([x // v.itemsize for x in v.strides], nhwc and v.ndim == 4)
        dims, strides = broadcast_loops(layer.out_specs[0].shape, [(s, nhwc and len(s) == 4, strides(v))
                                                                   for s, v in zip(logical, xs)], nhwc, coalesce=False)
        # a per-channel operand of a channel slice's short rows: one pattern a job, not a row each
        rows = [(dims[3], 0) if list(st) == [0, 0, 0, 1] and dims[3] <= MAX_PERIOD else None for st in strides]
        if sum(r is not None for r in rows) > MAX_PATTERNS:
            rows = None
        return xs, dims, strides, rows

    @classmethod
    def _kernel(cls, layer, state, args, out):
        xs, dims, strides, rows = cls._operands(layer, state, args, out)
        return kernels("eltwise_chain").Chain(xs, strides, out, dims, state["steps"], rows)

    @classmethod
    def bind(cls, layer, state, args, outs):
        if upsample_factors(layer) and not all(v.flags.c_contiguous for v in list(args) + [outs[0]]):
            return None   # the sources are upsampled on each run (_operands)
        return cls._kernel(layer, state, args, outs[0])

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._kernel(layer, state, args, outs[0])(num_threads)


def _repeated(state, k, x, factors, nhwc):
    """``x`` (physical, 4-D) nearest-upsampled by ``factors`` (fh, fw) into input ``k``'s buffer
    in ``state`` (made once per shape): a broadcast copy, nothing allocated per run."""
    (fh, fw), (n, a, b, c) = factors, x.shape
    shape = (n, a * fh, b * fw, c) if nhwc else (n, a, b * fh, c * fw)
    buf = memo(state, ("upsampled", k, x.shape), lambda: np.empty(shape, x.dtype))
    if nhwc:   # (n, h, fh, w, fw, c) <- (n, h, 1, w, 1, c)
        np.copyto(buf.reshape(n, a, fh, b, fw, c), x[:, :, None, :, None, :])
    else:      # (n, c, h, fh, w, fw) <- (n, c, h, 1, w, 1)
        np.copyto(buf.reshape(n, a, b, fh, c, fw), x[:, :, :, None, :, None])
    return buf


class ChainNchw(_Chain):
    layout = NCHW


class ChainNhwc(_Chain):
    layout = NHWC
    strided_in = strided_out = True   # a residual squeeze-excite's sum writes its Concat part
