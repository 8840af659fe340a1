"""The tuned-model file: one ONNX file that runs again without profiling.

It is the fused graph written as standard ONNX (:mod:`workbench.onnx_io.write`), so ONNX Runtime
runs it and gets the same outputs, annotated in ``metadata_props``:

- each layer's node: ``workbench.routine`` (the descriptor), ``workbench.adapts`` (JSON list of
  ``[tensor, from, to]`` adapts feeding it), ``workbench.cost_ms``, ``workbench.candidates``
  (JSON ``{descriptor: ms}``: why this routine), ``workbench.pinned``;
- the model: ``workbench.format``, ``workbench.version``, ``workbench.fingerprint`` and
  ``workbench.fingerprint_facts`` (the machine), ``workbench.num_threads``,
  ``workbench.io_format``, ``workbench.predicted_ms``, ``workbench.measured_ms``,
  ``workbench.plan_method``, ``workbench.filters``, ``workbench.pins``.

:func:`load` imports the file (the same fusion gives the same layers), reads the annotations
back, checks them, and returns a :class:`~workbench.session.Session` ready to run; on a
machine with another fingerprint it warns (:class:`FingerprintWarning`) and the session can
:meth:`~workbench.session.Session.retune`.
"""
from __future__ import annotations

import json
import os
import warnings

from . import routines
from .tuning import search
from .errors import WorkbenchError, where
from .ir.graph import NCHW, NHWC

FORMAT = "routine-workbench tuned model 1"
PREFIX = "workbench."


class TunedModelError(WorkbenchError):
    """A tuned-model file whose annotations are missing, malformed or do not fit its graph."""


class FingerprintWarning(UserWarning):
    """The tuned file was tuned on another machine (or thread count, or build)."""


def is_tuned(model):
    """Whether an :class:`onnx.ModelProto` carries our annotations."""
    return any(p.key == PREFIX + "format" for p in model.metadata_props)


def _adapts_into(session):
    """``{layer: [[tensor, from, to], ...]}``: the adapts of the plan, by the layers that read them."""
    plan = session.plan
    by_target = {}
    for tensor, src, dst in plan.adapts:
        by_target.setdefault((tensor, dst), []).append([tensor, src, dst])
    into = {}
    for layer in session.graph:
        r = routines.get(layer.op, plan.choice[layer.name])
        layouts = r.input_layouts(layer, session.graph.input_specs(layer))
        for i, t in enumerate(layer.inputs):
            if t and i not in layer.consts and (t, layouts[i]) in by_target:
                into.setdefault(layer.name, []).extend(by_target[(t, layouts[i])])
    return into


def save(session, path):
    """Write ``session``'s tuned model to ``path`` (one ONNX file)."""
    from . import __version__
    from .onnx_io.write import export_graph, save as save_model
    from .tuning.profiledb import fingerprint, fingerprint_facts
    plan = session.plan
    costs = session.costs()[0] if session.profiled is not None else {}
    adapts = _adapts_into(session)
    nodes = {}
    for layer in session.graph:
        c = costs.get(layer.name, {})
        chosen = plan.choice[layer.name]
        nodes[layer.name] = {
            PREFIX + "routine": chosen,
            PREFIX + "adapts": json.dumps(adapts.get(layer.name, [])),
            PREFIX + "cost_ms": f"{c[chosen] * 1e3:.6f}" if chosen in c else "",
            PREFIX + "candidates": json.dumps({d: round(v * 1e3, 6) for d, v in sorted(c.items(), key=lambda kv: kv[1])}),
            PREFIX + "pinned": "1" if layer.name in session.pins else "0",
        }
    meta = {
        "format": FORMAT, "version": __version__,
        "fingerprint": fingerprint(session.num_threads),
        "fingerprint_facts": json.dumps(fingerprint_facts(session.num_threads), sort_keys=True),
        "num_threads": session.num_threads, "io_format": session.io_format,
        "predicted_ms": f"{session.predicted_s * 1e3:.6f}",
        "measured_ms": f"{session.measured.median * 1e3:.6f}" if session.measured is not None else "",
        "plan_method": plan.method, "filters": json.dumps(session.filters), "pins": json.dumps(session.pins),
    }
    model = export_graph(session.graph, nodes, {PREFIX + k: v for k, v in meta.items()})
    save_model(model, path)


def _field(where_, key, text, parse):
    try:
        return parse(text)
    except (ValueError, TypeError) as e:
        raise TunedModelError(f"{where_}: field {key!r} is malformed ({e}): {text[:80]!r}") from None


def load(source, num_threads=None, db=None, warn=True, name=None, stacklevel=2):
    """A ready-to-run :class:`~workbench.session.Session` from a tuned file (path, bytes or
    ModelProto; ``name`` for messages).  ``num_threads`` defaults to the tuned thread count;
    ``stacklevel`` places the :class:`FingerprintWarning` at the caller's line."""
    from .onnx_io.read import import_onnx, read_model
    from .ir.passes import optimize
    from .tuning.profiler import problem as make_problem
    from .tuning.profiledb import fingerprint, fingerprint_facts
    from .session import Session
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

    annotated = {}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        if PREFIX + "routine" in props:
            annotated[node.name] = props
    graph = import_onnx(model)
    optimize(graph)
    layer_names = {layer.name for layer in graph}
    stray = sorted(set(annotated) - layer_names)
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
    session = Session(graph, num_threads=num_threads or threads, db=db, io_format=meta["io_format"])
    session.filters = list(filters)
    session.pins = dict(pins)
    # The adapts follow from the choice (the same ones the tuned plan had, graph outputs included).
    structure = make_problem(graph, {n: {d: 0.0} for n, d in choice.items()}, {}, None, session.io_format)
    adapts = search.evaluate(structure, choice)[1]
    session.plan = search.Plan(choice, predicted / 1e3, adapts, f"loaded ({meta.get('plan_method', '?')})")
    session.tuned_on = facts
    session.tuned_metadata = meta
    session.loaded_costs = costs
    here = fingerprint(session.num_threads)
    if warn and here != meta["fingerprint"]:
        mine = fingerprint_facts(session.num_threads)
        diff = sorted(k for k in set(mine) | set(facts) if mine.get(k) != facts.get(k))
        warnings.warn(FingerprintWarning(
            f"{name} was tuned on another machine or setup (differs in: {', '.join(diff) or 'fingerprint'}); "
            f"it runs, but its routines may not be the fastest here: retune with session.retune() or "
            f"`workbench tune`"), stacklevel=stacklevel)
    return session
