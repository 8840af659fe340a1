"""Pre-quantized models: QuantizeLinear/DequantizeLinear pairs (QDQ, as onnxruntime's
``quantize_static`` writes them) become quantized tensors between qint8 layers.

:func:`weight_quant`, at import, where a DequantizeLinear of constant int8 weights is folded: the
Conv, Gemm or MatMul reading them keeps the model's integers and scales (zero point 0, one scale
or one per output channel) in ``layer.meta[WEIGHTS]``, so its qint8 routines multiply exactly the
model's weights (quantizing the folded float weights again could pick other scales);
:func:`bias_quant` likewise keeps a Conv's or Gemm's int32 bias.

:func:`fuse_qdq` runs after the other passes: a QuantizeLinear of tensor ``t`` (uint8, per
tensor) whose readers are all DequantizeLinear layers with the same parameters goes, with them;
their readers read ``t``, ``graph.quant[t]`` holds the parameters and ``graph.meta[MODEL_QUANT]``
names ``t``.  Every reader of such a tensor then reads it in uint8 (:func:`workbench.routines.applicable`
offers it no other routine): whatever its producer writes, the model's rounding, and its clamp to
the integer range (a quantizer drops a ReLU before a zero point of 0), happen where the model has
them (a quantize adapt, or a qint8 producer writing uint8); the reference executor rounds the
tensor too.  The residual adds and activations the Q/DQ layers kept apart are then fused as usual;
a Conv that takes its add keeps the model's rounding of its own output before it
(``layer.meta[PRE_RESIDUAL]``), which its qint8 routines and the reference both apply.  A reader no qint8 routine can serve so (an op without one, parameters a MaxPool would have
to change) gets the pair back in front of it, as the QuantizeLinear and DequantizeLinear layers
the model has.
"""
from __future__ import annotations

import numpy as np

from ..quant import QuantParams

#: ``layer.meta`` key: ``(int8 weights, output channels first; float64 scales per output channel;
#: the output channels' axis in the model's weights)``.
WEIGHTS = "weight_quant"
#: ``layer.meta`` key: ``(the int32 bias as the model stores it, its float32 scales)``.
BIAS = "bias_quant"
#: ``graph.meta`` key: the tensors the model quantizes, ``{tensor: (QuantizeLinear attrs, DequantizeLinear attrs)}``.
MODEL_QUANT = "model_quant"
#: ``layer.meta`` key of a Conv that took a residual add the model kept apart: the QuantParams
#: of the Conv's own output, which the model rounds before adding (and the routines round to).
PRE_RESIDUAL = "pre_residual_quant"
_WEIGHT_OPS = {"Conv": 0, "Gemm": None, "MatMul": 1}   # op -> axis of the output channel in the weights


def weight_quant(layer, q, attrs):
    """Keep on ``layer`` (a Conv, Gemm or MatMul whose input 1 is the folded DequantizeLinear of
    int8 constant ``q`` with ``attrs``) the model's integers and scales, output channels first, in
    ``layer.meta[WEIGHTS]``; returns whether it did (zero point 0, one scale or one per output
    channel: what the qint8 routines multiply by)."""
    q = np.asarray(q)
    if layer.op not in _WEIGHT_OPS or q.dtype != np.int8 or q.ndim < 2 or np.any(np.asarray(attrs["zero_point"]) != 0):
        return False
    out_axis = _WEIGHT_OPS[layer.op]
    if out_axis is None:   # Gemm: B (K, N), or (N, K) with transB
        out_axis = 0 if layer.attrs.get("transB") else 1
    scale = np.asarray(attrs["scale"], np.float64).ravel()
    if scale.size not in (1, q.shape[out_axis]) or (scale.size > 1 and attrs["axis"] % q.ndim != out_axis):
        return False
    layer.meta[WEIGHTS] = (np.ascontiguousarray(np.moveaxis(q, out_axis, 0)),
                           np.broadcast_to(scale, (q.shape[out_axis],)).copy(), out_axis)
    return True


def bias_quant(layer, q, attrs):
    """Keep on ``layer`` (a Conv or Gemm reading the folded DequantizeLinear of int32 constant ``q``
    as its bias) the model's integers and scales, ``layer.meta[BIAS]``: a qint8 routine whose sums have
    those scales adds them as integers, as the model's runtime does.  Returns whether it did."""
    q = np.asarray(q)
    if (layer.op not in ("Conv", "Gemm") or q.dtype != np.int32 or q.ndim != 1
            or np.any(np.asarray(attrs["zero_point"]) != 0) or layer.attrs.get("beta", 1.0) != 1.0):
        return False
    scale = np.asarray(attrs["scale"], np.float32).ravel()
    if scale.size not in (1, q.size):
        return False
    layer.meta[BIAS] = (q.astype(np.int64), np.broadcast_to(scale, q.shape).copy())
    return True


def _pair(graph, q):
    """``(t, [DequantizeLinear readers])`` where QuantizeLinear ``q`` and every reader of its output
    form a removable pair (uint8, per tensor, the same parameters), else None."""
    a = q.attrs
    if a.get("dtype", "uint8") != "uint8" or np.asarray(a["scale"]).size != 1 or 0 in q.consts:
        return None
    readers = graph.consumers(q.outputs[0])
    if not readers or q.outputs[0] in graph.outputs or any(d.outputs[0] in graph.outputs for d in readers):
        return None   # a graph output keeps its name and its values
    for d in readers:
        b = d.attrs
        if (d.op != "DequantizeLinear" or d.inputs[0] != q.outputs[0] or np.asarray(b["scale"]).size != 1
                or float(np.asarray(b["scale"]).ravel()[0]) != float(np.asarray(a["scale"]).ravel()[0])
                or int(np.asarray(b["zero_point"]).ravel()[0]) != int(np.asarray(a["zero_point"]).ravel()[0])):
            return None
    return q.inputs[0], readers


def _served(graph, layer, tensor):
    """Whether a qint8 routine reading ``tensor`` in uint8 (every model-quantized input so) applies
    to ``layer`` as it now stands."""
    from ... import routines
    specs = graph.input_specs(layer)
    quantized = graph.meta.get(MODEL_QUANT, {})
    for r in routines.routines_for(layer.op).values():
        if r.dtype != "qint8" or not r.available() or not r.applies(layer, specs):
            continue
        formats = r.input_formats(layer, specs)
        if any(f is not None and x in quantized and f.dtype != "uint8" for x, f in zip(layer.inputs, formats)):
            continue
        if not all(t in graph.quant for t in r.quant_tensors(layer)) or not r.quant_applies(layer, graph.quant):
            continue
        try:
            r.prepare(layer, graph.quant)   # parameters the routine cannot work with (a MaxPool's)
        except Exception:   # noqa: BLE001 - any refusal means: not served
            continue
        return True
    return False


def fuse_qdq(graph):
    """Remove the QuantizeLinear/DequantizeLinear pairs of the model's quantized tensors (see the
    module doc); returns the layers removed."""
    from .fuse_activation import fuse_activations
    from .fuse_residual import fuse_residual_adds
    model = graph.meta.setdefault(MODEL_QUANT, {})
    removed = []
    for q in list(graph):
        if q.op != "QuantizeLinear" or q.name not in graph:
            continue
        found = _pair(graph, q)
        if found is None:
            continue
        t, readers = found
        a = q.attrs
        graph.remove_layer(q.name)
        for d in readers:
            graph.remove_layer(d.name)
            graph.rename_tensor(d.outputs[0], t)
        graph.quant[t] = QuantParams((float(np.asarray(a["scale"]).ravel()[0]),),
                                     (int(np.asarray(a["zero_point"]).ravel()[0]),), "uint8", source="model")
        model[t] = (dict(q.attrs), dict(readers[0].attrs))
        graph.touch()
        removed += [q.name] + [d.name for d in readers]
    if removed:
        own = {t: graph.producer(t) for t in model}   # each Conv's quantized output, before the adds fuse
        fuse_residual_adds(graph)
        fuse_activations(graph)
        names = graph.tensor_names()
        for t, conv in own.items():
            if conv is not None and conv.op == "Conv" and conv.attrs.get("residual") and t not in names:
                conv.meta[PRE_RESIDUAL] = graph.quant[t]
    names = graph.tensor_names()
    for t in list(model):
        if t not in names and t not in graph.inputs:
            del model[t]   # fused away (a Conv's output inside its residual add: PRE_RESIDUAL keeps it)
            graph.quant.pop(t)
            continue
        for reader in graph.consumers(t):
            if not _served(graph, reader, t):
                _restore(graph, t, reader, model[t])
    return removed


def _restore(graph, tensor, reader, attrs):
    """Put the QuantizeLinear/DequantizeLinear pair of ``tensor`` back in front of ``reader``."""
    from ..graph import Layer, TensorSpec
    q_attrs, d_attrs = attrs
    shape = graph.spec(tensor).shape
    taken = graph.tensor_names()
    qt, dt = (next(f"{tensor}_{k}{i or ''}" for i in range(len(taken) + 1) if f"{tensor}_{k}{i or ''}" not in taken)
              for k in ("q", "dq"))
    graph.add_layer(Layer(graph.unique_name(f"{tensor}_QuantizeLinear"), "QuantizeLinear", [tensor], [qt],
                          dict(q_attrs), out_specs=[TensorSpec(shape, "uint8")]))
    graph.add_layer(Layer(graph.unique_name(f"{tensor}_DequantizeLinear"), "DequantizeLinear", [qt], [dt],
                          dict(d_attrs), out_specs=[TensorSpec(shape, "float32")]))
    reader.inputs = [dt if x == tensor else x for x in reader.inputs]
    graph.touch()
