"""A :class:`~workbench.session.Session`'s plan as rows, one per layer: what the CLI's tables and
the notebooks' views show.  A mixin: it reads the session's graph, plan, costs and pins."""
from __future__ import annotations

from .routines import adapts


class SessionRows:
    """The per-layer rows of :class:`~workbench.session.Session`."""

    def layer_rows(self):
        """One dict per layer: index, name, op, routine, the data type it computes in, its
        sensitivity (:meth:`~workbench.session_precision.SessionPrecision.sensitivity`, when
        measured for this plan: the output error with only this layer below float32), cost (ms),
        its spread, the best other routine and its cost, whether pinned, the adapts feeding it."""
        plan = self._need_plan()
        if self.profiled is None and self.loaded_costs is not None:
            costs = self.loaded_costs   # a loaded tuned file: the costs it was tuned with
        else:
            costs, _ = self.costs()
        adapts_in = {}
        for (tensor, src, dst), readers in plan.readers.items():
            steps = adapts.steps_of(tensor, self.graph.spec(tensor), src, dst)
            for r in readers:
                adapts_in.setdefault(r, []).extend(steps)
        rows = []
        for i, layer in enumerate(self.graph):
            chosen = plan.choice[layer.name]
            c = costs.get(layer.name, {})
            others = sorted((v, d) for d, v in c.items() if d != chosen)
            rec = self.profiled.routine.get(layer.name, {}).get(chosen) if self.profiled is not None else None
            rows.append(dict(index=i, name=layer.name, op=layer.op, routine=chosen, precision=chosen.split(":")[1],
                             sensitivity=self.sensitivities.get(layer.name),
                             cost_ms=c.get(chosen, float("nan")) * 1e3,
                             spread_ms=(rec.spread * 1e3) if rec else float("nan"),
                             runner_up=others[0][1] if others else "", runner_up_ms=others[0][0] * 1e3 if others else float("nan"),
                             candidates=len(c), pinned=layer.name in self.pins,
                             adapts=adapts_in.get(layer.name, [])))
        return rows
