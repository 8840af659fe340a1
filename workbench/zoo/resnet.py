"""ResNet-50 v1.5 (torchvision ``resnet50`` layout, 25.56M parameters).

Bottleneck blocks put the stride on the 3x3 convolution (v1.5), not on the
first 1x1.  Node names follow torchvision: ``layer2.0.conv2``,
``layer2.0.downsample``, ...
"""

from __future__ import annotations

import onnx

from ._builder import GraphBuilder

DEFAULT_RESOLUTION = 224
EXPANSION = 4
# (blocks, bottleneck width, stride of the first block)
STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))
# The last BatchNormalization of each residual branch starts near zero-ish so
# the residual sum stays bounded through 16 blocks.
RESIDUAL_GAMMA = (0.2, 0.3)


def _bottleneck(g: GraphBuilder, x: str, name: str, width: int, stride: int) -> str:
    out_channels = width * EXPANSION
    y = g.conv_bn_act(x, f"{name}.conv1", width, 1)
    y = g.conv_bn_act(y, f"{name}.conv2", width, 3, stride=stride)
    y = g.conv_bn_act(y, f"{name}.conv3", out_channels, 1, act=None, gamma=RESIDUAL_GAMMA)
    if stride != 1 or g.channels(x) != out_channels:
        x = g.conv_bn_act(x, f"{name}.downsample", out_channels, 1, stride=stride, act=None)
    return g.act(g.add(x, y, f"{name}.add"), "relu", f"{name}.relu")


def build(batch: int = 1, resolution: int = DEFAULT_RESOLUTION, seed: int = 0,
          num_classes: int = 1000) -> onnx.ModelProto:
    """Build ResNet-50 v1.5.

    Parameters
    ----------
    batch, resolution : int
        Input shape is [batch, 3, resolution, resolution].
    seed : int
        Weight seed.
    num_classes : int
        Width of the ``logits`` output.

    Returns
    -------
    onnx.ModelProto
    """
    g = GraphBuilder("resnet50", batch, resolution, seed)
    x = g.conv_bn_act("input", "conv1", 64, 7, stride=2)
    x = g.pool(x, "MaxPool", "maxpool", kernel=3, stride=2, pad=1)
    for stage, (blocks, width, stride) in enumerate(STAGES, start=1):
        for i in range(blocks):
            x = _bottleneck(g, x, f"layer{stage}.{i}", width, stride if i == 0 else 1)
    x = g.global_avgpool(x, "avgpool")
    x = g.flatten(x, "flatten")
    g.gemm(x, "fc", num_classes, output="logits", final=True)
    return g.model("logits")
