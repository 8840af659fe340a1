"""Executors.  :class:`Interpreter` walks the layers in topological order; subclasses say how
one layer runs (the NumPy reference here; routines, profiling and checking in later modules).
"""
from __future__ import annotations

import time

import numpy as np

from . import cpu
from ..ir import ops
from ..errors import InputError, WorkbenchError, where
from ..ir.formats import Format
from ..ir.graph import NCHW


def check_inputs(graph, feeds, io_format=NCHW):
    """Validate run-time inputs against the graph's input specs (names, shapes, dtypes); with
    ``io_format="nhwc"`` 4-D float inputs are expected channels-last, (N, H, W, C)."""
    unknown = [n for n in feeds if n not in graph.inputs]
    if unknown:
        raise InputError(f"unknown input name(s) {unknown}; the model's inputs are {list(graph.inputs)}")
    missing = [n for n in graph.inputs if n not in feeds]
    if missing:
        raise InputError(f"missing input(s) {missing}; expected {', '.join(f'{n}: {s}' for n, s in graph.inputs.items())}")
    arrays = {}
    for name, spec in graph.inputs.items():
        a = feeds[name]
        if not isinstance(a, np.ndarray):
            a = np.asarray(a)
        if a.dtype.name != spec.dtype:
            raise InputError(f"input {name!r}: dtype {a.dtype.name}, the model expects {spec.dtype}")
        shape = io_shape(spec, io_format)
        if tuple(a.shape) != shape:
            raise InputError(f"input {name!r}: shape {tuple(a.shape)}, the model expects {shape}"
                             + (f" ({io_format})" if shape != spec.shape else ""))
        arrays[name] = a
    return arrays


#: Outputs from this many bytes are copied out on the run's threads (a recogniser's 40 x 18,710
#: class scores: 3 MB, a quarter of a millisecond on one thread), smaller ones by NumPy.
PARALLEL_COPY_BYTES = 1 << 18


def copy_out(view, threads):
    """A copy of an output buffer for the caller to keep, the big ones made on ``threads``: a
    contiguous buffer, or rows of one stride (a channel slice of NHWC pixels, seen as (N, H*W, C))."""
    rows = _rows(view) if view.nbytes >= PARALLEL_COPY_BYTES and threads > 1 else None
    if rows is None:
        return np.array(view, order="C")
    flat, n, width, ld = rows
    out = np.empty(view.shape, view.dtype)
    cpu.best_module("tensor_ops").copy_blocks(flat, out.reshape(-1), n, width, ld, 0, width, 0, threads)
    return out


def _rows(view):
    """``(flat, rows, width, ld)`` when ``view`` is ``rows`` runs of ``width`` contiguous elements
    ``ld`` apart, with ``flat`` a 1-D view of its elements from the first to the last; else None."""
    if view.size == 0 or view.ndim == 0 or view.strides[-1] != view.itemsize:
        return None
    width = view.shape[-1]
    if view.flags.c_contiguous:
        return view.reshape(-1), 1, view.size, view.size
    n = view.size // width
    try:
        two = view.view()
        two.shape = (n, width)   # no copy: ValueError where the rows are not evenly spaced
    except AttributeError:
        return None
    ld = two.strides[0] // view.itemsize
    if two.strides[0] % view.itemsize or ld < width:
        return None
    span = (n - 1) * ld + width
    return np.lib.stride_tricks.as_strided(two, (span,), (view.itemsize,)), n, width, ld


class FeedCheck:
    """:func:`check_inputs` for one graph and ``io_format``, with a fast path for feeds that are
    exactly the model's inputs as arrays of the right dtypes and shapes (in any memory order):
    everything else takes the general path, which converts or says what is wrong."""

    def __init__(self, graph, io_format=NCHW):
        self.graph, self.io_format = graph, io_format
        self.expected = {n: (np.dtype(s.dtype), io_shape(s, io_format)) for n, s in graph.inputs.items()}

    def __call__(self, feeds):
        if type(feeds) is dict and len(feeds) == len(self.expected):
            arrays = {}
            for name, (dtype, shape) in self.expected.items():
                a = feeds.get(name)
                if type(a) is not np.ndarray or a.dtype != dtype or a.shape != shape:
                    break
                arrays[name] = a
            else:
                return arrays
        return check_inputs(self.graph, feeds, self.io_format)


def io_format_of(spec, io_format):
    """The :class:`~workbench.ir.formats.Format` a graph input or output of ``spec`` has at the
    model's boundary: its own data type, in :func:`io_layout`."""
    return Format(spec.dtype, io_layout(spec, io_format))


def io_layout(spec, io_format):
    """The layout a graph input or output of ``spec`` has at the model's boundary: ``io_format``
    for 4-D float tensors, NCHW (plain row-major) for everything else."""
    return io_format if len(spec.shape) == 4 and np.dtype(spec.dtype).kind == "f" else NCHW


def io_shape(spec, io_format):
    from ..routines.adapts import physical_shape
    return physical_shape(spec.with_layout(io_layout(spec, io_format)))


def random_inputs(graph, seed=0):
    """Seeded random inputs of the right shapes and dtypes (standard normal for floats)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, spec in graph.inputs.items():
        dt = np.dtype(spec.dtype)
        if dt.kind == "f":
            feeds[name] = rng.standard_normal(spec.shape).astype(dt)
        elif dt.kind == "b":
            feeds[name] = rng.integers(0, 2, spec.shape).astype(dt)
        else:
            feeds[name] = rng.integers(0, 10, spec.shape).astype(dt)
    return feeds


class Interpreter:
    """Run a :class:`~workbench.ir.graph.Graph` layer by layer.

    Subclasses override :meth:`run_layer`.  Intermediate tensors are released as soon as their
    last reader has run.
    """

    def __init__(self, graph):
        self.graph = graph
        self.order = list(graph)
        last_use = {}
        for step, layer in enumerate(self.order):
            for t in layer.activation_inputs:
                last_use[t] = step
        self._release = [[] for _ in self.order]
        for t, step in last_use.items():
            if t not in graph.outputs:
                self._release[step].append(t)

    def run(self, feeds):
        """Run the model; returns ``{output name: array}``."""
        env = dict(check_inputs(self.graph, feeds))
        for step, layer in enumerate(self.order):
            args = [layer.consts[i] if i in layer.consts else (env[t] if t else None)
                    for i, t in enumerate(layer.inputs)]
            try:
                results = self.run_layer(layer, args)
            except WorkbenchError:
                raise
            except Exception as e:
                raise RuntimeError(f"{where(layer)} failed: {type(e).__name__}: {e}") from e
            for name, value in zip(layer.outputs, results):
                if name:
                    env[name] = value
            for t in self._release[step]:
                env.pop(t, None)
        out = {}
        for name in self.graph.outputs:
            out[name] = self.graph.constants[name] if name in self.graph.constants else env[name]
        return out

    def run_layer(self, layer, args):
        raise NotImplementedError


class ReferenceExecutor(Interpreter):
    """Runs every layer with its NumPy reference (:meth:`workbench.ir.ops.Op.compute`); a
    pre-quantized model's tensors (``graph.meta["model_quant"]``) rounded to their parameters
    as the model's QuantizeLinear/DequantizeLinear pairs round them."""

    def __init__(self, graph):
        super().__init__(graph)
        self._rounded = {t: graph.quant[t] for t in graph.meta.get("model_quant", {}) if t in graph.quant}

    def run(self, feeds):
        if self._rounded and any(t in self._rounded for t in feeds):
            feeds = {t: (self._rounded[t].dequantize(self._rounded[t].quantize(v)) if t in self._rounded else v)
                     for t, v in check_inputs(self.graph, feeds).items()}
        return super().run(feeds)

    def run_layer(self, layer, args):
        mid = layer.meta.get("pre_residual_quant")
        if mid is not None and layer.attrs.get("residual") and not layer.attrs.get("residual_after_activation"):
            out = [_round_before_residual(layer, args, mid)]
        elif layer.op == "If":   # the branch it picks, by the same reference
            branch = ops.get("If").branch(layer, args[0])
            result = type(self)(branch).run(dict(zip(layer.inputs[1:], args[1:])))
            out = [result[o] for o in branch.outputs]
        else:
            out = ops.get(layer.op).compute(layer, args)
        if self._rounded:
            out = [self._rounded[t].dequantize(self._rounded[t].quantize(v)) if t in self._rounded else v
                   for t, v in zip(layer.outputs, out)]
        return out


def _round_before_residual(layer, args, params):
    """A residual Conv whose own output the model rounds (``params``) before the add: the
    convolution alone, rounded, then the residual and the activation."""
    from dataclasses import replace
    from ..ir.ops.activation import epilogue
    bare = replace(layer, attrs={k: v for k, v in layer.attrs.items()
                                 if k not in ("residual", "activation", "activation_params")})
    y = ops.get("Conv").compute(bare, args[:3])[0]
    return epilogue(layer, params.dequantize(params.quantize(y)) + args[3])


class TimedReferenceExecutor(ReferenceExecutor):
    """The reference executor, recording each layer's wall time (seconds) of the last run in ``times``."""

    def __init__(self, graph):
        super().__init__(graph)
        self.times = {}

    def run_layer(self, layer, args):
        start = time.perf_counter()
        out = super().run_layer(layer, args)
        self.times[layer.name] = time.perf_counter() - start
        return out
