"""A tiny CNN (44,104 parameters at 1000 classes) that exercises many ops.

It contains a Conv with bias, Conv/BatchNormalization/Relu blocks, MaxPool,
AveragePool, a residual Add, a two-branch Concat, GlobalAveragePool, Flatten
and Gemm.  Default resolution is 32.
"""

from __future__ import annotations

import onnx

from ._builder import GraphBuilder

DEFAULT_RESOLUTION = 32


def build(batch: int = 1, resolution: int = DEFAULT_RESOLUTION, seed: int = 0,
          num_classes: int = 1000) -> onnx.ModelProto:
    """Build the tiny test network.

    Parameters
    ----------
    batch, resolution : int
        Input shape is [batch, 3, resolution, resolution]; resolution >= 4.
    seed : int
        Weight seed.
    num_classes : int
        Width of the ``logits`` output.

    Returns
    -------
    onnx.ModelProto
    """
    if resolution < 4:
        raise ValueError(f"tiny needs resolution >= 4, got {resolution}")
    g = GraphBuilder("tiny", batch, resolution, seed)
    x = g.conv("input", "stem.conv", 16, 3, bias=True)
    x = g.act(x, "relu", "stem.relu")
    x = g.pool(x, "MaxPool", "stem.maxpool", kernel=2, stride=2)

    y = g.conv_bn_act(x, "res.conv1", 16, 3)
    y = g.conv_bn_act(y, "res.conv2", 16, 3, act=None, gamma=(0.2, 0.3))
    x = g.act(g.add(x, y, "res.add"), "relu", "res.relu")

    a = g.conv_bn_act(x, "branch.a", 8, 1)
    b = g.conv_bn_act(x, "branch.b", 8, 3)
    x = g.concat([a, b], "branch.concat")
    x = g.pool(x, "AveragePool", "branch.avgpool", kernel=2, stride=2)

    x = g.conv_bn_act(x, "head.conv", 32, 3)
    x = g.global_avgpool(x, "head.avgpool")
    x = g.flatten(x, "head.flatten")
    g.gemm(x, "fc", num_classes, output="logits", final=True)
    return g.model("logits")
