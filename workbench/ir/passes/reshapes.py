"""Ops that only reshape become one Reshape; chains of them, one; a chain back to the input's
shape, nothing.

Exporters spell reshapes many ways once shapes are known: Squeeze then Unsqueeze around an LSTM,
a Transpose that moves only axes of size 1 ((N, 1, L) to (N, L, 1)), a Gather of index 0 from an
axis of size 1, a keepdims=0 reduction over axes of size 1.  Each becomes a Reshape, a view in
NCHW; a Reshape of a Reshape reads the first one's input; and a Reshape to the shape it reads
is removed (:mod:`.identity`).  The 1-D convolutions run as 2-D ones
(:mod:`.conv1d_as_2d`) leave ``(N, C, 1, L) -> (N, C, L) -> (N, C, 1, L)`` between two
convolutions, and tidied, the second reads the first's output: a channels-last plan then keeps
the tensor channels-last instead of transposing it back and forth around each view.
"""
import numpy as np

from ..graph import Layer, TensorSpec
from ..ops.reduce import _Reduce
from .dead_nodes import remove_dead_layers
from .identity import REDUCTIONS, RESHAPES, bypass


def reshape_layer(name, src, dst, shape, dtype, index, fused=None):
    """A Reshape layer ``src`` -> ``dst`` of ``shape``, with what export needs to write it back."""
    return Layer(name=name, op="Reshape", inputs=[src], outputs=[dst], attrs={"shape": list(shape), "allowzero": 0},
                 out_specs=[TensorSpec(tuple(shape), dtype)], fused=list(fused or []),
                 meta={"index": index, "onnx": {"op_type": "Reshape", "attributes": [],
                                                "taken": {1: (f"{name}.shape", np.array(shape, np.int64))}}})


def _data(graph, layer):
    """The tensor ``layer`` reads its elements from, where it is an activation."""
    if not layer.inputs or 0 in layer.consts or not layer.inputs[0] or layer.inputs[0] in graph.constants:
        return None
    return layer.inputs[0]


def is_reshape(graph, layer):
    """Whether ``layer`` only reinterprets its input's elements in the same order as its output's shape."""
    if len(layer.outputs) != 1 or _data(graph, layer) is None:
        return False
    x = graph.spec(layer.inputs[0])
    if x.dtype != layer.out_specs[0].dtype:
        return False
    shape = x.shape
    if layer.op in RESHAPES:
        return True
    if layer.op == "Transpose":
        perm = layer.attrs["perm"]
        perm = list(range(len(shape)))[::-1] if perm is None else [p % len(shape) for p in perm]
        moved = [p for p in perm if shape[p] != 1]
        return moved == sorted(moved)
    if layer.op in REDUCTIONS:
        return all(shape[i] == 1 for i in _Reduce._axes(layer, len(shape)))
    if layer.op == "Gather" and 1 in layer.consts:
        index = np.asarray(layer.consts[1])
        axis = layer.attrs["axis"] % len(shape)
        return shape[axis] == 1 and index.size == 1 and index.ndim <= 1 and int(index.reshape(-1)[0]) in (0, -1)
    return False


def tidy_reshapes(graph):
    """Rewrite as described above; returns the names of the layers rewritten or removed."""
    touched = []
    for layer in list(graph):
        if not is_reshape(graph, layer):
            continue
        src = layer.inputs[0]
        before = graph.producer(src)
        while before is not None and before.op in RESHAPES and is_reshape(graph, before):
            src = before.inputs[0]
            before = graph.producer(src)
        out = layer.out_specs[0]
        if layer.op in RESHAPES and src == layer.inputs[0]:   # already a view: left as written
            continue
        new = reshape_layer(layer.name, src, layer.outputs[0], out.shape, out.dtype, layer.meta["index"], layer.fused)
        graph.remove_layer(layer.name)
        graph.add_layer(new)
        graph.touch()
        touched.append(layer.name)
    for layer in list(graph):
        if layer.op == "Reshape" and _data(graph, layer) is not None and \
                tuple(graph.spec(layer.inputs[0]).shape) == tuple(layer.out_specs[0].shape) and bypass(graph, layer):
            touched.append(layer.name)
    return list(dict.fromkeys(touched + remove_dead_layers(graph)))
