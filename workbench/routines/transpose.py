"""Transpose.

- ``nchw/copy``: any permutation; (0, 2, 3, 1) and (0, 3, 1, 2) of a 4-D float32 tensor through
  the layout kernels, the rest by NumPy.
- ``nhwc/view``: (0, 2, 3, 1) of a channels-last tensor, a view of its buffer (a detector head's
  maps transposed first: :mod:`workbench.ir.passes.transpose_first`).
"""
import numpy as np

from ..ir.graph import NCHW, NHWC
from . import Routine
from .eltwise import kernels


class TransposeNchw(Routine):
    uses_blas = False
    op = "Transpose"
    layout = NCHW
    algo = "copy"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        return 0 not in layer.consts and specs[0].size > 0

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        perm = layer.attrs["perm"]
        perm = list(range(x.ndim))[::-1] if perm is None else [p % x.ndim for p in perm]
        if x.ndim == 4 and x.dtype == np.float32 and perm in ([0, 2, 3, 1], [0, 3, 1, 2]):
            layout = kernels("layout")
            (layout.nchw_to_nhwc if perm == [0, 2, 3, 1] else layout.nhwc_to_nchw)(x, y, num_threads)
        else:
            np.copyto(y, x.transpose(perm))


class TransposeToChannelsLast(Routine):
    """Transpose (0, 2, 3, 1) of a channels-last tensor: its NHWC buffer already holds the
    result's elements in order, so the output (plain, channels-first rules) is a view of it."""

    uses_blas = False
    op = "Transpose"
    layout = NHWC
    algo = "view"
    priority = 20
    view_of_input = 0

    @classmethod
    def applies(cls, layer, specs):
        perm = layer.attrs["perm"]
        return (0 not in layer.consts and len(specs[0].shape) == 4 and specs[0].size > 0 and perm is not None
                and [p % 4 for p in perm] == [0, 2, 3, 1])

    @classmethod
    def output_layouts(cls, layer):
        return [NCHW]

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        # Run on separate buffers (profiling, the checker): the NHWC input's elements, as they lie.
        np.copyto(outs[0], args[0].reshape(outs[0].shape))
