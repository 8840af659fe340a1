"""Fold Mul/Add/Sub/Div by per-channel or scalar constants into a Conv/Gemm, or one ChannelAffine.

Exporters leave such chains where a framework has a learnable affine outside its convolutions
(PaddleOCR's PP-LCNet: ``conv -> Mul(k) -> Add(b) -> hardswish -> Mul(k2) -> Add(b2) -> conv``),
or where preprocessing is written into the graph.  A run of consecutive single-reader layers
``y = x (op) c`` with ``c`` constant along every axis but the channel axis 1 is ``y = a[c] x + b[c]``
(composed in float64; a ChannelAffine, a BatchNormalization with nothing to fold into when
fold_batchnorm ran, is such a layer too), which then goes, in order of preference:

1. into the Conv/ConvTranspose/Gemm writing ``x`` when only the run reads it (weights * a, bias * a + b);
2. into a ChannelAffine (a folded BatchNormalization) writing ``x``, with no activation;
3. into the Conv reading ``y`` when only it reads ``y``: weights * a along input channels; the shift
   ``b`` only when the Conv has no padding (padded borders would see 0 instead of ``b``), as
   ``bias += sum(W * b)``;
4. into one new ChannelAffine when the run has two or more layers.

A single layer that fits none stays as it is.  The layer that absorbs a run gets a ``fusion`` tag.
"""
import numpy as np

from ..graph import Layer
from .fold_batchnorm import fold_into_producer

AFFINE_OPS = ("Add", "Sub", "Mul", "Div")


def _channel_vector(c, shape):
    """``c`` as a float64 vector of 1 or C values when it varies along axis 1 alone, else None."""
    c = np.asarray(c)
    if not np.issubdtype(c.dtype, np.floating) or c.ndim > len(shape):
        return None
    cs = (1,) * (len(shape) - c.ndim) + c.shape
    if any(d != 1 for k, d in enumerate(cs) if k != 1) or cs[1] not in (1, shape[1]):
        return None
    return c.astype(np.float64).reshape(-1)


def affine_of(graph, layer):
    """``(x, a, b)`` with ``layer``'s output ``= a * x + b`` (vectors of 1 or C values), or None."""
    if (layer.op == "ChannelAffine" and not layer.attrs.get("activation") and 1 in layer.consts
            and 2 in layer.consts and layer.inputs[0]):
        # a BatchNormalization that fold_batchnorm could not fold: its producer wrote through a
        # bias Add then (ConvTranspose -> Add -> BatchNormalization), which this pass folds first
        return layer.inputs[0], layer.consts[1].astype(np.float64), layer.consts[2].astype(np.float64)
    if (layer.op not in AFFINE_OPS or layer.attrs.get("activation") or len(layer.inputs) != 2
            or len(layer.consts) != 1 or len(layer.outputs) != 1):
        return None
    (pos, c), = layer.consts.items()
    x = layer.inputs[1 - pos]
    if not x:
        return None
    spec, out = graph.spec(x), layer.out_specs[0]
    if spec.shape != out.shape or len(spec.shape) < 2 or spec.dtype not in ("float32", "float64"):
        return None
    v = _channel_vector(c, spec.shape)
    if v is None or (layer.op == "Div" and (pos != 1 or np.any(v == 0))):
        return None
    one, zero = np.ones(1), np.zeros(1)
    if layer.op == "Mul":
        return x, v, zero
    if layer.op == "Div":
        return x, 1 / v, zero
    if layer.op == "Add":
        return x, one, v
    return (x, one, -v) if pos == 1 else (x, -one, v)


def _run(graph, first):
    """The longest chain of affine layers starting at ``first``: (layers, x, a, b)."""
    x, a, b = affine_of(graph, first)
    run = [first]
    while True:
        reader = graph.single_consumer(run[-1].outputs[0])
        step = affine_of(graph, reader) if reader is not None else None
        if step is None or step[0] != run[-1].outputs[0]:
            return run, x, a, b
        a, b = step[1] * a, step[1] * b + step[2]
        run.append(reader)


def _tag(layer, run):
    tag = "affine(" + "/".join(dict.fromkeys(l.op.lower() for l in run)) + ")"
    old = layer.attrs.get("fusion")
    layer.attrs["fusion"] = f"{old}+{tag}" if old else tag


def _into_affine(graph, run, x, a, b):
    producer = graph.producer(x)
    if (producer is None or producer.op != "ChannelAffine" or producer.attrs.get("activation")
            or graph.single_consumer(x) is not run[0]):
        return False
    scale, shift = producer.consts[1].astype(np.float64), producer.consts[2].astype(np.float64)
    producer.consts[1] = (scale * a).astype(producer.consts[1].dtype)
    producer.consts[2] = (shift * a + b).astype(producer.consts[2].dtype)
    producer.outputs = [run[-1].outputs[0]]
    producer.fused = producer.fused + [n for l in run for n in l.fused]
    for l in run:
        graph.remove_layer(l.name)
    return True


def _into_next_conv(graph, run, x, a, b):
    y = run[-1].outputs[0]
    conv = graph.single_consumer(y)
    if conv is None or conv.op != "Conv" or conv.inputs[0] != y or 1 not in conv.consts or conv.attrs.get("residual"):
        return False
    if len(conv.inputs) > 2 and conv.inputs[2] and 2 not in conv.consts:
        return False
    if np.any(b != 0) and any(conv.attrs["pads"]):
        return False
    w = conv.consts[1].astype(np.float64)
    o, ig = w.shape[:2]
    g = conv.attrs["group"]
    cin = ig * g
    a_in, b_in = np.broadcast_to(a, (cin,)), np.broadcast_to(b, (cin,))
    # Output channel k of group k // (o / g) reads input channels (k // (o / g)) * ig + j.
    rows = np.repeat(np.arange(g), o // g)
    a_w, b_w = a_in.reshape(g, ig)[rows], b_in.reshape(g, ig)[rows]
    spatial = (1,) * (w.ndim - 2)
    bias = conv.consts.get(2)
    bias = np.zeros(o) if bias is None else bias.astype(np.float64)
    bias = bias + (w * b_w.reshape(o, ig, *spatial)).reshape(o, -1).sum(axis=1)
    dtype = conv.consts[1].dtype
    conv.consts[1] = (w * a_w.reshape(o, ig, *spatial)).astype(dtype)
    conv.inputs = (conv.inputs + [""] * 3)[:max(3, len(conv.inputs))]
    conv.inputs[2] = conv.inputs[2] or f"{conv.name}.bias"
    conv.consts[2] = bias.astype(dtype)
    conv.inputs[0] = x
    conv.fused = [n for l in run for n in l.fused] + conv.fused
    for l in run:
        graph.remove_layer(l.name)
    return True


def _new_affine(graph, run, x, a, b):
    c = graph.spec(x).shape[1]
    dtype = np.dtype(graph.spec(x).dtype)
    first = run[0]
    layer = Layer(name=first.name, op="ChannelAffine", inputs=[x, f"{first.name}.scale", f"{first.name}.shift"],
                  outputs=[run[-1].outputs[0]],
                  consts={1: np.broadcast_to(a, (c,)).astype(dtype), 2: np.broadcast_to(b, (c,)).astype(dtype)},
                  out_specs=list(run[-1].out_specs), fused=[n for l in run for n in l.fused],
                  meta={"index": first.meta["index"]})
    for l in run:
        graph.remove_layer(l.name)
    graph.add_layer(layer)
    return layer


def fold_affine(graph):
    """Fold per-channel/scalar affine chains (see the module docstring); returns the removed layers."""
    removed = []
    for first in list(graph):
        if first.name not in graph or graph.layer(first.name) is not first or affine_of(graph, first) is None:
            continue
        run, x, a, b = _run(graph, first)
        c = graph.spec(x).shape[1]
        a_c, b_c = np.broadcast_to(a, (c,)).copy(), np.broadcast_to(b, (c,)).copy()
        producer, reader = graph.producer(x), graph.single_consumer(run[-1].outputs[0])
        if fold_into_producer(graph, run, a_c, b_c, x):
            _tag(graph.producer(run[-1].outputs[0]), run)
        elif _into_affine(graph, run, x, a, b):
            _tag(producer, run)
        elif _into_next_conv(graph, run, x, a, b):
            _tag(reader, run)
        elif len(run) >= 2:
            _tag(_new_affine(graph, run, x, a, b), run)
        else:
            continue
        graph.touch()
        removed += [l.name for l in run]
    return removed
