"""Data movement of bfloat16 tensors, on the float32 routines' own kernels, which move bytes:

- ``cpu:bfloat16:{nchw,nhwc}/copy``: Concat and Split (row-block copies, any element size);
- ``cpu:bfloat16:nchw/view``: Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout as views;
- ``cpu:bfloat16:nhwc/gather``: Pad, Slice and nearest Resize of NHWC images that leave the
  channel axis whole and have an even number of channels.  The gather then moves whole pixels, so
  pairs of bfloat16 channels travel as one 4-byte element through ``gather4``: the image is
  viewed as float32 with C/2 channels (a Pad's fill is its bfloat16 doubled into such a pair).

So a network's concatenations, reshapes, pads, crops and upsamplings keep it in bfloat16 between
convolutions, where otherwise each would cost a cast out and back.
"""
import ml_dtypes
import numpy as np

from ..ir.graph import NCHW, NHWC
from . import conv_bf16
from .eltwise import as_stored
from .tensor_ops import _Blocks, ViewNchw
from .whole_pixels import _WholePixels

BF16 = np.dtype(ml_dtypes.bfloat16)


class _Bf16Moves:
    dtype = "bfloat16"
    requires = conv_bf16.REQUIRES

    @classmethod
    def available(cls):
        # nothing here needs the instructions, but the tensors come only from routines that do
        return conv_bf16._kernels() is not None


class _BlocksBf16(_Bf16Moves, _Blocks, register=False):
    @classmethod
    def applies(cls, layer, specs):
        return (cls.available() and super().applies(layer, specs)
                and all(s is None or s.dtype == "float32" for s in list(specs) + list(layer.out_specs)))

    @classmethod
    def prepare(cls, layer):
        return {i: as_stored(v, cls.layout == NHWC).astype(BF16) for i, v in layer.consts.items()}


class BlocksNchwBf16(_BlocksBf16):
    layout = NCHW


class BlocksNhwcBf16(_BlocksBf16):
    layout = NHWC


class ViewNchwBf16(_Bf16Moves, ViewNchw):
    @classmethod
    def applies(cls, layer, specs):
        return cls.available() and super().applies(layer, specs) and specs[0].dtype == "float32"


class GatherNhwcBf16(_Bf16Moves, _WholePixels):
    lanes = 2

    @classmethod
    def _fill(cls, layer):
        if layer.op != "Pad":
            return np.float32(0)
        half = np.array(layer.attrs.get("value", 0.0), np.float32).astype(BF16).view(np.uint16).astype(np.uint32)
        return np.array(half << 16 | half, np.uint32).view(np.float32)[()]
