"""Remove layers that pass their input through unchanged, keeping graph output names.

Identity and (inference-mode) Dropout, and the no-ops exporters write once shapes are known:
a Cast to the type the tensor already has, a Slice, Expand, Tile or Reshape-like op whose output
has the input's shape, a Pad of nothing, a Transpose by the identity permutation, a Concat of one
tensor, a reduction over axes that are all of size 1 (kept).  A voice-activity model's STFT
slices every axis from 0 to INT64_MAX and casts float32 to float32, each a copy on every run.
"""
from ..ops.reduce import _Reduce

RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
#: Reductions that give back the element itself over an axis of size 1.
REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd")


def _same_spec(graph, layer):
    if not layer.inputs or 0 in layer.consts or not layer.inputs[0] or len(layer.outputs) != 1:
        return False
    x = graph.spec(layer.inputs[0])
    y = layer.out_specs[0]
    return tuple(x.shape) == tuple(y.shape) and x.dtype == y.dtype


def is_noop(graph, layer):
    """Whether ``layer``'s (first) output is its first input, element for element."""
    op, a = layer.op, layer.attrs
    if op in ("Identity", "Dropout"):
        return bool(layer.activation_inputs) and 0 not in layer.consts
    if not _same_spec(graph, layer):
        return False
    if op in RESHAPES + ("Cast", "Expand", "Tile"):
        return True
    if op == "Slice":
        return all(s > 0 for s in a["steps"])
    if op == "Pad":
        return not any(a["pads"])
    if op == "Transpose":
        rank = len(layer.out_specs[0].shape)
        return a["perm"] is not None and [p % rank for p in a["perm"]] == list(range(rank))
    if op == "Concat":
        return len(layer.inputs) == 1
    if op in REDUCTIONS:
        shape = graph.spec(layer.inputs[0]).shape
        return all(shape[i] == 1 for i in _Reduce._axes(layer, len(shape)))
    return False


def bypass(graph, layer):
    """Remove ``layer``, its readers reading its first input instead; False (nothing done) where
    its output is a graph output that its input cannot take the name of."""
    src, dst = layer.inputs[0], layer.outputs[0]
    producer = graph.producer(src)
    if dst in graph.outputs:
        # The graph output keeps its name: the producer writes it directly.
        if producer is None or src in graph.outputs:
            return False
        graph.remove_layer(layer.name)
        producer.outputs = [dst if o == src else o for o in producer.outputs]
        graph.rename_tensor(src, dst)
    else:
        graph.remove_layer(layer.name)
        graph.rename_tensor(dst, src)
    graph.touch()
    return True


def remove_identities(graph):
    removed = []
    for layer in list(graph):
        if not is_noop(graph, layer):
            continue
        if any(o and (o in graph.outputs or graph.consumers(o)) for o in layer.outputs[1:]):
            continue  # a Dropout mask that is actually read
        if bypass(graph, layer):
            removed.append(layer.name)
    return removed
