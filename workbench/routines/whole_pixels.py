"""Gathers of NHWC images whose elements are narrower than 4 bytes (bfloat16 pairs, uint8 fours):
Pad, Slice and nearest Resize that leave the channel axis whole move whole pixels, so several
channels travel as one 4-byte element through the float32 routines' ``gather4``.  The bfloat16
(``tensor_ops_bf16.py``) and qint8 (``tensor_ops_q8.py``) routines build on it."""
import numpy as np

from ..ir.graph import NHWC
from .eltwise import kernels
from .tensor_ops import _Gather


class _WholePixels(_Gather, register=False):
    """The gather of NHWC images of a narrower type that leave the channel axis whole: it moves
    whole pixels, so ``lanes`` channels travel as one 4-byte element through ``gather4`` (the
    image viewed as float32 with C / lanes channels)."""

    layout = NHWC
    lanes = 1
    # whole buffers only: a channel slice of a buffer has no whole groups of lanes
    strided_in = strided_out = False

    @classmethod
    def applies(cls, layer, specs):
        shape = specs[0].shape
        if not (cls.available() and len(shape) == 4 and shape[1] % cls.lanes == 0 and _Gather.applies(layer, specs)):
            return False
        tables = cls._tables(layer, shape)
        return tables[3].size == shape[1] and bool(np.all(tables[3] == np.arange(shape[1])))

    @classmethod
    def _fill(cls, layer):
        """A Pad's fill as one 4-byte element of ``lanes`` channels."""
        return np.float32(0)

    @classmethod
    def _call(cls, layer, state, args, outs):
        x, y = args[0], outs[0]
        n, h, w, c = x.shape
        # the logical tables are the image's; the groups' channel table is an identity of C / lanes
        tables = state.get(x.shape)
        if tables is None:
            tables = cls._tables(layer, (n, c, h, w))
            tables[3] = np.arange(c // cls.lanes, dtype=np.int32)
            state[x.shape] = tables
        k = kernels("tensor_ops")
        return k.gather4, (x.view(np.float32), y.view(np.float32), tables, cls._fill(layer)), k.Gather4
