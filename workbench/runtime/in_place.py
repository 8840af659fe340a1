"""Outputs written over a dying input: a routine that adds a fused residual onto its output
(``Routine.in_place_input``) is given that residual's buffer as its output where nothing reads
the residual afterwards, so the layer reads and writes one buffer instead of two."""
from __future__ import annotations

from ..routines import adapts as adapt


def root(alias, key):
    """The key whose buffer ``key`` finally shares (following chains of aliases)."""
    while key in alias:
        key = alias[key]
    return key


def in_place(plan, alias, routines, spec, graph_inputs, outputs):
    """Let each layer whose routine may overwrite an input write its output into that input's
    buffer, where the input is read by nothing after it (nor twice by the layer), is no graph
    input (``graph_inputs``, keys) or output (``outputs``, keys), and has the output's shape and
    dtype (``spec(key)``).  ``plan``: the compiled model's ``(kind, layer, in keys, out keys)``;
    ``routines``: ``{layer name: Routine}``.  Adds the aliases; returns ``{layer name: input index}``."""
    done = {}
    for step, (kind, layer, ins, outs) in enumerate(plan):
        if kind != "layer":
            continue
        i = routines[layer.name].in_place_input(layer)
        if i is None or i >= len(ins) or ins[i] is None:
            continue
        base = root(alias, ins[i])
        if (base in graph_inputs or outs[0] in alias or sum(root(alias, k) == base for k in ins if k) != 1
                or adapt.physical_shape(spec(base)) != adapt.physical_shape(spec(outs[0]))
                or spec(base).dtype != spec(outs[0]).dtype):
            continue
        later = [k for _, _, ks, _ in plan[step + 1:] for k in ks if k is not None]
        if any(root(alias, k) == base for k in later + list(outputs)):
            continue
        alias[outs[0]] = base
        done[layer.name] = i
    return done
