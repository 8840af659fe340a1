"""A Softmax whose output is only summed over its own axis with constant weights becomes one
:class:`~workbench.ir.ops.linalg.SoftmaxDot` layer.

YOLOv8-family heads (and every exporter of their distribution focal loss decode) turn each box
side's 16-bin distribution into a distance as ``Reshape -> Transpose(0, 2, 1, 3) ->
Softmax(axis=1) -> Conv 1x1 (16 -> 1, weights 0..15)``: three passes over the head's box tensor,
the Transpose a copy only to bring the bins to the channel axis, and the Conv a one-channel GEMM.
Here that is one pass reading the tensor as it is: per position, the softmax over the bins and
its weighted sum, without the softmax ever reaching memory.

Matched on the dataflow: a Softmax (not coerced to 2-D, unless over the last axis) read only by

- a Conv with one output channel, a 1x1 kernel, no padding, unit strides and dilations, one group,
  reducing the softmax axis as its channels (axis 1), an optional bias, nothing fused into it; or
- a MatMul by a constant column (``(n, 1)`` or ``(n,)``) reducing the last axis, with at most a
  one-value fused bias;

and, optionally, a Transpose before the Softmax, read only by it, that moves one axis to the
softmax's place and leaves the others in order: the fused layer then reads the Transpose's input
with the axis where it was.  The layer takes the name of the Conv or MatMul; ``meta["softmax_dot"]``
keeps what export needs to write the original layers back (``<layer>/transpose``,
``<layer>/softmax``, then the Conv or MatMul under the layer's name).
"""
import numpy as np


def _single(graph, tensor):
    return graph.single_consumer(tensor)


def _weights(layer, axis, rank):
    """(weights vector, bias or None) when ``layer`` sums the softmax axis with constant weights."""
    a = layer.attrs
    if a.get("activation") or a.get("residual") or a.get("post_affine") is not None or 1 not in layer.consts:
        return None
    w = np.asarray(layer.consts[1])
    if layer.op == "Conv":
        if (rank != 4 or axis != 1 or w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1)
                or a.get("group", 1) != 1 or any(s != 1 for s in a.get("strides") or [1])
                or any(d != 1 for d in a.get("dilations") or [1]) or any(p != 0 for p in a.get("pads") or [0])
                or len(layer.inputs) > 3):
            return None
        bias = layer.consts.get(2) if len(layer.inputs) > 2 and layer.inputs[2] else None
        if len(layer.inputs) > 2 and layer.inputs[2] and bias is None:
            return None
    elif layer.op == "MatMul":
        if axis != rank - 1 or not (w.ndim == 1 or (w.ndim == 2 and w.shape[1] == 1)) or len(layer.inputs) > 3:
            return None
        bias = layer.consts.get(2) if len(layer.inputs) > 2 else None
        if len(layer.inputs) > 2 and bias is None:
            return None
    else:
        return None
    if bias is not None and np.asarray(bias).size != 1:
        return None
    vec = w.reshape(-1)
    return (vec.astype(np.float32), None if bias is None else np.asarray(bias, np.float32).reshape(1))


def _moved_axis(perm, axis):
    """The source axis a Transpose with ``perm`` brings to ``axis``, when it keeps every other
    axis in order (the fused layer then reads the source as it is); else None."""
    rest = [p for i, p in enumerate(perm) if i != axis]
    return perm[axis] if rest == sorted(rest) else None


def fuse_softmax_dot(graph):
    """Fuse each qualifying [Transpose ->] Softmax -> Conv/MatMul (see the module docstring);
    returns the names of the absorbed layers."""
    absorbed = []
    for sm in list(graph):
        if sm.name not in graph or sm.op != "Softmax" or sm.attrs.get("activation"):
            continue
        x = sm.inputs[0]
        spec = graph.spec(x)
        rank = len(spec.shape)
        if spec.dtype != "float32" or rank == 0:
            continue
        axis = sm.attrs["axis"] % rank
        if sm.attrs.get("coerce_2d") and axis != rank - 1:
            continue
        dot = _single(graph, sm.outputs[0])
        found = _weights(dot, axis, rank) if dot is not None else None
        if (found is None or found[0].size != spec.shape[axis] or dot.inputs[0] != sm.outputs[0]
                or dot.out_specs[0].dtype != "float32"):
            continue
        w, bias = found
        src, src_axis, transpose = x, axis, None
        t = graph.producer(x)
        if t is not None and t.op == "Transpose" and _single(graph, x) is sm and t.attrs.get("perm") is not None:
            moved = _moved_axis([p % rank for p in t.attrs["perm"]], axis)
            if moved is not None:
                src, src_axis, transpose = t.inputs[0], moved, t
        record = {"softmax": {"name": sm.name, "axis": int(sm.attrs["axis"]), "output": sm.outputs[0]},
                  "transpose": None if transpose is None else {"name": transpose.name, "perm": list(transpose.attrs["perm"]),
                                                               "output": transpose.outputs[0]},
                  "op": dot.op, "weight_shape": list(np.shape(dot.consts[1]))}
        fused = dot.fused + ([] if transpose is None else transpose.fused) + sm.fused
        dot.op = "SoftmaxDot"
        dot.inputs = [src, dot.inputs[1]] + ([dot.inputs[2]] if bias is not None else [])
        dot.consts = {1: w} if bias is None else {1: w, 2: bias}
        dot.attrs = {"axis": src_axis, "fusion": ("transpose+" if transpose is not None else "") + "softmax+"
                     + record["op"].lower()}
        dot.meta["softmax_dot"] = record
        dot.fused = fused
        for layer in (sm, transpose):
            if layer is not None:
                graph.remove_layer(layer.name)
                absorbed.append(layer.name)
        graph.touch()
    return absorbed
