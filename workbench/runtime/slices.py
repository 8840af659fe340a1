"""Concat and Split without copies: which tensors live in a slice of another tensor's buffer.

A compiled model's Concat copies every part into its output, and a Split copies every part out
of its input; on detectors built of CSP blocks those copies are a share of the run worth having
back, all memory traffic.  Here the executor's plan gives

- a **Split's outputs** views of its input's buffer (the ranges the Split would copy), and
- a **Concat's parts** the slices of its output's buffer they would be copied into, so that the
  part's producer writes its result straight into place (a Concat of a whole Split reads the
  Split's input: :mod:`workbench.ir.passes.rejoin_splits`).

The Concat and Split routines then copy only what is not in place already (nothing, where all is).

Along an axis with nothing but size-1 axes in front of it (NCHW channels at batch 1) such a slice
is itself contiguous and any routine can read or write it.  Otherwise (NHWC channels) it is an
array of evenly spaced rows, and every routine that writes or reads it must say it takes those
(:attr:`Routine.strided_out`, :attr:`Routine.strided_in`).  Graph inputs and outputs are never
slices of another tensor (a Concat that is a graph output still takes its parts in place), nor
are tensors that other buffers alias (residuals overwritten in place), except by reshapes where
the slice is contiguous, or, for a Split output, by reshapes that are views of the strided slice
too and that nothing reads but the output copy (a detector head's box channels, transposed to a
channels-last graph output: :mod:`workbench.ir.passes.transpose_first`).

A part that is a reshape of another tensor (a detector head flattens each scale's (N, C, H, W)
map to (N, C, H*W) before joining the scales along that last axis) puts that tensor in place
instead, reshaped: the slice whole, when it is contiguous, or, along the last axis, an NCHW
tensor whose (H, W) planes lie a row of the whole apart, where its one writer is an adapt that
writes such planes (:attr:`Adapt.planes_out`, the NHWC to NCHW transpose), or a Concat of channel
ranges each written so (the scale's box and class maps), which then copies nothing.  Nothing
else may read those tensors, and the Concat alone may read the reshape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Slice:
    """A key's buffer is ``base``'s, sliced ``start:stop`` along physical axis ``axis`` (and
    reinterpreted as ``shape``, when given)."""

    base: tuple
    axis: int
    start: int
    stop: int
    shape: tuple = None

    def of(self, array):
        index = [slice(None)] * array.ndim
        index[self.axis] = slice(self.start, self.stop)
        part = array[tuple(index)]
        return part if self.shape is None else reshaped(part, self.shape)


def reshaped(array, shape):
    """``array`` as ``shape`` without copying (ValueError where its strides do not allow it)."""
    view = array.view()
    try:
        view.shape = shape
    except AttributeError as e:
        raise ValueError(f"a {array.shape} view with strides {array.strides} cannot be seen as {shape}") from e
    return view


def _viewable(part, whole, shape):
    """A slice of shape ``part`` of a C-contiguous ``whole`` (rows of one stride) can be seen as
    ``shape`` without copying (asked of a probe with the slice's strides in 4-byte elements: only
    their ratios matter)."""
    strides = [int(np.prod(whole[a + 1:], dtype=np.int64)) * 4 for a in range(len(whole))]
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), tuple(part), strides)
    try:
        reshaped(probe, tuple(shape))
    except ValueError:
        return False
    return True


def _contiguous(shape, axis):
    return int(np.prod(shape[:axis], dtype=np.int64)) == 1


def plan_slices(plan, alias, routines, shape_of, physical_axis, protected, reshapes=frozenset(), inputs=frozenset()):
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
    reshapes : set
        Keys of ``alias`` that reinterpret their base in the same byte order (views, not outputs
        written over an input in place).
    inputs : set
        The keys of ``protected`` that are graph inputs copied into a buffer of their own: Split
        outputs may be views of those.

    Returns
    -------
    dict
        Key -> :class:`Slice`, for keys not in ``alias``.
    """
    writers, readers = {}, {}
    for step, (kind, payload, ins, outs) in enumerate(plan):
        for k in outs:
            writers.setdefault(k, []).append((step, kind, payload))
        for i, k in enumerate(ins):
            if k is not None:
                readers.setdefault(k, []).append((step, kind, payload, i))
    targets = set(alias.values())
    slices = {}

    def strided_ok(key, axis):
        """``key`` may be a slice along ``axis`` that is not contiguous: the last axis (evenly
        spaced rows, the only kind the routines take), and every step that writes or reads it
        says it takes those."""
        return (axis == len(shape_of(key)) - 1
                and all(kind == "layer" and routines[p.name].strided_out for _, kind, p in writers.get(key, []))
                and all(kind == "layer" and routines[p.name].reads_strided(p, i)
                        for _, kind, p, i in data_readers(key)))

    def children_ok(key, axis, contiguous):
        """The views already cut from ``key`` stay rows of one stride once ``key`` is a slice."""
        return all(s.axis == axis and (contiguous or strided_ok(k, axis)) for k, s in slices.items() if s.base == key)

    def contiguous_buffer(key):
        """``key``'s array is contiguous: its own buffer, or contiguous slices all the way down."""
        sl = slices.get(key)
        return sl is None or (_contiguous(shape_of(sl.base), sl.axis) and contiguous_buffer(sl.base))

    def free(key, contiguous=False, whole=None):
        """``key`` has a buffer of its own to give up: no view of another, no graph input or
        output, no slice yet, and no other buffer aliases it, unless those are only reshapes of
        it and either the slice is contiguous (they stay valid views of it) or, given the
        ``whole`` shape it is a slice of, they are views of the strided slice too and nothing
        reads them but as graph outputs (which are copied out, whatever their strides)."""
        if key in alias or key in protected or key in slices:
            return False
        views = [k for k, v in alias.items() if v == key]
        if not views:
            return True
        if not all(k in reshapes for k in views):
            return False
        if contiguous:
            return True
        return whole is not None and all(not data_readers(k) and _viewable(shape_of(key), whole, shape_of(k))
                                         for k in views)

    def data_readers(key):
        """The steps that read ``key``'s elements (not the view layers that reinterpret it)."""
        return [r for r in readers.get(key, []) if r[1] != "layer" or routines[r[2].name].view_of_input is None]

    def planes_writer(key, step=None):
        """``key`` is written once, by an adapt that writes its planes apart, and read by
        nothing but ``step``."""
        w = writers.get(key, [])
        return (len(w) == 1 and w[0][1] == "adapt" and w[0][2].planes_out
                and all(r[0] == step for r in data_readers(key)))

    def reshaped_part(key, axis, contiguous):
        """``(tensor, [(part, Slice)])``: the tensor ``key`` reshapes, when it can take ``key``'s
        place in the whole (see the module docstring), and the slices of that tensor its own
        Concat's parts take when the planes come from them; else None."""
        x = alias.get(key)
        if (key not in reshapes or key in protected or x is None or x in alias or x in protected or x in slices
                or [k for k, v in alias.items() if v == x] != [key] or data_readers(x)
                or len(data_readers(key)) != 1 or len(writers.get(x, [])) != 1
                or any(s.base == x for s in slices.values())):
            return None
        if contiguous:
            return x, []
        ks, kx = shape_of(key), shape_of(x)
        if not (axis == len(ks) - 1 and len(kx) == 4 and len(ks) == 3 and tuple(kx[:2]) == tuple(ks[:2])
                and kx[2] * kx[3] == ks[2]):
            return None
        step, kind, writer = writers[x][0]
        if planes_writer(x):
            return x, []
        # A Concat of channel planes (a head's box and class maps, each through its adapt) whose
        # parts can all write their planes in place: the Concat then copies nothing.
        if kind != "layer" or writer.op != "Concat" or not is_blocks(writer) or physical_axis(writer, x) != 1:
            return None
        parts, subs, start = plan[step][2], [], 0
        if len(set(parts)) != len(parts):
            return None
        for q in parts:
            if q is None or not free(q) or not planes_writer(q, step):
                return None
            subs.append((q, Slice(x, 1, start, start + shape_of(q)[1])))
            start += shape_of(q)[1]
        return x, subs

    def is_blocks(layer):
        return getattr(routines[layer.name], "algo", "") == "copy" and layer.op in ("Concat", "Split")

    # Split outputs: views of the input (which may be a graph input, or a reshape of a tensor
    # that nothing overwrites in place).
    for kind, layer, ins, outs in plan:
        if kind != "layer" or layer.op != "Split" or not is_blocks(layer) or ins[0] is None:
            continue
        base = ins[0]
        whole = alias.get(base, base)
        if ((base in alias and base not in reshapes) or any(v == whole and k not in reshapes for k, v in alias.items())
                or any(k in protected and k not in inputs for k in (base, whole))):
            continue
        axis = physical_axis(layer, base)
        contiguous = _contiguous(shape_of(base), axis)
        start = 0
        for k in outs:
            width = shape_of(k)[axis]
            if (free(k, contiguous, shape_of(base)) and len(writers.get(k, [])) == 1
                    and (contiguous or strided_ok(k, axis))):
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
            # An adapt writes only a contiguous slice of its own (a detector head's NCHW Concat);
            # planes apart only under a reshape (reshaped_part).
            if (free(key, contiguous) and len(writers.get(key, [])) == 1 and (contiguous or strided_ok(key, axis))
                    and children_ok(key, axis, contiguous)):
                slices[key] = Slice(whole, axis, start, start + width)
            elif (found := reshaped_part(key, axis, contiguous)) is not None:
                x, subs = found
                slices[x] = Slice(whole, axis, start, start + width, tuple(shape_of(x)))
                slices.update(subs)
            start += width
    return slices

