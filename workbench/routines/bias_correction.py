"""Bias correction for weights rounded to bfloat16.

Rounding a layer's weights to bfloat16 moves each weight by up to 2^-9 of itself.  Over one
input that is noise, but the same rounding meets every input, and activations are not centred
(after a ReLU every one is >= 0): an output channel's rounding errors, weighted by its inputs'
means, add up to a shift that is the same on every run.  It is the larger part of the error the
weights cost: on VGG-16 with only the weights rounded the logits are 0.0056 of their peak off;
with the shift taken out of the bias, 0.0020 (the activations' own rounding is unbiased and
stays).  The shift is known before any run from the mean of each input channel:

    shift[o] = sum over (c, kernel tap) of (rounded(w) - w)[o, c, tap] * mean[c]

so a bfloat16 routine packs ``bias - shift`` with its rounded weights, at no cost per run.
Accuracy-aware int8 tools do the same for their weights ("bias correction").

The means come from calibration (:mod:`workbench.tuning.input_stats`): each layer that carries
them holds its first input's mean per channel in ``layer.meta[MEAN]``, and the tuned file
stores it.  A layer without them keeps its bias.  Padding is zero, not the mean, so the border
outputs of a padded convolution are corrected a little too much: they are few.
"""
from __future__ import annotations

import numpy as np

from ..ir.formats import Format  # noqa: F401  (bfloat16 registered with NumPy)

#: ``layer.meta`` key of the layer's first input's mean per channel (float32, 1-D).
MEAN = "input_mean"


def channels(layer):
    """How many channels ``layer``'s input mean has: the depth its weights multiply (a Conv's
    input channels, a product's K), or None where its weights are not a constant."""
    w = layer.consts.get(1)
    if w is None or np.ndim(w) < 2:
        return None
    if layer.op == "Conv":
        return int(np.shape(w)[1]) * int(layer.attrs.get("group", 1))
    if layer.op == "Gemm":
        return int(np.shape(w)[1] if layer.attrs.get("transB") else np.shape(w)[0])
    if layer.op == "MatMul" and np.ndim(w) == 2:
        return int(np.shape(w)[0])
    return None


def input_mean(layer, n):
    """The calibrated mean of ``layer``'s first input per channel, or None where it has none (or
    not ``n`` of them)."""
    mean = layer.meta.get(MEAN)
    if mean is None or np.shape(mean) != (n,):
        return None
    return np.asarray(mean, np.float64)


def rounding(w):
    """``rounded(w) - w`` in float64: what rounding ``w`` to bfloat16 (to nearest even, as every
    pack of the bfloat16 kernels does) moves each weight by; 0 where ``w`` is not finite."""
    w = np.asarray(w, np.float32)
    d = w.astype("bfloat16").astype(np.float64) - w.astype(np.float64)
    return np.where(np.isfinite(d), d, 0.0)


def _variable_bias(layer):
    """Whether ``layer`` reads its bias (input 2) as an activation, which prepare cannot change."""
    return len(layer.inputs) > 2 and bool(layer.inputs[2]) and 2 not in layer.consts


def _apply(bias, shift, n):
    if bias is None:
        return np.ascontiguousarray(-shift, np.float32)
    return np.ascontiguousarray(np.asarray(bias, np.float64).reshape(-1) - shift, np.float32).reshape(np.shape(bias) or (n,))


def conv(layer, w, bias):
    """The bias a bfloat16 convolution packs with weights ``w`` (O, C/groups, *kernel): ``bias``
    less the rounding's shift where ``layer`` has calibrated means, else ``bias`` itself."""
    w = np.asarray(w, np.float32)
    groups = int(layer.attrs.get("group", 1))
    mean = input_mean(layer, w.shape[1] * groups)
    if mean is None or w.shape[0] % groups or _variable_bias(layer):
        return bias
    d = rounding(w).reshape(groups, w.shape[0] // groups, w.shape[1], -1)
    shift = np.einsum("gock,gc->go", d, mean.reshape(groups, w.shape[1])).reshape(-1)
    return _apply(bias, shift, w.shape[0])


def matmul(layer, b, bias):
    """The bias a bfloat16 product ``a @ b`` packs, ``b`` (K, N): ``bias`` less the shift."""
    b = np.asarray(b, np.float32)
    mean = input_mean(layer, b.shape[0])
    if mean is None or _variable_bias(layer):
        return bias
    return _apply(bias, mean @ rounding(b), b.shape[1])
