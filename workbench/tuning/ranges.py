"""Calibration of activation ranges: the real interval each tensor's 8-bit integers will cover.

An :class:`Observer` (an Interpreter subclass: the float32 reference, watching) runs the
calibration inputs and keeps, per floating tensor, its smallest and largest finite value; for the
methods that look at the distribution, a second pass fills a histogram of :data:`BINS` bins over
that interval.  :func:`clip_range` then picks the interval to quantize over:

- ``minmax``: the whole observed interval (no value clipped; one outlier widens every step);
- ``percentile``: the interval between the ``100 - p`` and ``p`` percentiles (default
  p = 99.999), read off the histogram's cumulative counts;
- ``mse``: of the interval shrunk towards zero by each of :data:`SHRINK`'s factors, the one
  whose quantization (rounding inside, clipping outside) has the least mean squared error over
  the histogram;
- ``entropy``: of the same candidates, the one whose 256-level quantized distribution is closest
  to the observed one in Kullback-Leibler divergence (TensorRT's calibration, on an asymmetric
  interval: outliers folded into the edge bins, each level's mass spread over its non-empty bins).

:func:`params` turns an interval into :class:`~workbench.ir.quant.QuantParams`: widened to hold
zero (zero must be exact: padding, ReLU), ``scale = (hi - lo) / (qmax - qmin)`` and the zero point
that maps ``lo`` to ``qmin``.
"""
from __future__ import annotations

import numpy as np

from ..errors import WorkbenchError
from ..ir.quant import RANGES, QuantParams
from ..runtime.interpreter import ReferenceExecutor, check_inputs

METHODS = ("minmax", "percentile", "entropy", "mse")
BINS = 2048
#: Factors the mse and entropy methods shrink the observed interval by (towards zero).
SHRINK = tuple(np.round(np.linspace(0.2, 1.0, 81), 4))
LEVELS = 256


def _finite(a):
    """``a``'s finite values, flat."""
    ok = np.isfinite(a)
    return a.ravel() if ok.all() else a[ok]


class Stats:
    """What an observer saw of one tensor: ``lo``/``hi`` (finite extremes), ``count`` (values
    seen), and after a second pass ``hist`` (:data:`BINS` counts over ``[lo, hi]``; values
    outside, from inputs the first pass did not see, in the edge bins)."""

    def __init__(self):
        self.lo, self.hi, self.count, self.hist = np.inf, -np.inf, 0, None

    def see(self, a):
        finite = _finite(a)
        if finite.size:
            self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))
        self.count += finite.size

    def fill(self, a):
        if self.hist is None:
            self.hist = np.zeros(BINS, np.int64)
        finite = _finite(a)
        if finite.size and self.hi > self.lo:
            idx = ((finite.astype(np.float64) - self.lo) * (BINS / (self.hi - self.lo))).astype(np.int64)
            self.hist += np.bincount(np.clip(idx, 0, BINS - 1), minlength=BINS)
        elif finite.size:
            self.hist[0] += finite.size

    @property
    def centres(self):
        step = (self.hi - self.lo) / BINS
        return self.lo + step * (np.arange(BINS) + 0.5)


class Observer(ReferenceExecutor):
    """The float32 reference that records :class:`Stats` of every floating tensor it computes
    (graph inputs and layer outputs; ``tensors``: only those).  ``histograms``: fill the
    histograms of stats seen in an earlier pass instead of widening the extremes."""

    def __init__(self, graph, tensors=None, stats=None):
        super().__init__(graph)
        self.tensors = None if tensors is None else set(tensors)
        self.stats = {} if stats is None else stats
        self.histograms = stats is not None

    def _record(self, name, value):
        if not name or value is None or (self.tensors is not None and name not in self.tensors):
            return
        a = np.asarray(value)
        if not np.issubdtype(a.dtype, np.floating):
            return
        if self.histograms:
            if name in self.stats:
                self.stats[name].fill(a)
        else:
            self.stats.setdefault(name, Stats()).see(a)

    def run(self, feeds):
        for name, a in check_inputs(self.graph, feeds).items():
            self._record(name, a)
        return super().run(feeds)

    def run_layer(self, layer, args):
        out = super().run_layer(layer, args)
        for name, value in zip(layer.outputs, out):
            self._record(name, value)
        return out


def observe(graph, inputs, method="minmax", tensors=None):
    """``{tensor: Stats}`` of ``inputs`` (a non-empty list of NCHW feeds) run through the float32
    reference: extremes, and histograms where ``method`` needs them (a second pass)."""
    if method not in METHODS:
        raise WorkbenchError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    inputs = list(inputs)
    if not inputs:
        raise WorkbenchError("calibration: no inputs given (a list of {input name: array} feeds)")
    first = Observer(graph, tensors)
    for feeds in inputs:
        first.run(feeds)
    stats = {k: s for k, s in first.stats.items() if s.count}
    if method != "minmax":
        second = Observer(graph, tensors, stats)
        for feeds in inputs:
            second.run(feeds)
    return stats


def _quantize_error(centres, counts, lo, hi, qmin, qmax):
    """Mean squared error over the histogram of quantizing to ``[lo, hi]`` (zero exact)."""
    p = params(lo, hi, "uint8" if qmin == 0 else "int8")
    s, z = p.scale[0], p.zero_point[0]
    q = np.clip(np.rint(centres / s) + z, qmin, qmax)
    return float(np.sum(counts * ((q - z) * s - centres) ** 2) / max(counts.sum(), 1))


def _kl(hist, lo_bin, hi_bin):
    """KL divergence of the histogram clipped to bins ``[lo_bin, hi_bin)`` (outside mass folded into
    the edge bins) against its :data:`LEVELS`-level quantization."""
    p = hist[lo_bin:hi_bin].astype(np.float64).copy()
    p[0] += hist[:lo_bin].sum()
    p[-1] += hist[hi_bin:].sum()
    n = p.size
    edges = np.linspace(0, n, min(LEVELS, n) + 1).astype(np.int64)
    q = np.zeros(n)
    for a, b in zip(edges[:-1], edges[1:]):
        chunk = p[a:b]
        nonzero = chunk > 0
        if nonzero.any():
            q[a:b][nonzero] = chunk.sum() / nonzero.sum()
    mask = p > 0
    if not mask.any():
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-30))))


def clip_range(stats, method="minmax", percentile=99.999, dtype="uint8"):
    """``(lo, hi)``: the interval ``method`` quantizes ``stats``' tensor over (see the module doc)."""
    if method not in METHODS:
        raise WorkbenchError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    lo, hi = stats.lo, stats.hi
    if method == "minmax" or hi <= lo:
        return float(lo), float(hi)
    if stats.hist is None:
        raise WorkbenchError(f"calibration method {method!r} needs histograms: observe(..., method={method!r})")
    hist, step = stats.hist, (hi - lo) / BINS
    if method == "percentile":
        if not 50 < percentile <= 100:
            raise WorkbenchError(f"percentile must lie in (50, 100], got {percentile}")
        cdf = np.cumsum(hist) / hist.sum()
        tail = 1 - percentile / 100
        a = int(np.searchsorted(cdf, tail, side="right"))
        b = int(np.searchsorted(cdf, 1 - tail, side="left"))
        return float(lo + step * a), float(lo + step * min(b + 1, BINS))
    qmin, qmax = RANGES[dtype]
    best = None
    for f in SHRINK:
        # each end moves towards zero (an end on zero's side stays: params widens to zero anyway)
        c_lo, c_hi = (lo * f if lo < 0 else lo), (hi * f if hi > 0 else hi)
        if method == "mse":
            score = _quantize_error(stats.centres, hist, c_lo, c_hi, qmin, qmax)
        else:
            a = int(np.clip(np.floor((c_lo - lo) / step), 0, BINS - 1))
            b = int(np.clip(np.ceil((c_hi - lo) / step), a + 1, BINS))
            score = _kl(hist, a, b)
        if best is None or score < best[0] - 1e-12:
            best = (score, c_lo, c_hi)
    return float(best[1]), float(best[2])


def params(lo, hi, dtype="uint8", source=""):
    """Per-tensor :class:`QuantParams` covering ``[lo, hi]`` widened to hold zero, which maps to an
    integer exactly."""
    qmin, qmax = RANGES[dtype]
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise WorkbenchError(f"calibration: no finite range to quantize ({lo}, {hi})")
    scale = (hi - lo) / (qmax - qmin)
    if scale <= 0:   # an all-zero tensor: any scale represents it exactly
        return QuantParams((1.0,), (0,), dtype, source=source)
    zero = int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))
    return QuantParams((scale,), (zero,), dtype, source=source)


def calibrate(graph, inputs, method="minmax", percentile=99.999, dtype="uint8", tensors=None):
    """Fill ``graph.quant`` with per-tensor parameters of every floating activation (or
    ``tensors``) from ``inputs`` (NCHW feeds) by ``method``; returns ``{tensor: QuantParams}``.
    Tensors the inputs never gave a finite value keep no parameters."""
    inputs = list(inputs)
    stats = observe(graph, inputs, method, tensors)
    source = f"{method}" + (f" {percentile}" if method == "percentile" else "") + f" over {len(inputs)} input(s)"
    table = {}
    model = graph.meta.get("model_quant", {})   # a pre-quantized model's own parameters stay
    for name, st in stats.items():
        if name in model:
            continue
        lo, hi = clip_range(st, method, percentile, dtype)
        graph.quant[name] = table[name] = params(lo, hi, dtype, source)
    table.update(share_passthrough(graph))
    return table


#: Ops whose output holds only values of their input, in the same order or not: the output is
#: quantized with the input's parameters, so that qint8 routines move integers without requantizing.
PASSTHROUGH = ("MaxPool", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Transpose", "Split",
               "Slice", "Resize", "Upsample")


def share_passthrough(graph):
    """Give each :data:`PASSTHROUGH` layer's outputs its input's parameters (in graph order, so
    chains of them share one; a linear Resize's values lie inside its input's range too); returns
    ``{tensor: QuantParams}`` of the outputs changed."""
    changed = {}
    model = graph.meta.get("model_quant", {})
    for layer in graph:
        if layer.op not in PASSTHROUGH or not layer.inputs or layer.inputs[0] not in graph.quant:
            continue
        for out in layer.outputs[:None if layer.op == "Split" else 1]:
            if out and out not in model:
                graph.quant[out] = changed[out] = graph.quant[layer.inputs[0]]
    return changed
