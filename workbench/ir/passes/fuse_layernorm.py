"""LayerNorm as exporters spell it before opset 17, merged into one LayerNormalization layer.

``mean = ReduceMean(x); d = x - mean; var = ReduceMean(d^2); y = d / Sqrt(var + eps) [* gamma] [+ beta]``
over trailing axes (``d^2`` as Pow(d, 2) or Mul(d, d)).  The first ReduceMean becomes the
LayerNormalization and keeps its name (export writes the spelled form back with it first).
"""
import numpy as np

from ._cone import scalar


def _reader(graph, tensor, op):
    r = graph.single_consumer(tensor)
    return r if r is not None and r.op == op and not r.attrs.get("activation") else None


def _trailing_axes(layer, rank):
    axes = layer.attrs.get("axes")
    if axes is None or not layer.attrs.get("keepdims"):
        return None
    axes = sorted(a % rank for a in axes)
    return axes if axes == list(range(axes[0], rank)) else None


def _affine_const(layer, tensor, shape, axis):
    """The constant operand of ``layer`` (other than ``tensor``) if it broadcasts over the normalised axes only."""
    if len(layer.consts) != 1 or layer.inputs.count(tensor) != 1:
        return None
    (pos, c), = layer.consts.items()
    c = np.asarray(c)
    trailing = shape[axis:]
    if c.ndim > len(trailing) or any(d not in (1, t) for d, t in zip(c.shape[::-1], trailing[::-1])):
        return None
    return np.broadcast_to(c, trailing).astype(c.dtype)


def _match(graph, mean):
    x = mean.inputs[0]
    shape = graph.spec(x).shape
    axes = _trailing_axes(mean, len(shape))
    sub = _reader(graph, mean.outputs[0], "Sub")
    if axes is None or sub is None or sub.consts or sub.inputs != [x, mean.outputs[0]]:
        return None
    d = sub.outputs[0]
    readers = graph.consumers(d)
    if len(readers) != 2 or d in graph.outputs:
        return None
    sq = next((r for r in readers if (r.op == "Pow" and scalar(r, 1) == 2.0) or (r.op == "Mul" and r.inputs == [d, d])), None)
    div = next((r for r in readers if r.op == "Div" and r.inputs[0] == d and not r.consts), None)
    if sq is None or div is None:
        return None
    var = _reader(graph, sq.outputs[0], "ReduceMean")
    if var is None or _trailing_axes(var, len(shape)) != axes:
        return None
    add = _reader(graph, var.outputs[0], "Add")
    eps = scalar(add, 1 - add.inputs.index(var.outputs[0])) if add is not None and len(add.consts) == 1 else None
    sqrt = _reader(graph, add.outputs[0], "Sqrt") if eps is not None else None
    if sqrt is None or graph.single_consumer(sqrt.outputs[0]) is not div or div.inputs[1] != sqrt.outputs[0]:
        return None
    layers = [mean, sub, sq, var, add, sqrt, div]
    out, scale, bias = div.outputs[0], None, None
    mul = _reader(graph, out, "Mul")
    if mul is not None and (scale := _affine_const(mul, out, shape, axes[0])) is not None:
        layers.append(mul)
        out = mul.outputs[0]
        plus = _reader(graph, out, "Add")
        if plus is not None and (bias := _affine_const(plus, out, shape, axes[0])) is not None:
            layers.append(plus)
            out = plus.outputs[0]
    return layers, x, out, axes[0], eps, scale, bias


def fuse_layernorm(graph):
    """Merge spelled-out LayerNorms; returns the names of the absorbed layers."""
    absorbed = []
    for mean in list(graph):
        if mean.name not in graph or mean.op != "ReduceMean" or graph.spec(mean.inputs[0]).dtype != "float32":
            continue
        found = _match(graph, mean)
        if found is None:
            continue
        layers, x, out, axis, eps, scale, bias = found
        shape = graph.spec(x).shape
        dtype = np.float32
        scale = np.ones(shape[axis:], dtype) if scale is None else scale.astype(dtype)
        bias = np.zeros(shape[axis:], dtype) if bias is None else bias.astype(dtype)
        last = graph.layer(layers[-1].name)
        mean.op = "LayerNormalization"
        mean.attrs = {"axis": axis, "epsilon": float(eps), "fusion": "layernorm"}
        mean.inputs = [x, f"{mean.name}.scale", f"{mean.name}.bias"]
        mean.consts = {1: scale, 2: bias}
        mean.outputs = [out]
        mean.out_specs = list(last.out_specs)
        mean.fused = mean.fused + [n for l in layers[1:] for n in l.fused]
        for l in layers[1:]:
            graph.remove_layer(l.name)
            absorbed.append(l.name)
        graph.touch()
    return absorbed
