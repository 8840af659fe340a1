"""MobileNetV2, width 1.0 (torchvision ``mobilenet_v2`` layout, 3.50M parameters).

ReLU6 is written as ``Clip(x, min, max)`` with min/max as inputs (the opset 11+
form PyTorch exports).  The classifier flattens with ``Reshape`` to a constant
``[batch, -1]`` rather than ``Flatten``.
"""

from __future__ import annotations

import onnx

from ._builder import GraphBuilder

DEFAULT_RESOLUTION = 224
# (expansion t, output channels c, repeats n, first stride s), from the paper.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
RESIDUAL_GAMMA = (0.2, 0.3)


def _inverted_residual(g: GraphBuilder, x: str, name: str, expand: int, out_channels: int,
                       stride: int) -> str:
    cin = g.channels(x)
    residual = stride == 1 and cin == out_channels
    y, layer = x, 0
    if expand != 1:
        y = g.conv_bn_act(y, f"{name}.conv.{layer}", cin * expand, 1, act="relu6")
        layer += 1
    hidden = g.channels(y)
    y = g.conv_bn_act(y, f"{name}.conv.{layer}", hidden, 3, stride=stride, groups=hidden,
                      act="relu6")
    gamma = RESIDUAL_GAMMA if residual else (0.8, 1.2)
    y = g.conv_bn_act(y, f"{name}.conv.{layer + 1}", out_channels, 1, act=None, gamma=gamma)
    return g.add(x, y, f"{name}.add") if residual else y


def build(batch: int = 1, resolution: int = DEFAULT_RESOLUTION, seed: int = 0,
          num_classes: int = 1000) -> onnx.ModelProto:
    """Build MobileNetV2 (width multiplier 1.0).

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
    g = GraphBuilder("mobilenet_v2", batch, resolution, seed)
    x = g.conv_bn_act("input", "features.0", STEM_CHANNELS, 3, stride=2, act="relu6")
    index = 1
    for expand, channels, repeats, stride in SETTINGS:
        for i in range(repeats):
            x = _inverted_residual(g, x, f"features.{index}", expand, channels,
                                   stride if i == 0 else 1)
            index += 1
    x = g.conv_bn_act(x, f"features.{index}", LAST_CHANNELS, 1, act="relu6")
    x = g.global_avgpool(x, "avgpool")
    x = g.reshape_flat(x, "flatten")
    g.gemm(x, "classifier", num_classes, output="logits", final=True)
    return g.model("logits")
