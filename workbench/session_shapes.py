"""New input sizes without a new tuning session by hand: a Session given inputs of another shape
plans for that shape.

A Session's graph is imported at one set of input shapes, and its plan is measured for them.  An
OCR recogniser sees every text-line width and a detector every page size, so :meth:`run` given
inputs of other shapes imports the model again at those shapes, tunes it with the session's own
settings (data types, filters, pins that still apply, budget) on the same profile database, which
already holds every layer signature the shapes share, so only the new ones are measured, and
says so in a :class:`NewShapeWarning` with the time it took.  Each shape's session is kept (the
session's own plan as well): a second run at a width is a tuned run.  The quantization parameters
and bias-correction means are per tensor and per layer, not per shape: the new graph takes them
over.
"""
from __future__ import annotations

import threading
import time
import warnings

from .errors import ShapeError, WorkbenchError
from .ir.graph import NHWC


class NewShapeWarning(UserWarning):
    """A session planned for input shapes it had no plan for (what it measured and how long)."""


def shape_key(shapes):
    """A hashable key of ``{input: shape}``."""
    return tuple(sorted((str(k), tuple(int(d) for d in v)) for k, v in shapes.items()))


def _fits(graph, choice):
    """Whether ``choice`` names, for every layer of ``graph``, a routine that applies to it."""
    from . import routines
    for layer in graph:
        d = choice.get(layer.name)
        if d is None or d not in routines.routines_for(layer.op):
            return False
        if not routines.get(layer.op, d).applies(layer, graph.input_specs(layer)):
            return False
    return True


class SessionShapes:
    """Plans kept per set of input shapes (mixed into :class:`~workbench.session.Session`)."""

    _source = None            # the model the graph was imported from (ModelProto)
    _import = None            # how: {"constants": ..., "fuse": ...}
    _symbolic = None          # {input: {dim index: name}} the source leaves symbolic
    _other_shapes = None      # shape key -> Session
    _stored_shapes = None     # shape key -> {"shapes", "choice", "predicted_ms"} of a loaded tuned file
    _shapes_lock = None

    def _remember_source(self, source, constants=None, fuse=True):
        from .onnx_io.read import read_model
        from .tuned_file import _symbolic_of
        self._source = read_model(source)
        self._import = {"constants": constants, "fuse": fuse}
        self._symbolic = {k: v for k, v in _symbolic_of(self._source).items() if k in self.graph.inputs}

    def _shape_records(self):
        """The plans for other shapes as a tuned file keeps them (made here, or loaded)."""
        records = dict(self._stored_shapes or {})
        for key, other in (self._other_shapes or {}).items():
            if other.plan is not None:
                records[key] = {"shapes": {k: list(v) for k, v in other.input_shapes().items()},
                                "choice": dict(other.plan.choice), "predicted_ms": float(other.predicted_s * 1e3)}
        return [records[k] for k in sorted(records)]

    def input_shapes(self):
        """``{input: logical shape}`` the session's graph was imported at (NCHW order)."""
        return {k: tuple(s.shape) for k, s in self.graph.inputs.items()}

    def _logical(self, inputs):
        """``{input: logical shape}`` of feeds in the session's io_format."""
        out = {}
        for k, v in inputs.items():
            shape = tuple(getattr(v, "shape", ()))
            if self.io_format == NHWC and len(shape) == 4 and k in self.graph.inputs and len(self.graph.inputs[k].shape) == 4:
                shape = (shape[0], shape[3], shape[1], shape[2])
            out[k] = shape
        return out

    @property
    def shape_plans(self):
        """``{shape key: Session}`` of the other input shapes planned so far."""
        return dict(self._other_shapes or {})

    def for_shapes(self, shapes):
        """The session planned for input ``shapes`` (``{input: logical shape}``; inputs not named
        keep theirs): this one where they are its graph's, else one planned now or earlier."""
        shapes = {**self.input_shapes(), **{k: tuple(int(d) for d in v) for k, v in shapes.items()}}
        unknown = sorted(set(shapes) - set(self.graph.inputs))
        if unknown:
            raise ShapeError(f"shapes given for unknown input(s) {unknown}; the inputs are {list(self.graph.inputs)}")
        key = shape_key(shapes)
        if key == shape_key(self.input_shapes()):
            return self
        if self._shapes_lock is None:
            self._shapes_lock = threading.Lock()
        with self._shapes_lock:
            if self._other_shapes is None:
                self._other_shapes = {}
            other = self._other_shapes.get(key)
            if other is None:
                other = self._other_shapes[key] = self._plan_shapes(shapes)
        return other

    def _plan_shapes(self, shapes):
        from .ir.passes import optimize
        from .onnx_io.read import import_onnx
        if self._source is None:
            raise ShapeError(f"{self.graph.name!r} is planned for input shapes {self.input_shapes()}, and this session "
                             f"does not have the model to import at {shapes}: open it with Session.from_onnx (or load "
                             f"the tuned file) to run other shapes")
        t0 = time.perf_counter()
        try:
            graph = import_onnx(self._source, shapes=shapes, name=self.graph.name,
                                constants=self._import.get("constants"))
        except WorkbenchError as e:
            raise ShapeError(f"input shapes {shapes}: {e}") from None
        if self._import.get("fuse", True):
            optimize(graph)
        tensors = graph.tensor_names()
        for tensor, params in self.graph.quant.items():   # parameters per tensor, whatever the shape
            if tensor in tensors:
                graph.quant[tensor] = params
        for layer in graph:
            mine = self.graph.layer(layer.name) if layer.name in self.graph else None
            if mine is not None and "input_mean" in mine.meta and mine.op == layer.op:
                layer.meta["input_mean"] = mine.meta["input_mean"]
        other = type(self)(graph, num_threads=self.num_threads, db=self.db, io_format=self.io_format,
                           max_concurrency=self.max_concurrency, flush_denormals=self.flush_denormals)
        other._source, other._import = self._source, self._import
        other.calibration, other.quant_calibration = self.calibration, self.quant_calibration
        other.max_error, other.min_cosine = self.max_error, self.min_cosine
        other.precision_pins = {k: v for k, v in self.precision_pins.items() if k in graph}
        other._symbolic = self._symbolic
        other.precisions = self.precisions
        stored = (self._stored_shapes or {}).get(shape_key(shapes))
        if stored is not None and _fits(graph, stored["choice"]):   # a tuned file's plan for them: no profiling
            other._adopt(stored["choice"], stored.get("predicted_ms", 0.0) / 1e3, "loaded (stored for these shapes)")
            return other
        pins = {k: v for k, v in self.pins.items() if k in graph}
        other.tune(filters=self.filters, pins=pins, precisions=self.precisions)
        prof = other.profiled
        warnings.warn(f"{self.graph.name!r}: planned for new input shapes {shapes} in {time.perf_counter() - t0:.2f} s "
                      f"({prof.measured} profile record(s) measured, {prof.reused} reused from the database); the "
                      f"plan is kept for later runs at these shapes", NewShapeWarning, stacklevel=4)
        return other
