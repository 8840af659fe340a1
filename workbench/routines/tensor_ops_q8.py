"""Data movement of qint8 (uint8) tensors, on the float32 routines' own kernels, which move bytes:

- ``cpu:qint8:{nchw,nhwc}/copy``: Split (row-block copies, any element size);
- ``cpu:qint8:nhwc/gather``: Slice and nearest Resize of NHWC images that leave the channel
  axis whole and have a multiple of four channels: the gather moves whole pixels, four uint8
  channels at a time as one 4-byte element through ``gather4`` (as the bfloat16 routine moves
  pairs).

Their outputs hold their input's integers, so calibration gives them the input's parameters
(:func:`~workbench.tuning.ranges.share_passthrough`); where a model's own parameters differ
these routines do not apply.
"""
import numpy as np

from ..ir.graph import NCHW, NHWC
from .eltwise import kernels
from .pool_q8 import _MovesIntegers
from .tensor_ops import _Blocks, _Gather


class _SplitQ8(_MovesIntegers, _Blocks, register=False):
    op = "Split"

    @classmethod
    def applies(cls, layer, specs):
        return (cls.available() and not layer.consts and _Blocks.applies(layer, specs)
                and all(s is None or s.dtype == "float32" for s in list(specs) + list(layer.out_specs)))

    @classmethod
    def prepare(cls, layer, quant=None):
        return _MovesIntegers.prepare(layer, quant)


class SplitNchwQ8(_SplitQ8):
    layout = NCHW


class SplitNhwcQ8(_SplitQ8):
    layout = NHWC


class GatherNhwcQ8(_MovesIntegers, _Gather):
    op = ("Slice", "Resize", "Upsample")
    layout = NHWC
    # whole buffers only: a channel slice of a buffer has no whole groups of four
    strided_in = strided_out = False

    @classmethod
    def applies(cls, layer, specs):
        shape = specs[0].shape
        if not (cls.available() and len(shape) == 4 and shape[1] % 4 == 0 and _Gather.applies(layer, specs)):
            return False
        tables = cls._tables(layer, shape)
        return tables[3].size == shape[1] and bool(np.all(tables[3] == np.arange(shape[1])))

    @classmethod
    def prepare(cls, layer, quant=None):
        return _MovesIntegers.prepare(layer, quant)

    @classmethod
    def _call(cls, layer, state, args, outs):
        x, y = args[0], outs[0]
        n, h, w, c = x.shape
        # the logical tables are the image's; the groups' channel table is an identity of C/4
        tables = state.get(x.shape)
        if tables is None:
            tables = cls._tables(layer, (n, c, h, w))
            tables[3] = np.arange(c // 4, dtype=np.int32)
            state[x.shape] = tables
        k = kernels("tensor_ops")
        return k.gather4, (x.view(np.float32), y.view(np.float32), tables, np.float32(0)), k.Gather4
