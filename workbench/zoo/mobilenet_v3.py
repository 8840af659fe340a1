"""MobileNetV3-Large (torchvision ``mobilenet_v3_large`` layout, 5.48M parameters).

Uses the ``HardSwish`` op and squeeze-excite blocks written as
GlobalAveragePool -> Conv -> Relu -> Conv -> HardSigmoid -> Mul.
"""

from __future__ import annotations

import onnx

from ._builder import GraphBuilder

DEFAULT_RESOLUTION = 224
# (kernel, expanded channels, output channels, squeeze-excite, activation, stride),
# Table 1 of "Searching for MobileNetV3" (Howard et al., 2019).
LAYERS = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
STEM_CHANNELS = 16
LAST_CHANNELS = 960
HIDDEN_FEATURES = 1280
RESIDUAL_GAMMA = (0.2, 0.3)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor``, never going down by more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _squeeze_excite(g: GraphBuilder, x: str, name: str) -> str:
    channels = g.channels(x)
    s = g.global_avgpool(x, f"{name}.avgpool")
    s = g.conv(s, f"{name}.fc1", _make_divisible(channels // 4), 1, bias=True)
    s = g.act(s, "relu", f"{name}.relu")
    s = g.conv(s, f"{name}.fc2", channels, 1, bias=True)
    s = g.act(s, "hardsigmoid", f"{name}.hardsigmoid")
    return g.mul(x, s, f"{name}.mul")


def _inverted_residual(g: GraphBuilder, x: str, name: str, kernel: int, expanded: int,
                       out_channels: int, use_se: bool, act: str, stride: int) -> str:
    cin = g.channels(x)
    residual = stride == 1 and cin == out_channels
    y, layer = x, 0
    if expanded != cin:
        y = g.conv_bn_act(y, f"{name}.block.{layer}", expanded, 1, act=act)
        layer += 1
    y = g.conv_bn_act(y, f"{name}.block.{layer}", expanded, kernel, stride=stride,
                      groups=expanded, act=act)
    layer += 1
    if use_se:
        y = _squeeze_excite(g, y, f"{name}.block.{layer}")
        layer += 1
    gamma = RESIDUAL_GAMMA if residual else (0.8, 1.2)
    y = g.conv_bn_act(y, f"{name}.block.{layer}", out_channels, 1, act=None, gamma=gamma)
    return g.add(x, y, f"{name}.add") if residual else y


def build(batch: int = 1, resolution: int = DEFAULT_RESOLUTION, seed: int = 0,
          num_classes: int = 1000) -> onnx.ModelProto:
    """Build MobileNetV3-Large.

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
    g = GraphBuilder("mobilenet_v3_large", batch, resolution, seed)
    x = g.conv_bn_act("input", "features.0", STEM_CHANNELS, 3, stride=2, act="hardswish")
    for index, layer in enumerate(LAYERS, start=1):
        x = _inverted_residual(g, x, f"features.{index}", *layer)
    x = g.conv_bn_act(x, f"features.{len(LAYERS) + 1}", LAST_CHANNELS, 1, act="hardswish")
    x = g.global_avgpool(x, "avgpool")
    x = g.flatten(x, "flatten")
    x = g.gemm(x, "classifier.0", HIDDEN_FEATURES)
    x = g.act(x, "hardswish", "classifier.1")
    g.gemm(x, "classifier.3", num_classes, output="logits", final=True)
    return g.model("logits")
