"""Plans for the branches of an If known only at run time.

Such an If is a layer whose two branches are graphs of their own (``onnx_io/control_flow.py``),
each compiled once by the layer's routine (``routines/control_flow.py``).  A branch is as much a
model as the graph around it (silero-vad's whole network sits in the branch of its sample-rate
If), so each is tuned like one: a session of its own on the same profile database, threads and
thread settings, its plan kept in the layer (``meta["branch_plans"]``: ``{"then"|"else":
{layer: descriptor}}``) and written into a tuned file with it.  Tuned before the graph around
them is profiled, so the If is timed running the branches' tuned plans.
"""
from __future__ import annotations

import hashlib
import json


def runtime_ifs(graph):
    """The If layers of ``graph`` whose branches are graphs run at run time."""
    return [layer for layer in graph if layer.op == "If" and "branches" in layer.meta]


def tune_branches(session, in_context=False):
    """Tune every branch of ``session``'s run-time Ifs (float32 routines); returns
    ``{if layer: {branch: plan}}`` (:class:`~workbench.tuning.search.Plan`)."""
    done = {}
    for layer in runtime_ifs(session.graph):
        plans, choices = {}, {}
        for which, graph in layer.meta["branches"].items():
            if isinstance(graph, str):   # cannot run at these shapes: nothing to tune
                continue
            child = type(session)(graph, num_threads=session.num_threads, db=session.db,
                                  flush_denormals=session.flush_denormals)
            plans[which] = child.tune(in_context=in_context)
            choices[which] = dict(plans[which].choice)
        set_plans(layer, choices)
        done[layer.name] = plans
    return done


def set_plans(layer, choices):
    """Give If ``layer`` these branch plans; its attributes name them (a digest), so that the
    profile database times the If anew under other plans."""
    layer.meta["branch_plans"] = choices
    layer.attrs["plans"] = hashlib.sha256(json.dumps(choices, sort_keys=True).encode()).hexdigest()[:16]
