"""Model zoo: classic CNNs built directly with ``onnx.helper``.

Every model has one float32 input ``"input"`` of shape
[batch, 3, resolution, resolution] and one float32 output ``"logits"`` of
shape [batch, num_classes]; opset 17, IR version 8.  Weights are random but
deterministic: all of them come from ``numpy.random.default_rng(seed)``.
BatchNormalization running statistics are calibrated on a standard-normal
probe (see `workbench.zoo._builder`), so activations stay of order 1 through
the whole network and the logits have a std near 1 for standard-normal input.

Examples
--------
>>> from workbench import zoo
>>> model = zoo.build("resnet50", batch=2, resolution=160)
>>> zoo.save("tiny", "/tmp/tiny.onnx")
'/tmp/tiny.onnx'
"""

from __future__ import annotations

import os
from types import ModuleType

import onnx

from . import mobilenet_v2, mobilenet_v3, resnet, tiny, vgg

NAMES = ("tiny", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "vgg16")

_MODULES: dict[str, ModuleType] = {
    "tiny": tiny,
    "resnet50": resnet,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_large": mobilenet_v3,
    "vgg16": vgg,
}

__all__ = ["NAMES", "build", "default_resolution", "save"]


def _module(name: str) -> ModuleType:
    try:
        return _MODULES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(NAMES)}") from None


def default_resolution(name: str) -> int:
    """Input resolution used by `build` when none is given (224, or 32 for tiny)."""
    return _module(name).DEFAULT_RESOLUTION


def build(name: str, batch: int = 1, resolution: int | None = None, seed: int = 0,
          num_classes: int = 1000) -> onnx.ModelProto:
    """Build a zoo model with seeded random weights.

    Parameters
    ----------
    name : str
        One of `NAMES`.
    batch : int, default 1
        Static batch size of the input and output.
    resolution : int, optional
        Input height and width; defaults to `default_resolution` of the model.
    seed : int, default 0
        Seed of the weights; equal arguments give byte-identical models.
    num_classes : int, default 1000
        Width of the ``logits`` output.

    Returns
    -------
    onnx.ModelProto
        A model that passes ``onnx.checker.check_model(full_check=True)``.

    Raises
    ------
    ValueError
        If ``name`` is not a known model, or the shape arguments are invalid.
    """
    module = _module(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if resolution is None:
        resolution = module.DEFAULT_RESOLUTION
    return module.build(batch=batch, resolution=resolution, seed=seed, num_classes=num_classes)


def save(name: str, path: str | os.PathLike, **kwargs) -> str | os.PathLike:
    """Build model ``name`` and write it to ``path``.

    Parameters
    ----------
    name : str
        One of `NAMES`.
    path : str or os.PathLike
        Destination ``.onnx`` file; its directory must exist.
    **kwargs
        Passed to `build` (``batch``, ``resolution``, ``seed``, ``num_classes``).

    Returns
    -------
    str or os.PathLike
        ``path``.
    """
    onnx.save_model(build(name, **kwargs), os.fspath(path))
    return path

