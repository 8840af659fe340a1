"""Fold inference BatchNormalization into the preceding Conv, ConvTranspose or Gemm.

``BN(y) = y * s + t`` per output channel, with ``s = scale / sqrt(var + eps)`` and
``t = B - mean * s``, so the producer's weights are scaled by ``s`` along its output channels
and ``t`` joins its bias.  A BatchNormalization with no such producer becomes a
:class:`~workbench.ops.normalization.ChannelAffine` (one per-channel scale and shift).
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


def _foldable(graph, bn):
    producer = graph.producer(bn.inputs[0])
    if producer is None or producer.op not in ("Conv", "ConvTranspose", "Gemm"):
        return None
    if graph.single_consumer(bn.inputs[0]) is not bn or producer.attrs.get("activation") or producer.attrs.get("residual"):
        return None
    if 1 not in producer.consts or (len(producer.inputs) > 2 and producer.inputs[2] and 2 not in producer.consts):
        return None
    if producer.op == "Gemm" and producer.out_specs[0].shape[1] != bn.consts[1].shape[0]:
        return None
    return producer


def fold_batchnorm(graph):
    touched = []
    for bn in list(graph):
        if bn.op != "BatchNormalization" or not all(i in bn.consts for i in (1, 2, 3, 4)):
            continue
        s, t = BatchNormalization.scale_shift(*(bn.consts[i] for i in (1, 2, 3, 4)), bn.attrs["epsilon"])
        producer = _foldable(graph, bn)
        if producer is None:
            affine = Layer(name=bn.name, op="ChannelAffine", inputs=[bn.inputs[0], f"{bn.name}.scale", f"{bn.name}.shift"],
                           outputs=[bn.outputs[0]], consts={1: s.astype(bn.consts[1].dtype), 2: t.astype(bn.consts[2].dtype)},
                           out_specs=bn.out_specs, fused=bn.fused, meta=bn.meta)
            graph.remove_layer(bn.name)
            graph.add_layer(affine)
            touched.append(bn.name)
            continue
        dtype = producer.consts[1].dtype
        producer.consts[1] = _scale_output_channels(producer, s).astype(dtype)
        if producer.op == "Gemm":
            c = producer.consts.get(2)
            c = np.zeros(s.shape) if c is None else c.astype(np.float64) * producer.attrs["beta"]
            bias = c * s + t
            producer.attrs["beta"] = 1.0
        else:
            b = producer.consts.get(2)
            bias = (np.zeros(s.shape) if b is None else b.astype(np.float64)) * s + t
        producer.inputs = (producer.inputs + [""] * 3)[:max(3, len(producer.inputs))]
        producer.inputs[2] = producer.inputs[2] or f"{producer.name}.bias"
        producer.consts[2] = bias.astype(dtype)
        producer.outputs = [bn.outputs[0]]
        producer.fused = producer.fused + bn.fused
        graph.remove_layer(bn.name)
        graph.touch()
        touched.append(bn.name)
    return touched
