"""Routine filters (SoftNeuro's ``--routine``) and the assignments they produce.

A filter is ``PATTERN[@SELECTION]``: ``PATTERN`` is a glob over routine descriptors
(``cpu:float32:nhwc/*``, ``cpu:float32:nchw/im2col``); ``SELECTION`` names layers by index as
``workbench info`` prints them, ranges ``5..9`` (inclusive) and layer names, comma separated.
For each layer the last filter that selects it decides.  A layer the filter names explicitly
must have a matching routine (else a :class:`FilterError`); a layer selected only by a
filter without ``@`` falls back to the nearest applicable routine (same layout first), and the
fallback is reported.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from .. import routines
from ..errors import WorkbenchError, where


class FilterError(WorkbenchError):
    """A routine filter that is malformed, matches nothing, or names a layer it cannot serve."""


@dataclass(frozen=True)
class RoutineFilter:
    text: str
    pattern: str
    selection: tuple | None    # None: every layer

    def selects(self, index, name):
        return self.selection is None or index in self.selection or name in self.selection


@dataclass
class Fallback:
    layer: str
    wanted: str
    chosen: str


def parse_filter(text, graph) -> RoutineFilter:
    """Parse ``PATTERN[@SELECTION]`` against ``graph`` (for indices and names)."""
    pattern, at, sel = text.partition("@")
    pattern = pattern.strip()
    # "cpu:bfloat16:*" needs no "/": its last glob matches the layout and the algorithm both
    if pattern.count(":") != 2 or ("/" not in pattern and not pattern.endswith("*")):
        raise FilterError(f"routine filter {text!r}: expected DEVICE:DTYPE:LAYOUT/ALGO (globs allowed), "
                          f"e.g. 'cpu:float32:nhwc/*' or 'cpu:float32:nchw/im2col@3,5..9'")
    known = {d for _, d, _ in routines.all_routines()}
    if not fnmatch.filter(known, pattern):
        raise FilterError(f"routine filter {text!r} matches no routine; known: {', '.join(sorted(known))}")
    if not at:
        return RoutineFilter(text, pattern, None)
    names = [l.name for l in graph]
    chosen = set()
    for item in (s.strip() for s in sel.split(",")):
        if not item:
            raise FilterError(f"routine filter {text!r}: empty layer selection item")
        if ".." in item:
            lo, _, hi = item.partition("..")
            try:
                lo, hi = int(lo), int(hi)
            except ValueError:
                raise FilterError(f"routine filter {text!r}: bad range {item!r} (expected A..B)") from None
            if not 0 <= lo <= hi < len(names):
                raise FilterError(f"routine filter {text!r}: range {item} outside layers 0..{len(names) - 1}")
            chosen.update(range(lo, hi + 1))
        elif item.isdigit():
            if int(item) >= len(names):
                raise FilterError(f"routine filter {text!r}: no layer {item} (layers 0..{len(names) - 1})")
            chosen.add(int(item))
        elif item in names:
            chosen.add(item)
        else:
            raise FilterError(f"routine filter {text!r}: no layer named {item!r}")
    return RoutineFilter(text, pattern, tuple(sorted(chosen, key=str)))


def _layout_of(pattern):
    layout = pattern.split(":")[2].split("/")[0]
    return None if any(c in layout for c in "*?[") else layout


def _precisions(precisions, decisive):
    """The data types a layer may use: ``precisions`` (None: all), plus the one a deciding
    filter's pattern names outright (``cpu:bfloat16:nhwc/*`` asks for bfloat16)."""
    if precisions is None or decisive is None:
        return precisions
    dtype = decisive.pattern.split(":")[1]
    return tuple(precisions) if any(c in dtype for c in "*?[") else tuple(precisions) + (dtype,)


def assign(graph, filters=(), precisions=routines.FLOAT32_ONLY):
    """Routine descriptor per layer under ``filters`` (strings or parsed); returns (assignment, fallbacks).

    Without a filter a layer gets its best applicable routine by default preference (priority),
    which is what :func:`workbench.routines.applicable` lists first.  Routines compute in
    ``precisions`` only, or in the data type a filter's pattern names (:func:`_precisions`).
    """
    parsed = [f if isinstance(f, RoutineFilter) else parse_filter(f, graph) for f in filters]
    assignment, fallbacks = {}, []
    for index, layer in enumerate(graph):
        decisive = next((f for f in reversed(parsed) if f.selects(index, layer.name)), None)
        options = routines.applicable(graph, layer, _precisions(precisions, decisive))
        if not options:
            raise WorkbenchError(f"{where(layer)}: no routine applies")
        if decisive is None:
            assignment[layer.name] = options[0].descriptor
            continue
        matching = [r for r in options if fnmatch.fnmatchcase(r.descriptor, decisive.pattern)]
        if matching:
            assignment[layer.name] = matching[0].descriptor
            continue
        if decisive.selection is not None:
            raise FilterError(f"routine filter {decisive.text!r} selects layer {index} {where(layer)}, but no "
                              f"matching routine applies to it; applicable: "
                              f"{', '.join(r.descriptor for r in options)}")
        layout = _layout_of(decisive.pattern)
        nearest = [r for r in options if r.layout == layout] or options   # kept in preference order
        nearest = nearest[0]
        assignment[layer.name] = nearest.descriptor
        fallbacks.append(Fallback(layer.name, decisive.pattern, nearest.descriptor))
    return assignment, fallbacks


def allowed(graph, filters=(), precisions=routines.FLOAT32_ONLY):
    """What tuning may choose from under ``filters``: ``({layer name: [descriptor, ...]}, fallbacks)``.

    Without a filter, a layer may use every applicable routine but the NumPy reference (unless
    only the reference applies); a filter's wildcard leaves the reference out the same way, and a
    pattern that says ``reference`` takes it in.  Data types as in :func:`assign`.

    A layer a filter selects may use the matching routines only; one a filter without ``@``
    selects but cannot serve keeps every applicable routine (reported as a fallback to
    ``"*"``); one a filter names explicitly must match (else :class:`FilterError`).
    """
    parsed = [f if isinstance(f, RoutineFilter) else parse_filter(f, graph) for f in filters]
    result, fallbacks = {}, []
    for index, layer in enumerate(graph):
        decisive = next((f for f in reversed(parsed) if f.selects(index, layer.name)), None)
        found = routines.applicable(graph, layer, _precisions(precisions, decisive))
        options = [r.descriptor for r in found]
        if not options:
            raise WorkbenchError(f"{where(layer)}: no routine applies")
        # The NumPy reference is the correctness oracle, not a candidate: it is offered only where
        # nothing else applies, or where a filter names it ("*/reference"), as the profiler's
        # default candidates (profile.candidates) leave it out.
        usual = [r.descriptor for r in found if r.algo != "reference"] or options
        if decisive is None:
            result[layer.name] = usual
            continue
        matching = [d for d in options if fnmatch.fnmatchcase(d, decisive.pattern)]
        if "reference" not in decisive.pattern:
            matching = [d for d in matching if d in usual] or matching
        if matching:
            result[layer.name] = matching
        elif decisive.selection is not None:
            raise FilterError(f"routine filter {decisive.text!r} selects layer {index} {where(layer)}, but no "
                              f"matching routine applies to it; applicable: {', '.join(options)}")
        else:
            result[layer.name] = options
            fallbacks.append(Fallback(layer.name, decisive.pattern, "*"))
    return result, fallbacks
