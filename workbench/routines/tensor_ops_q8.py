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
from ..ir.graph import NCHW, NHWC
from .pool_q8 import _MovesIntegers
from .tensor_ops import _Blocks
from .whole_pixels import _WholePixels


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


class GatherNhwcQ8(_MovesIntegers, _WholePixels):
    op = ("Slice", "Resize", "Upsample")
    lanes = 4

    @classmethod
    def prepare(cls, layer, quant=None):
        return _MovesIntegers.prepare(layer, quant)
