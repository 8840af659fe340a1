"""The tuned-model file: one ONNX file that runs again without profiling.

It is the fused graph written as standard ONNX (:mod:`workbench.onnx_io.write`), so ONNX Runtime
runs it and gets the same outputs, annotated in ``metadata_props``:

- each layer's node: ``workbench.routine`` (the descriptor), ``workbench.adapts`` (JSON list of
  ``[tensor, from, to]`` adapts feeding it), ``workbench.cost_ms``, ``workbench.candidates``
  (JSON ``{descriptor: ms}``: why this routine), ``workbench.pinned``, and where calibrated
  ``workbench.input_mean`` (base64 of little-endian float32: its input's mean per channel, from
  which bfloat16 routines correct their biases, :mod:`workbench.routines.bias_correction`), and on
  an If whose condition is known only at run time ``workbench.branch_plans`` (JSON ``{branch:
  {layer: descriptor}}``: each branch's own plan, :mod:`workbench.tuning.branches`);
- the model: ``workbench.format``, ``workbench.version``, ``workbench.fingerprint`` and
  ``workbench.fingerprint_facts`` (the machine), ``workbench.num_threads``,
  ``workbench.io_format``, ``workbench.predicted_ms``, ``workbench.measured_ms``,
  ``workbench.plan_method``, ``workbench.filters``, ``workbench.pins``,
  ``workbench.precision_pins`` (JSON: layer -> the data type it was pinned to), ``workbench.precisions``
  (JSON list of the data types tuning allowed) and ``workbench.precision_error`` (JSON: the plan's
  error against float32, :class:`~workbench.tuning.precision.PrecisionError`; empty for a float32 plan),
  ``workbench.max_error`` and ``workbench.min_cosine`` (the error budget tuning kept to; empty
  for none) and ``workbench.demoted``
  (JSON list of the layers the budget kept in float32, :mod:`workbench.tuning.budget`),
  ``workbench.calibration`` (what bias correction's means were calibrated on; empty for none),
  ``workbench.quant_calibration`` (what the quantization ranges were calibrated on) and
  ``workbench.quant`` (JSON: the graph's quantization parameters by tensor,
  :class:`~workbench.ir.quant.QuantTable`; empty where it has none), ``workbench.input_shapes``
  (JSON ``{input: shape}``: the shapes the plan is for, where the file's inputs keep the source
  model's symbolic dimensions) and ``workbench.shape_plans`` (JSON list of the plans for other
  input shapes: ``{"shapes", "choice", "predicted_ms"}``; a session runs them without profiling,
  :mod:`workbench.session_shapes`).

:func:`read` imports the file (the same fusion gives the same layers), reads the annotations
back, checks them, and returns them as plain data (:class:`TunedRecord`); :func:`write` is its
inverse.  The Session converts both ways (:meth:`~workbench.session.Session.load` gives one ready
to run; on a machine with another fingerprint it warns, :class:`FingerprintWarning`, and the
session can :meth:`~workbench.session.Session.retune`), so this module knows nothing of sessions.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

import numpy as np

from . import routines
from .routines import bias_correction
from .routines.bias_correction import MEAN
from .errors import WorkbenchError, where
from .ir.graph import NCHW, NHWC
from .ir.quant import QuantError, QuantTable
from .tuning.branches import set_plans

FORMAT = "routine-workbench tuned model 1"
PREFIX = "workbench."


class TunedModelError(WorkbenchError):
    """A tuned-model file whose annotations are missing, malformed or do not fit its graph."""


class FingerprintWarning(UserWarning):
    """The tuned file was tuned on another machine (or thread count, or build)."""


def is_tuned(model):
    """Whether an :class:`onnx.ModelProto` carries our annotations."""
    return any(p.key == PREFIX + "format" for p in model.metadata_props)


@dataclass
class TunedRecord:
    """What a tuned file holds, as plain data (:meth:`Session.to_record
    <workbench.session.Session.to_record>` makes one, :meth:`Session.from_record
    <workbench.session.Session.from_record>` turns one back into a session).

    ``graph`` is the fused graph, ``choice`` its routine per layer, ``costs`` the candidates each
    layer was chosen among (``{layer: {descriptor: s}}``), ``adapts_into`` the plan's adapts by
    the layer that reads them (``{layer: [[tensor, from, to], ...]}``, written for readers of the
    file: they follow from the choice), ``metadata`` the model-level fields as written.
    """

    graph: object
    choice: dict
    costs: dict
    num_threads: int
    io_format: str
    predicted_s: float
    plan_method: str = "?"
    measured_s: float = None
    pins: dict = field(default_factory=dict)
    filters: list = field(default_factory=list)
    adapts_into: dict = field(default_factory=dict)
    fingerprint: str = ""
    fingerprint_facts: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    precisions: list = field(default_factory=lambda: ["float32"])
    precision_error: dict = None
    max_error: float = None
    demoted: list = field(default_factory=list)
    calibration: str = None
    min_cosine: float = None
    quant_calibration: str = None
    precision_pins: dict = field(default_factory=dict)
    #: ``{input: {dim index: name}}``: dimensions left symbolic in the file (other shapes run too)
    symbolic: dict = field(default_factory=dict)
    #: plans for other input shapes: ``[{"shapes": {input: shape}, "choice": {...}, "predicted_ms": ms}]``
    shape_plans: list = field(default_factory=list)
    #: the file's ModelProto (read): what other input shapes are imported from
    source: object = None

    def fingerprint_differs(self, num_threads):
        """The machine facts (``fingerprint_facts`` keys) in which this machine, running with
        ``num_threads``, differs from the one the file was tuned on; [] when the fingerprints agree."""
        from .tuning.profiledb import fingerprint, fingerprint_facts
        if fingerprint(num_threads) == self.fingerprint:
            return []
        mine = fingerprint_facts(num_threads)
        facts = self.fingerprint_facts
        return sorted(k for k in set(mine) | set(facts) if mine.get(k) != facts.get(k)) or ["fingerprint"]


def write(record, path):
    """Write ``record`` (a :class:`TunedRecord`) to ``path`` as one ONNX file."""
    from ._version import __version__
    from .onnx_io.write import export_graph, save as save_model
    from .tuning.profiledb import fingerprint, fingerprint_facts
    nodes = {}
    for layer in record.graph:
        c = record.costs.get(layer.name, {})
        chosen = record.choice[layer.name]
        nodes[layer.name] = {
            PREFIX + "routine": chosen,
            PREFIX + "adapts": json.dumps(record.adapts_into.get(layer.name, [])),
            PREFIX + "cost_ms": f"{c[chosen] * 1e3:.6f}" if chosen in c else "",
            PREFIX + "candidates": json.dumps({d: round(v * 1e3, 6) for d, v in sorted(c.items(), key=lambda kv: kv[1])}),
            PREFIX + "pinned": "1" if layer.name in record.pins else "0",
        }
        mean = layer.meta.get(MEAN)
        if mean is not None:
            nodes[layer.name][PREFIX + MEAN] = base64.b64encode(np.asarray(mean, "<f4").tobytes()).decode("ascii")
        if layer.meta.get("branch_plans"):
            nodes[layer.name][PREFIX + "branch_plans"] = json.dumps(layer.meta["branch_plans"], sort_keys=True)
    meta = {
        "format": FORMAT, "version": __version__,
        "fingerprint": fingerprint(record.num_threads),
        "fingerprint_facts": json.dumps(fingerprint_facts(record.num_threads), sort_keys=True),
        "num_threads": record.num_threads, "io_format": record.io_format,
        "predicted_ms": f"{record.predicted_s * 1e3:.6f}",
        "measured_ms": f"{record.measured_s * 1e3:.6f}" if record.measured_s is not None else "",
        "plan_method": record.plan_method, "filters": json.dumps(record.filters), "pins": json.dumps(record.pins),
        "precisions": json.dumps(list(record.precisions)),
        "precision_error": json.dumps(record.precision_error) if record.precision_error else "",
        "max_error": repr(float(record.max_error)) if record.max_error is not None else "",
        "demoted": json.dumps(sorted(record.demoted)),
        "calibration": record.calibration or "",
        "min_cosine": repr(float(record.min_cosine)) if record.min_cosine is not None else "",
        "precision_pins": json.dumps(record.precision_pins) if record.precision_pins else "",
        "quant_calibration": record.quant_calibration or "",
        "quant": json.dumps(record.graph.quant.to_record()) if len(record.graph.quant) else "",
        "input_shapes": json.dumps({k: list(v.shape) for k, v in record.graph.inputs.items()}),
        "shape_plans": json.dumps(record.shape_plans) if record.shape_plans else "",
    }
    model = export_graph(record.graph, nodes, {PREFIX + k: v for k, v in meta.items()})
    _symbolic_dims(model, record.symbolic)
    save_model(model, path)


def _symbolic_dims(model, symbolic):
    """Give ``model``'s inputs back the source's symbolic dimensions (``{input: {index: name}}``),
    and its outputs shapes of unnamed dimensions (they follow from the inputs)."""
    if not any(symbolic.values()):
        return
    for vi in model.graph.input:
        for index, name in symbolic.get(vi.name, {}).items():
            dim = vi.type.tensor_type.shape.dim[int(index)]
            dim.Clear()
            dim.dim_param = str(name)
    for vi in model.graph.output:
        for dim in vi.type.tensor_type.shape.dim:
            dim.Clear()


def _shape_plans(text):
    plans = json.loads(text)
    ok = isinstance(plans, list) and all(
        isinstance(p, dict) and isinstance(p.get("shapes"), dict) and isinstance(p.get("choice"), dict)
        and all(isinstance(v, list) and all(isinstance(d, int) and d > 0 for d in v) for v in p["shapes"].values())
        and all(isinstance(k, str) and isinstance(v, str) for k, v in p["choice"].items())
        and isinstance(p.get("predicted_ms", 0.0), (int, float)) for p in plans)
    if not ok:
        raise ValueError("expected a list of {shapes: {input: [dims]}, choice: {layer: routine}, predicted_ms}")
    return plans


def _input_shapes(text):
    shapes = json.loads(text)
    if not isinstance(shapes, dict) or not all(isinstance(v, list) and all(isinstance(d, int) and d > 0 for d in v)
                                               for v in shapes.values()):
        raise ValueError("expected {input: [positive dims]}")
    return {k: tuple(v) for k, v in shapes.items()}


def _field(where_, key, text, parse):
    try:
        return parse(text)
    except (ValueError, TypeError) as e:
        raise TunedModelError(f"{where_}: field {key!r} is malformed ({e}): {text[:80]!r}") from None


def _precisions(text):
    from .ir.formats import parse_precisions
    values = json.loads(text)
    if not isinstance(values, list):
        raise ValueError("expected a JSON list of data types")
    return parse_precisions(values)


def _precision_error(text):
    from .tuning.precision import PrecisionError
    return PrecisionError.from_dict(json.loads(text)).to_dict()


def _budget(text):
    value = float(text)
    if not value >= 0:
        raise ValueError("an error budget is a number >= 0")
    return value


def _precision_pins(text):
    from .ir.formats import DTYPES
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(k, str) and v in DTYPES for k, v in value.items()):
        raise ValueError(f"expected an object of layer: one of {', '.join(DTYPES)}")
    return value


def _cosine(text):
    value = float(text)
    if not -1 <= value <= 1:
        raise ValueError("a cosine budget lies in [-1, 1]")
    return value


def _names(text):
    values = json.loads(text)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("expected a JSON list of layer names")
    return values


def _mean(text, n):
    values = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), "<f4")
    if n is None or values.shape != (n,) or not np.isfinite(values).all():
        raise ValueError(f"expected {n} finite float32 values (the layer's input channels), got {values.size}")
    return values.astype(np.float32)


def read(source, name=None):
    """The :class:`TunedRecord` of a tuned file (path, bytes or ModelProto; ``name`` for
    messages), every annotation checked against the imported graph."""
    from .onnx_io.read import import_onnx, read_model
    from .ir.passes import optimize
    model = read_model(source)
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "model")
    meta = {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}
    if meta.get("format") != FORMAT:
        raise TunedModelError(f"{name}: not a tuned model (model metadata {PREFIX}format is "
                              f"{meta.get('format')!r}, expected {FORMAT!r}); tune it with `workbench tune`")
    where_ = f"tuned model {name}"
    for key in ("num_threads", "io_format", "predicted_ms", "fingerprint"):
        if key not in meta:
            raise TunedModelError(f"{where_}: model metadata field {PREFIX + key!r} is missing")
    threads = _field(where_, PREFIX + "num_threads", meta["num_threads"], int)
    if threads < 1:
        raise TunedModelError(f"{where_}: field {PREFIX}num_threads must be >= 1, got {threads}")
    if meta["io_format"] not in (NCHW, NHWC):
        raise TunedModelError(f"{where_}: field {PREFIX}io_format must be {NCHW!r} or {NHWC!r}, "
                              f"got {meta['io_format']!r}")
    predicted = _field(where_, PREFIX + "predicted_ms", meta["predicted_ms"], float)
    pins = _field(where_, PREFIX + "pins", meta.get("pins", "{}"), json.loads)
    filters = _field(where_, PREFIX + "filters", meta.get("filters", "[]"), json.loads)
    facts = _field(where_, PREFIX + "fingerprint_facts", meta.get("fingerprint_facts", "{}"), json.loads)
    precisions = _field(where_, PREFIX + "precisions", meta.get("precisions", '["float32"]'), _precisions)
    error = meta.get("precision_error") or None
    if error is not None:
        error = _field(where_, PREFIX + "precision_error", error, _precision_error)
    max_error = meta.get("max_error") or None
    if max_error is not None:
        max_error = _field(where_, PREFIX + "max_error", max_error, _budget)
    min_cosine = meta.get("min_cosine") or None
    if min_cosine is not None:
        min_cosine = _field(where_, PREFIX + "min_cosine", min_cosine, _cosine)
    demoted = _field(where_, PREFIX + "demoted", meta.get("demoted", "[]"), _names)
    precision_pins = _field(where_, PREFIX + "precision_pins", meta.get("precision_pins") or "{}", _precision_pins)

    annotated = {}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        if PREFIX + "routine" in props:
            annotated[node.name] = props
    shapes = meta.get("input_shapes") or None
    if shapes is not None:
        shapes = _field(where_, PREFIX + "input_shapes", shapes, _input_shapes)
    plans = _field(where_, PREFIX + "shape_plans", meta.get("shape_plans") or "[]", _shape_plans)
    graph = import_onnx(model, shapes=shapes)
    optimize(graph)
    if meta.get("quant"):
        quant = _field(where_, PREFIX + "quant", meta["quant"], json.loads)
        try:
            graph.quant = QuantTable.from_record(quant, graph.tensor_names())
        except QuantError as e:
            raise TunedModelError(f"{where_}: field {PREFIX}quant: {e}") from None
    layer_names = {layer.name for layer in graph}
    stray = sorted(set(annotated) - layer_names)
    unknown = sorted((set(demoted) | set(precision_pins)) - layer_names)
    if unknown:
        raise TunedModelError(f"{where_}: fields {PREFIX}demoted/{PREFIX}precision_pins name {unknown[:5]}, no layers "
                              f"of the imported graph")
    if stray:
        raise TunedModelError(f"{where_}: node(s) {stray[:5]} carry {PREFIX}routine but are no layer of the "
                              f"imported graph (the file was edited after tuning)")
    choice, costs = {}, {}
    for layer in graph:
        props = annotated.get(layer.name)
        if props is None:
            raise TunedModelError(f"{where_}: {where(layer)} has no {PREFIX}routine annotation (the file was "
                                  f"edited after tuning, or not written by workbench)")
        descriptor = props[PREFIX + "routine"]
        try:
            r = routines.get(layer.op, descriptor)
        except KeyError as e:
            raise TunedModelError(f"{where_}: {where(layer)} field {PREFIX}routine: {e.args[0]}") from None
        if not r.applies(layer, graph.input_specs(layer)):
            raise TunedModelError(f"{where_}: {where(layer)} field {PREFIX}routine: {descriptor} does not apply "
                                  f"to this layer")
        _field(f"{where_}: {where(layer)}", PREFIX + "adapts", props.get(PREFIX + "adapts", "[]"), json.loads)
        candidates = _field(f"{where_}: {where(layer)}", PREFIX + "candidates",
                            props.get(PREFIX + "candidates", "{}"), json.loads)
        if not isinstance(candidates, dict):
            raise TunedModelError(f"{where_}: {where(layer)} field {PREFIX}candidates must be a JSON object")
        costs[layer.name] = {d: float(ms) / 1e3 for d, ms in candidates.items()}
        choice[layer.name] = descriptor
        if PREFIX + MEAN in props:
            layer.meta[MEAN] = _field(f"{where_}: {where(layer)}", PREFIX + MEAN, props[PREFIX + MEAN],
                                      lambda text, n=bias_correction.channels(layer): _mean(text, n))
        if PREFIX + "branch_plans" in props:
            set_plans(layer, _field(f"{where_}: {where(layer)}", PREFIX + "branch_plans", props[PREFIX + "branch_plans"],
                                    lambda text, r=r, layer=layer: _branch_plans(text, r, layer)))
    measured = meta.get("measured_ms") or None
    return TunedRecord(graph, choice, costs, threads, meta["io_format"], predicted / 1e3,
                       plan_method=meta.get("plan_method", "?"),
                       measured_s=_field(where_, PREFIX + "measured_ms", measured, float) / 1e3 if measured else None,
                       pins=dict(pins), filters=list(filters), fingerprint=meta["fingerprint"],
                       fingerprint_facts=facts, metadata=meta, precisions=list(precisions),
                       precision_error=error, max_error=max_error, demoted=demoted,
                       calibration=meta.get("calibration") or None, min_cosine=min_cosine,
                       quant_calibration=meta.get("quant_calibration") or None, precision_pins=precision_pins,
                       symbolic=_symbolic_of(model), shape_plans=plans, source=model)


def _branch_plans(text, routine, layer):
    plans = json.loads(text)
    check = getattr(routine, "check_plans", None)
    if check is None:
        raise ValueError(f"{routine.descriptor} runs no branches")
    check(layer, plans)
    return plans


def _symbolic_of(model):
    """``{input: {dim index: name}}`` of the dimensions ``model``'s inputs leave symbolic."""
    out = {}
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
        named = {i: d.dim_param or f"{vi.name}_{i}" for i, d in enumerate(dims) if not d.HasField("dim_value")}
        if named:
            out[vi.name] = named
    return out
