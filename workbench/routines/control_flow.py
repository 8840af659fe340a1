"""``cpu:float32:nchw/branches``: an If whose condition is known only at run time.

Each branch is a graph of its own (``onnx_io/control_flow.py``), compiled once with its own plan:
the routines the default selection gives each of its layers (:func:`~workbench.tuning.filters.assign`,
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
    def _model(cls, state, graph, num_threads):
        from ..runtime.compiled import CompiledModel
        from ..tuning.filters import assign
        key = (graph.name, num_threads)
        with state["lock"]:
            model = state["models"].get(key)
            if model is None:
                model = state["models"][key] = CompiledModel(graph, assign(graph, ())[0], num_threads=num_threads,
                                                             max_concurrency=1)
        return model

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        graph = If.branch(layer, args[0])
        results = cls._model(state, graph, num_threads).run(dict(zip(layer.inputs[1:], args[1:])))
        for out, name in zip(outs, graph.outputs):
            if out is not None:
                np.copyto(out, results[name])
