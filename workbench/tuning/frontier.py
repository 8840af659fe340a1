"""What each layer's lower precision costs in accuracy, and the plans between all-float32 and
the fastest: the latency/error Pareto frontier.

:func:`sensitivity`: for each layer a plan computes below float32, the error of the model's
outputs against float32 when only that layer does so (every other layer on its best float32
routine): the damage that layer does by itself, measured end to end (the budget's ranking,
:mod:`workbench.tuning.budget`, uses the cheaper local error of the layer's own output).

:func:`frontier`: the plans the budget's search walks through, measured.  The fastest plan's
low-precision layers are ranked as the budget ranks them (squared local error per second of
float32 time they save) and demoted to float32 a growing prefix at a time (0, 1, 2, 4, ... all),
the selection run again on each (so adapts and neighbours re-balance); each plan's predicted
latency and measured error (on the given inputs) is a point, and the points no other point
beats on both latency and cosine are the frontier.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime.compiled import CompiledModel
from .budget import _float32_loss, local_errors, rank
from .precision import as_nchw, compare, reference_outputs


def _best_float32(session):
    """``{layer: descriptor}``: the plan with each layer below float32 on its cheapest float32 routine."""
    costs, _ = session.costs()
    choice = dict(session.plan.choice)
    for name, d in choice.items():
        if d.split(":")[1] != "float32":
            f32 = {k: v for k, v in costs.get(name, {}).items() if k.split(":")[1] == "float32"}
            if f32:
                choice[name] = min(f32, key=f32.get)
    return choice


def sensitivity(session, inputs):
    """``{layer: PrecisionError}`` of the model's outputs on ``inputs`` (feeds in the session's
    io_format) when only that layer of the session's plan computes below float32."""
    plan = session._need_plan()
    refs = reference_outputs(session, inputs)
    base = _best_float32(session)
    out = {}
    for name, d in plan.choice.items():
        if d.split(":")[1] == "float32" or base[name] == d:
            continue
        model = CompiledModel(session.graph, {**base, name: d}, num_threads=session.num_threads,
                              io_format=session.io_format, max_concurrency=1)
        out[name] = compare([as_nchw(session, model.run(f)) for f in inputs], refs)
    return out


@dataclass
class Point:
    """One plan of the frontier: how many (and which) layers were kept in float32, its predicted
    latency (s), its error, the layers per data type, and whether no other point beats it."""

    kept: int
    demoted: list
    predicted_s: float
    error: object                     # PrecisionError
    layers: dict = field(default_factory=dict)
    pareto: bool = False

    def to_dict(self):
        return {"kept": self.kept, "demoted": list(self.demoted), "predicted_ms": self.predicted_s * 1e3,
                "cosine": self.error.cosine, "max_rel": self.error.max_rel, "top1": self.error.top1,
                "layers": dict(self.layers), "pareto": self.pareto}


def _counts(choice):
    counts = {}
    for d in choice.values():
        counts[d.split(":")[1]] = counts.get(d.split(":")[1], 0) + 1
    return counts


def frontier(session, inputs, steps=None):
    """The :class:`Point` s of the demotion walk (see the module doc) on ``inputs``, fastest first;
    ``steps``: the prefix lengths to try (default 0, 1, 2, 4, ... and all).  The session's plan,
    demotions and budget are as they were afterwards."""
    session._need_plan()
    keys = ("demoted", "plan", "budget", "_compiled", "precision", "measured", "comparison")
    saved = {k: getattr(session, k) for k in keys}
    refs = reference_outputs(session, inputs)
    try:
        session.demoted = set()
        session.retune()
        low = [n for n, d in session.plan.choice.items() if d.split(":")[1] != "float32"]
        if not low:
            order = []
        else:
            local = local_errors(session, [as_nchw(session, f) for f in inputs])
            order = rank(local, _float32_loss(session, local))
        if steps is None:
            steps, k = [0], 1
            while k < len(order):
                steps.append(k)
                k *= 2
            steps.append(len(order))
        points = []
        for k in sorted(set(min(max(int(s), 0), len(order)) for s in steps)):
            session.demoted = set(order[:k])
            plan = session.retune()
            model = session.compile()
            err = compare([as_nchw(session, model.run(f)) for f in inputs], refs)
            points.append(Point(k, list(order[:k]), plan.cost, err, _counts(plan.choice)))
        for p in points:
            p.pareto = not any((q.predicted_s <= p.predicted_s and q.error.cosine >= p.error.cosine)
                               and (q.predicted_s < p.predicted_s or q.error.cosine > p.error.cosine)
                               for q in points)
        return points
    finally:
        for k, v in saved.items():
            setattr(session, k, v)

