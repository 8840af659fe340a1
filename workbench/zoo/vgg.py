"""VGG-16 (torchvision ``vgg16`` layout, 138.36M parameters at 224x224).

Like the canonical model (and unlike the others in the zoo) its convolutions
carry a bias and have no BatchNormalization.  The classifier's first Gemm takes
``512 * (resolution // 32) ** 2`` features, so no adaptive pooling is needed.
"""

from __future__ import annotations

import onnx

from ._builder import GraphBuilder

DEFAULT_RESOLUTION = 224
# Output channels of each 3x3 conv; "M" is a 2x2 MaxPool.
CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
          512, 512, 512, "M", 512, 512, 512, "M")
HIDDEN_FEATURES = 4096


def build(batch: int = 1, resolution: int = DEFAULT_RESOLUTION, seed: int = 0,
          num_classes: int = 1000) -> onnx.ModelProto:
    """Build VGG-16 with its three-layer classifier.

    Parameters
    ----------
    batch, resolution : int
        Input shape is [batch, 3, resolution, resolution]; resolution >= 32.
    seed : int
        Weight seed.
    num_classes : int
        Width of the ``logits`` output.

    Returns
    -------
    onnx.ModelProto
    """
    if resolution < 32:
        raise ValueError(f"vgg16 needs resolution >= 32, got {resolution}")
    g = GraphBuilder("vgg16", batch, resolution, seed)
    x, index = "input", 0  # torchvision's ``features`` indices
    for item in CONFIG:
        if item == "M":
            x = g.pool(x, "MaxPool", f"features.{index}", kernel=2, stride=2)
            index += 1
        else:
            x = g.conv(x, f"features.{index}", item, 3, bias=True)
            x = g.act(x, "relu", f"features.{index + 1}")
            index += 2
    x = g.flatten(x, "flatten")
    for i in range(2):
        x = g.gemm(x, f"classifier.{3 * i}", HIDDEN_FEATURES)
        x = g.act(x, "relu", f"classifier.{3 * i + 1}")
        x = g.dropout(x, f"classifier.{3 * i + 2}")
    g.gemm(x, "classifier.6", num_classes, output="logits", final=True)
    return g.model("logits")
