"""Concat and Split without copies: which tensors live in a slice of another tensor's buffer.

A compiled model's Concat copies every part into its output, and a Split copies every part out
of its input; on detectors built of CSP blocks those copies are a share of the run worth having
back, all memory traffic.  Here the executor's plan gives

- a **Split's outputs** views of its input's buffer (the ranges the Split would copy), and
- a **Concat's parts** the slices of its output's buffer they would be copied into, so that the
  part's producer writes its result straight into place (a Concat of a whole Split reads the
  Split's input: :mod:`workbench.passes.rejoin_splits`).

The Concat and Split routines then copy only what is not in place already (nothing, where all is).

Along an axis with nothing but size-1 axes in front of it (NCHW channels at batch 1) such a slice
is itself contiguous and any routine can read or write it.  Otherwise (NHWC channels) it is an
array of evenly spaced rows, and every routine that writes or reads it must say it takes those
(:attr:`Routine.strided_out`, :attr:`Routine.strided_in`).  Graph inputs and outputs are never
slices of another tensor (a Concat that is a graph output still takes its parts in place), nor
are tensors that other buffers alias already (reshape views, residuals overwritten in place);
an adapt writes only a contiguous slice.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slice:
    """A key's buffer is ``base``'s, sliced ``start:stop`` along physical axis ``axis``."""

    base: tuple
    axis: int
    start: int
    stop: int

    def of(self, array):
        index = [slice(None)] * array.ndim
        index[self.axis] = slice(self.start, self.stop)
        return array[tuple(index)]


def _contiguous(shape, axis):
    return int(np.prod(shape[:axis], dtype=np.int64)) == 1


def plan_slices(plan, alias, routines, shape_of, physical_axis, protected):
    """Slices for the Split outputs and Concat parts of ``plan`` that can share a buffer.

    Parameters
    ----------
    plan : list of (kind, payload, input keys, output keys)
        The compiled model's steps (``kind`` "layer" or "adapt").
    alias : dict
        Key -> key whose buffer it already shares (views, in-place outputs); left unchanged.
    routines : dict
        Layer name -> routine.
    shape_of : callable
        Key -> physical shape.
    physical_axis : callable
        (layer, key of its whole tensor) -> the physical axis the layer splits or joins.
    protected : set
        Keys that keep their own buffer (graph inputs and outputs).

    Returns
    -------
    dict
        Key -> :class:`Slice`, for keys not in ``alias``.
    """
    writers, readers = {}, {}
    for step, (kind, payload, ins, outs) in enumerate(plan):
        for k in outs:
            writers.setdefault(k, []).append((step, kind, payload))
        for k in ins:
            if k is not None:
                readers.setdefault(k, []).append((step, kind, payload))
    targets = set(alias.values())
    slices = {}

    def strided_ok(key, axis):
        """``key`` may be a slice along ``axis`` that is not contiguous: the last axis (evenly
        spaced rows, the only kind the routines take), and every step that writes or reads it
        says it takes those."""
        return (axis == len(shape_of(key)) - 1
                and all(kind == "layer" and routines[p.name].strided_out for _, kind, p in writers.get(key, []))
                and all(kind == "layer" and routines[p.name].strided_in for _, kind, p in readers.get(key, [])))

    def children_ok(key, axis, contiguous):
        """The views already cut from ``key`` stay rows of one stride once ``key`` is a slice."""
        return all(s.axis == axis and (contiguous or strided_ok(k, axis)) for k, s in slices.items() if s.base == key)

    def contiguous_buffer(key):
        """``key``'s array is contiguous: its own buffer, or contiguous slices all the way down."""
        sl = slices.get(key)
        return sl is None or (_contiguous(shape_of(sl.base), sl.axis) and contiguous_buffer(sl.base))

    def free(key):
        return key not in alias and key not in targets and key not in protected and key not in slices

    def is_blocks(layer):
        return getattr(routines[layer.name], "algo", "") == "copy" and layer.op in ("Concat", "Split")

    # Split outputs: views of the input.
    for kind, layer, ins, outs in plan:
        if kind != "layer" or layer.op != "Split" or not is_blocks(layer) or ins[0] is None:
            continue
        base = ins[0]
        if base in alias or base in targets or base in protected:
            continue
        axis = physical_axis(layer, base)
        contiguous = _contiguous(shape_of(base), axis)
        start = 0
        for k in outs:
            width = shape_of(k)[axis]
            if free(k) and len(writers.get(k, [])) == 1 and (contiguous or strided_ok(k, axis)):
                slices[k] = Slice(base, axis, start, start + width)
            start += width

    # Concat parts: slices of the output, the last Concat first so that nested ones chain.
    for kind, layer, ins, outs in reversed(plan):
        if kind != "layer" or layer.op != "Concat" or not is_blocks(layer):
            continue
        whole = outs[0]
        if whole in alias or whole in targets:
            continue
        axis = physical_axis(layer, whole)
        # A slice of a slice along another axis is no longer rows of one stride.
        if whole in slices and slices[whole].axis != axis:
            continue
        contiguous = _contiguous(shape_of(whole), axis) and contiguous_buffer(whole)
        parts = [k for k in ins if k is not None]
        if len(parts) != len(ins) or len(set(parts)) != len(parts):
            continue   # constant parts, or one tensor twice: leave it to the copy
        start = 0
        for key in parts:
            width = shape_of(key)[axis]
            # An adapt writes whole arrays: a contiguous slice (a detector head's NCHW Concat).
            if (free(key) and len(writers.get(key, [])) == 1 and (contiguous or strided_ok(key, axis))
                    and children_ok(key, axis, contiguous)):
                slices[key] = Slice(whole, axis, start, start + width)
            start += width
    return slices

