"""Fold inference BatchNormalization into the preceding Conv, ConvTranspose or Gemm.

``BN(y) = y * s + t`` per output channel, with ``s = scale / sqrt(var + eps)`` and
``t = B - mean * s``, so the producer's weights are scaled by ``s`` along its output channels
and ``t`` joins its bias.  A BatchNormalization with no such producer becomes a
:class:`~workbench.ir.ops.normalization.ChannelAffine` (one per-channel scale and shift).
Arithmetic is done in float64 and rounded once.
"""
import numpy as np

from ..graph import Layer
from ..ops.normalization import BatchNormalization


def _scale_output_channels(producer, s):
    """Weights of ``producer`` with output channel k multiplied by ``s[k]``."""
    w = producer.consts[1].astype(np.float64)
    if producer.op == "Conv":
        return w * s.reshape(-1, *([1] * (w.ndim - 1)))
    if producer.op == "ConvTranspose":  # weights (C_in, M/group, k...): out channel = g * M/group + j
        g = producer.attrs["group"]
        cin, mg = w.shape[:2]
        per_in = s.reshape(g, 1, mg).repeat(cin // g, axis=1).reshape(cin, mg)
        return w * per_in.reshape(cin, mg, *([1] * (w.ndim - 2)))
    return w * (s[:, None] if producer.attrs["transB"] else s[None, :])  # Gemm


def _foldable(graph, layer, x, channels):
    """The Conv/ConvTranspose/Gemm writing ``x``, read only by ``layer``, if ``channels`` scales fold into it."""
    producer = graph.producer(x)
    if producer is None or producer.op not in ("Conv", "ConvTranspose", "Gemm"):
        return None
    if graph.single_consumer(x) is not layer or producer.attrs.get("activation") or producer.attrs.get("residual"):
        return None
    if 1 not in producer.consts or (len(producer.inputs) > 2 and producer.inputs[2] and 2 not in producer.consts):
        return None
    if producer.out_specs[0].shape[1] != channels or len(producer.outputs) != 1:
        return None
    return producer


def fold_into_producer(graph, run, s, t, x=None):
    """Fold ``y = x * s[c] + t[c]`` into the layer producing ``x``: ``run`` is the layer (or list of
    consecutive layers) computing it, reading ``x`` (default: the first one's input 0), ``s``, ``t``
    float64 vectors over channels.  Returns True when done (the run's layers are then removed)."""
    run = run if isinstance(run, list) else [run]
    x = run[0].inputs[0] if x is None else x
    producer = _foldable(graph, run[0], x, s.shape[0])
    if producer is None:
        return False
    dtype = producer.consts[1].dtype
    producer.consts[1] = _scale_output_channels(producer, s).astype(dtype)
    if producer.op == "Gemm":
        c = producer.consts.get(2)
        # C keeps its own shape: (M, N) or (M, 1) biases vary along rows, and c * s + t broadcasts
        # the per-column scale and shift over them.
        c = np.zeros(s.shape) if c is None else c.astype(np.float64) * producer.attrs["beta"]
        bias = c * s + t
        producer.attrs["beta"] = 1.0
    else:
        b = producer.consts.get(2)
        bias = (np.zeros(s.shape) if b is None else b.astype(np.float64)) * s + t
    producer.inputs = (producer.inputs + [""] * 3)[:max(3, len(producer.inputs))]
    producer.inputs[2] = producer.inputs[2] or f"{producer.name}.bias"
    producer.consts[2] = bias.astype(dtype)
    producer.outputs = [run[-1].outputs[0]]
    for layer in run:
        producer.fused = producer.fused + layer.fused
        graph.remove_layer(layer.name)
    graph.touch()
    return True


def fold_batchnorm(graph):
    touched = []
    for bn in list(graph):
        if bn.op != "BatchNormalization" or not all(i in bn.consts for i in (1, 2, 3, 4)):
            continue
        s, t = BatchNormalization.scale_shift(*(bn.consts[i] for i in (1, 2, 3, 4)), bn.attrs["epsilon"])
        if fold_into_producer(graph, bn, s, t):
            touched.append(bn.name)
            continue
        affine = Layer(name=bn.name, op="ChannelAffine", inputs=[bn.inputs[0], f"{bn.name}.scale", f"{bn.name}.shift"],
                       outputs=[bn.outputs[0]], consts={1: s.astype(bn.consts[1].dtype), 2: t.astype(bn.consts[2].dtype)},
                       out_specs=bn.out_specs, fused=bn.fused, meta=bn.meta)
        graph.remove_layer(bn.name)
        graph.add_layer(affine)
        touched.append(bn.name)
    return touched
