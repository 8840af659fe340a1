"""What a :class:`~workbench.session.Session`'s plan is measured against: the greedy plan and
every single-family plan (priced on the same profile), the other plans and ONNX Runtime timed
side by side (:meth:`compare`); and the plan's own latency (:meth:`measure`) and steps
(:meth:`timed_run`).  A mixin: it reads the session's graph, profile and plan."""
from __future__ import annotations

from . import routines
from .tuning import filters as assign_mod
from .tuning import search


def conv_families(graph=None):
    """Every single-family filter: each layout's ``*`` and each (layout, algorithm) of a float32 Conv."""
    conv = sorted({(r.layout, r.algo) for _, _, r in routines.all_routines()
                   if r.algo != "reference" and r.dtype == "float32" and (r.op == "Conv" or (isinstance(r.op, tuple) and "Conv" in r.op))})
    layouts = sorted({lay for lay, _ in conv})
    return [f"cpu:float32:{lay}/*" for lay in layouts] + [f"cpu:float32:{lay}/{algo}" for lay, algo in conv]


class SessionComparisons:
    """The comparison and timing methods of :class:`~workbench.session.Session`."""

    def measure(self, runs=30, warmup=3, inputs=None):
        """Whole-model latency of the tuned plan: a :class:`~workbench.tuning.measure.Latency` of
        ``runs`` turns after ``warmup`` (:func:`~workbench.tuning.measure.measure_latencies`, the
        statistic :meth:`compare` and ``workbench bench`` report too), kept as :attr:`measured`."""
        from .tuning.measure import measure_latencies
        model = self.compile()
        feeds = inputs if inputs is not None else self.random_inputs()
        self.measured = measure_latencies({"tuned": lambda: model.run(feeds)}, runs, warmup=warmup)["tuned"]
        return self.measured

    def timed_run(self, inputs=None):
        """One inference with every step timed: ``[(Step, start s, duration s)]``."""
        model = self.compile()
        feeds = inputs if inputs is not None else self.random_inputs()
        model.run(feeds)   # warm
        return model.run_timed(feeds)[1]

    def greedy_plan(self):
        """The cheapest routine per layer (under filters and pins), ignoring adapts, costed with them."""
        return search.greedy(self.problem(self.allowed()))

    def family_plans(self):
        """``{filter: Plan}`` for every single-family assignment (the fixed choice each filter
        gives, as ``workbench run --routine`` runs it), costed on this profile.

        A layer a family cannot serve runs the routine it falls back to (see
        :func:`workbench.tuning.filters.assign`), profiled here if the profile lacks it, and priced like
        any other.  A family with a routine that still has no cost is left out;
        :attr:`family_notes` says why, and names each family's fallbacks.
        """
        if self.profiled is None:
            self.profile()   # a loaded tuned file holds the plan's costs only
        assignments = {fam: assign_mod.assign(self.graph, [fam]) for fam in conv_families()}
        wanted = {}
        for choice, _ in assignments.values():   # every family's routine of each layer
            for layer, d in choice.items():
                wanted.setdefault(layer, set()).add(d)
        self._ensure_profiled({layer: sorted(ds) for layer, ds in wanted.items()})
        prob = self.problem()
        costed = {node.name: {c.name for c in node.candidates} for node in prob.nodes}
        n_conv = sum(l.op == "Conv" for l in self.graph)
        plans, self.family_notes = {}, {}
        for fam, (choice, fallbacks) in assignments.items():
            if fam.split("/")[1] != "*" and sum(self.graph.layer(f.layer).op == "Conv" for f in fallbacks) == n_conv:
                continue   # this family's conv algorithm applies to none of the model's convs
            unpriced = [(layer, d) for layer, d in choice.items() if d not in costed[layer]]
            if unpriced:
                self.family_notes[fam] = (f"left out: no cost for {len(unpriced)} layer(s), e.g. "
                                          f"{unpriced[0][0]} with {unpriced[0][1]}")
                continue
            if fallbacks:
                self.family_notes[fam] = (f"{len(fallbacks)} layer(s) fall back: "
                                          + ", ".join(f"{f.layer} to {f.chosen}" for f in fallbacks[:3])
                                          + (", ..." if len(fallbacks) > 3 else ""))
            plans[fam] = search.plan_of(prob, choice, f"family {fam}")
        return plans

    def compare(self, runs=10, families=True, greedy=True, onnxruntime=True):
        """The plan measured beside every single-family plan, the greedy plan and ONNX Runtime,
        interleaved (see :mod:`workbench.tuning.compare`); kept as :attr:`comparison`."""
        from .tuning.compare import compare
        self._need_plan()
        return compare(self, runs=runs, families=families, greedy=greedy, onnxruntime=onnxruntime)
