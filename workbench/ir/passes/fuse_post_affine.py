"""A per-channel affine after a convolution's activation becomes the last step of its epilogue.

PP-LCNetV3 (the backbone of PaddleOCR's v4 and v5 detectors and recognisers) follows most
pointwise convolutions' hard swish with a learnable affine, ``y = s[c] * hswish(conv(x)) + t[c]``,
which :mod:`fold_affine` makes one ChannelAffine.  It cannot go into the weights (the activation
sits between), nor forward into the next convolution when that one pads (its borders would see
``t`` instead of 0), so it ran as a layer of its own: a pass over the whole tensor.  Here a
ChannelAffine with no activation of its own, that alone reads a Conv's activated output, moves
into that Conv as ``attrs["post_affine"] = {"scale", "shift"}`` (float32, one value a channel).
Routines whose kernels apply it after the activation say so (``encode(..., post_affine=True)``:
our AVX-512 NHWC GEMM convolutions, after ReLU, clip, leaky ReLU, hard sigmoid or hard swish), and
the reference applies it in :func:`workbench.ir.ops.activation.epilogue`; the move is made only
where such a routine takes the Conv, so a CPU without AVX-512 keeps the ChannelAffine layer.
"""
import numpy as np

from ._fast import runs_fast


def fuse_post_affine(graph):
    """Move each such ChannelAffine into its Conv; returns the removed layers' names."""
    removed = []
    for layer in list(graph):
        if layer.name not in graph or layer.op != "ChannelAffine" or layer.attrs.get("activation"):
            continue
        x = layer.inputs[0]
        conv = graph.producer(x)
        if (conv is None or conv.op != "Conv" or not conv.attrs.get("activation") or "post_affine" in conv.attrs
                or conv.attrs.get("residual_after_activation")
                or len(conv.outputs) != 1 or graph.single_consumer(x) is not layer
                or conv.out_specs[0].dtype != "float32" or len(conv.out_specs[0].shape) < 2):
            continue
        c = conv.out_specs[0].shape[1]
        conv.attrs["post_affine"] = {
            "scale": np.ascontiguousarray(np.broadcast_to(np.asarray(layer.consts[1], np.float32).reshape(-1), (c,))),
            "shift": np.ascontiguousarray(np.broadcast_to(np.asarray(layer.consts[2], np.float32).reshape(-1), (c,))),
        }
        if not runs_fast(graph, conv):   # only the reference would take it: leave the layers as they are
            del conv.attrs["post_affine"]
            continue
        conv.outputs = list(layer.outputs)
        conv.out_specs = list(layer.out_specs)
        conv.fused = conv.fused + layer.fused
        old = conv.attrs.get("fusion")
        conv.attrs["fusion"] = f"{old}+post-affine" if old else "post-affine"
        graph.remove_layer(layer.name)
        graph.touch()
        removed.append(layer.name)
    return removed
