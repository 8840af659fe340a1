"""``cpu:float32:nchw/branches``: an If whose condition is known only at run time.

Each branch is a graph of its own (``onnx_io/control_flow.py``), compiled once with its own plan:
the one tuning gave it (``meta["branch_plans"]``, :mod:`workbench.tuning.branches`), else the
routines the default selection gives each of its layers (:func:`~workbench.tuning.filters.assign`,
the fast family where one applies); a run reads the condition and runs that branch's compiled
model on the tensors the branches read.  The profile times the branch that runs at the graph's
shapes (the then branch where both do).
"""
import threading

import numpy as np

from ..ir.ops.shape import If
from . import Routine


class IfBranches(Routine):
    op = "If"
    layout = "nchw"
    algo = "branches"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        return "branches" in layer.meta

    @classmethod
    def profile_args(cls, layer, args):
        """Timed on a branch that runs at these shapes (the then branch where both do)."""
        runs_then = not isinstance(layer.meta["branches"]["then"], str)
        return [np.full(np.shape(args[0]), runs_then, bool)] + list(args[1:])

    @classmethod
    def prepare(cls, layer):
        return {"models": {}, "lock": threading.Lock()}

    @classmethod
    def _model(cls, layer, state, graph, num_threads):
        from ..runtime.compiled import CompiledModel
        from ..tuning.filters import assign
        key = (graph.name, num_threads)
        with state["lock"]:
            model = state["models"].get(key)
            if model is None:
                which = next(w for w, g in layer.meta["branches"].items() if g is graph)
                plan = layer.meta.get("branch_plans", {}).get(which) or assign(graph, ())[0]
                model = state["models"][key] = CompiledModel(graph, plan, num_threads=num_threads, max_concurrency=1)
        return model

    @classmethod
    def check_plans(cls, layer, plans):
        """Raise ValueError unless ``plans`` (``{branch: {layer: descriptor}}``, as a tuned file
        holds them) give every layer of those branches of ``layer`` a routine that applies."""
        from .. import routines
        if not isinstance(plans, dict):
            raise ValueError("expected {branch: {layer: routine}}")
        for which, choice in plans.items():
            graph = layer.meta["branches"].get(which)
            if graph is None or isinstance(graph, str) or not isinstance(choice, dict):
                raise ValueError(f"no branch {which!r} that runs here, or its plan is not an object")
            names = {l.name for l in graph}
            if set(choice) != names:
                raise ValueError(f"the {which} plan names {sorted(set(choice) ^ names)[:3]}, not exactly the "
                                 f"branch's layers")
            for sub in graph:
                try:
                    r = routines.get(sub.op, choice[sub.name])
                except KeyError as e:
                    raise ValueError(f"{which} branch layer {sub.name!r}: {e.args[0]}") from None
                if not r.applies(sub, graph.input_specs(sub)):
                    raise ValueError(f"{which} branch layer {sub.name!r}: {choice[sub.name]} does not apply to it")

    @classmethod
    def _call(cls, layer, state, args, outs):
        feeds = dict(zip(layer.inputs[1:], args[1:]))   # the branches' inputs: made once, not per run
        cond = args[0]

        def call(num_threads):
            graph = If.branch(layer, cond)
            cls._model(layer, state, graph, num_threads).run_into(feeds, outs, num_threads)
        return call

    @classmethod
    def bind(cls, layer, state, args, outs):
        return cls._call(layer, state, args, outs)

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._call(layer, state, args, outs)(num_threads)
