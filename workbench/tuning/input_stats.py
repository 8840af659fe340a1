"""Calibration of the layers' input means: the data bias correction needs
(:mod:`workbench.routines.bias_correction`).

The float32 reference executor runs the calibration inputs, and every layer whose weights a
bfloat16 routine rounds (a Conv, Gemm or MatMul with constant weights) records the mean of its
first input per channel over all of them, into ``layer.meta[MEAN]``.  Real inputs make the best
calibration (the means of a photograph's activations are not those of noise); without them
:func:`default_inputs` draws seeded random ones, from seeds apart from those the error checks
use, so that an error reported on the check inputs is not measured on the inputs it was fitted to.
"""
from __future__ import annotations

import numpy as np

from ..errors import WorkbenchError
from ..routines.bias_correction import MEAN, channels
from ..runtime.interpreter import ReferenceExecutor

#: Seeds of the default calibration inputs (the error checks use 0, 1, 2, ...).
SEED = 1000
SAMPLES = 4


def channel_axes(layer, ndim):
    """The axes of ``layer``'s first input that a per-channel mean averages over, or None where
    the layer's weights are not rounded by a bfloat16 routine."""
    if channels(layer) is None or ndim < 2:
        return None
    if layer.op == "Conv":
        return (0,) + tuple(range(2, ndim))
    if layer.op == "Gemm" and not layer.attrs.get("transA") and ndim == 2:
        return (0,)
    if layer.op == "MatMul":
        return tuple(range(ndim - 1))
    return None


class _Means(ReferenceExecutor):
    def __init__(self, graph):
        super().__init__(graph)
        self.sums = {}   # layer -> [sum per channel (float64), count]

    def run_layer(self, layer, args):
        x = args[0] if args else None
        axes = channel_axes(layer, np.ndim(x)) if x is not None else None
        if axes is not None and np.issubdtype(np.asarray(x).dtype, np.floating):
            s = self.sums.setdefault(layer.name, [0.0, 0])
            s[0] = s[0] + np.asarray(x, np.float64).sum(axis=axes)
            s[1] += int(np.prod([np.shape(x)[a] for a in axes]))
        return super().run_layer(layer, args)


def collect(graph, inputs):
    """Run ``inputs`` (a non-empty list of NCHW feeds) through the float32 reference and store
    each such layer's input mean per channel in ``layer.meta[MEAN]`` (a layer whose mean is not
    finite, from an input holding NaN or infinity, gets none).  Returns ``{layer: mean}``."""
    inputs = list(inputs)
    if not inputs:
        raise WorkbenchError("calibration: no inputs given (a list of {input name: array} feeds)")
    ex = _Means(graph)
    for feeds in inputs:
        ex.run(feeds)
    means = {}
    for layer in graph:
        layer.meta.pop(MEAN, None)
        total = ex.sums.get(layer.name)
        if total is not None and total[1]:
            mean = np.asarray(total[0] / total[1], np.float32)
            if np.isfinite(mean).all():
                layer.meta[MEAN] = means[layer.name] = mean
    return means


def default_inputs(session, samples=SAMPLES):
    """Seeded random calibration inputs in ``session``'s io_format (seeds from :data:`SEED`)."""
    return [session.random_inputs(seed=SEED + i) for i in range(samples)]


def clear(graph):
    """Drop every layer's calibrated mean (bfloat16 routines then keep the model's biases)."""
    for layer in graph:
        layer.meta.pop(MEAN, None)
