"""Slices and constant-index Gathers of one tensor along one axis become one Split.

Exporters cut tensors with Slice (an STFT's real and imaginary halves, a CSP block's two halves
written as Slices) and pick entries with Gather of a constant index (the hidden and cell state
of an LSTM, stacked in one input).  Each of those runs as a copy.  A Split's outputs, though,
are views of its input in a compiled model where they are contiguous
(:mod:`workbench.runtime.slices`), and a Concat of a whole Split reads its input
(:mod:`.rejoin_splits`).  So the readers of a tensor that take disjoint ranges along the same
axis, each with step 1, become the outputs of one Split over that axis: a Slice's output as it
is, a scalar-index Gather's through a Reshape that drops the axis, and the ranges nobody reads
as outputs nobody reads.  That happens where the ranges cover the axis whole or are contiguous
in memory in either layout (every axis before the one cut is of size 1, and not an image's
channels), so that the Split never copies more than the readers did.  Two readers of the same range share one output.
"""
import numpy as np
from onnx import helper

from ..graph import Layer, TensorSpec
from ..ops.tensor import Slice
from .reshapes import reshape_layer


def _range(graph, layer, tensor):
    """``(axis, start, stop, scalar)`` where ``layer`` reads one range of ``tensor`` with step 1
    (``scalar``: a Gather dropping the axis), else None."""
    if not layer.inputs or layer.inputs[0] != tensor or 0 in layer.consts or len(layer.outputs) != 1:
        return None
    shape = graph.spec(tensor).shape
    if layer.op == "Gather" and 1 in layer.consts and len(layer.inputs) == 2:
        index = np.asarray(layer.consts[1])
        if index.size != 1 or index.ndim > 1:
            return None
        axis = layer.attrs["axis"] % len(shape)
        i = int(index.reshape(-1)[0])
        i = i + shape[axis] if i < 0 else i
        if not 0 <= i < shape[axis]:
            return None   # left to the Gather, whose routine names the error
        return axis, i, i + 1, index.ndim == 0
    if layer.op == "Slice" and len(layer.consts) == 0 and len(layer.inputs) == 1:
        index = Slice._index(layer, shape)
        cut = [(a, s) for a, s in enumerate(index) if s.indices(shape[a]) != (0, shape[a], 1)]
        if len(cut) != 1:
            return None
        axis, s = cut[0]
        start, stop, step = s.indices(shape[axis])
        if step != 1 or stop <= start:
            return None
        return axis, start, stop, False
    return None


def _contiguous(shape, axis):
    """Every range along ``axis`` is one block of memory in any layout: the axes before it are of
    size 1, and an image's channels (which channels-last puts last) have a single pixel."""
    if int(np.prod(shape[:axis], dtype=np.int64)) != 1:
        return False
    return len(shape) != 4 or axis != 1 or shape[2] * shape[3] == 1


def _split_layer(graph, name, tensor, axis, sizes, outputs, index):
    spec = graph.spec(tensor)
    opset = int(graph.meta.get("opset", 17))
    attributes = [helper.make_attribute("axis", axis)]
    taken = {}
    if opset >= 13:
        taken[1] = (f"{name}.split", np.array(sizes, np.int64))
    else:
        attributes.append(helper.make_attribute("split", list(sizes)))
    specs = [TensorSpec(spec.shape[:axis] + (n,) + spec.shape[axis + 1:], spec.dtype) for n in sizes]
    return Layer(name=name, op="Split", inputs=[tensor], outputs=list(outputs),
                 attrs={"axis": axis, "split": list(sizes), "num_outputs": None}, out_specs=specs,
                 meta={"index": index, "onnx": {"op_type": "Split", "attributes": attributes, "taken": taken}})


def _rewrite(graph, tensor, axis, readers):
    """One Split for ``readers`` (``[(layer, start, stop, scalar)]``, disjoint or equal ranges)."""
    shape = graph.spec(tensor).shape
    first = {}
    for layer, start, stop, scalar in sorted(readers, key=lambda r: (r[1], r[0].meta["index"])):
        first.setdefault((start, stop), []).append((layer, scalar))
    bounds = sorted(first)
    covered = sum(b - a for a, b in bounds)
    if any(b1 > a2 for (_, b1), (a2, _) in zip(bounds, bounds[1:])):
        return []   # overlapping ranges: left as they are
    if covered < shape[axis] and not _contiguous(shape, axis):
        return []
    name = graph.unique_name(f"{tensor}/split")
    index = min(r[0].meta["index"] for r in readers)
    sizes, outputs, extra, done, at = [], [], [], [], 0
    for start, stop in bounds:
        if start > at:
            sizes.append(start - at)
            outputs.append(f"{name}:gap{len(sizes)}")
        sizes.append(stop - start)
        same = first[(start, stop)]
        # The range's output: the first reader's that keeps the axis, else a new one; scalar
        # Gathers reshape it, and the other readers that keep the axis read it.
        keep = next((layer for layer, scalar in same if not scalar), None)
        out = keep.outputs[0] if keep is not None else f"{same[0][0].outputs[0]}/kept_axis"
        outputs.append(out)
        for layer, scalar in same:
            mine = layer.outputs[0]
            if layer is not keep and not scalar and mine in graph.outputs:
                continue   # a graph output of its own: left to read the tensor
            graph.remove_layer(layer.name)
            done.append(layer.name)
            if scalar:
                spec = layer.out_specs[0]
                extra.append(reshape_layer(layer.name, out, mine, spec.shape, spec.dtype, layer.meta["index"],
                                           layer.fused))
            elif layer is not keep:
                graph.rename_tensor(mine, out)
        at = stop
    if at < shape[axis]:
        sizes.append(shape[axis] - at)
        outputs.append(f"{name}:gap{len(sizes)}")
    graph.add_layer(_split_layer(graph, name, tensor, axis, sizes, outputs, index))
    for layer in extra:
        graph.add_layer(layer)
    graph.touch()
    return done


def slices_as_split(graph):
    """Rewrite as described above; returns the names of the layers that became Split outputs."""
    done = []
    tensors = list(graph.inputs) + [t for layer in graph for t in layer.outputs if t]
    for tensor in tensors:
        if tensor in graph.constants or tensor not in graph.inputs and graph.producer(tensor) is None:
            continue
        by_axis = {}
        for layer in graph.consumers(tensor):
            r = _range(graph, layer, tensor)
            if r is not None:
                by_axis.setdefault(r[0], []).append((layer,) + r[1:])
        for axis, readers in by_axis.items():
            if all(r[0].name in graph for r in readers):
                done += _rewrite(graph, tensor, axis, readers)
    return done
