"""In-context timing: the plan's routines and adapts timed where the executor runs them.

The profiler times each routine alone, its weights evicted from the caches, at the model's real
shapes.  Inside the model a routine runs after its neighbours: its input was just written by
another routine (in cache, or evicted by it), its weights come from wherever the previous layers
left them, and its threads were just woken or are still spinning.  Alone it runs up to 2.4x
faster than inside the model, and the sum of alone times came to 0.55-1.03 of the measured
latency, so the selection optimised numbers the model never shows.

:func:`calibrate` closes that gap where it matters: it compiles the plan, runs it (in the turns
the workbench measures latency with: an idle pause, a lead-in run, the timed run) timing every
step (:meth:`~workbench.runtime.compiled.CompiledModel.run_timed`), and takes each step's median as the
cost of that routine (or adapt) on that layer; the rest of a run (input checks, loading the
inputs, copying the outputs, the executor's per-step dispatch) is measured as the run's wall time
minus its steps, and added to the prediction.  The selection is then solved again on the profile
with these costs in place of the alone ones, the other routines of a timed layer scaled by the same
in-context ratio (:func:`overlay`); a routine it switches to is timed in context in the next
round, until the selection returns to a plan already timed or ``rounds`` runs out (the last
plan is then timed too, and selected on once more).  The plan
is always the selection's optimum on these costs, so the DP table and the plan agree.

A routine the plan did not choose is known in context only through that scaling, and the
scaling is wrong where the two differ in what the profiler's cold weights hide: a GEMV whose
weights stream from memory when timed alone runs at the same speed on BLAS and on our SGEMM,
but inside the model, its weights in the last-level cache, ours is twice as fast.  So after the
first plan, a challenger plan is timed too (:func:`challenger`): on each layer the best other
routine with the same layouts whose scaled cost is within ``margin`` of the chosen one's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..routines import adapts
from .measure import settle


@dataclass
class Context:
    """In-context costs (seconds): ``routine[(layer, descriptor)]``, ``adapt[(tensor, src, dst)]``,
    and ``overhead_s``, the part of a run outside its steps."""

    routine: dict = field(default_factory=dict)
    adapt: dict = field(default_factory=dict)
    overhead_s: float = 0.0
    rounds: int = 0          # plans timed
    runs: int = 0            # timed runs per plan
    plans_changed: int = 0   # selections the in-context costs changed
    walls: list = field(default_factory=list)   # each timed plan's median run, seconds
    ratio: dict = field(default_factory=dict)   # layer -> in-context over profiled time
    challenged: int = 0      # layers whose runner-up routine was timed in context (a challenger plan)

    def add(self, routine, adapt, profiled):
        """Take one plan's in-context times; ``profiled`` the profile's ``{layer: {descriptor: s}}``."""
        self.routine.update(routine)
        self.adapt.update(adapt)
        for (layer, descriptor), s in routine.items():
            alone = profiled.get(layer, {}).get(descriptor)
            if alone:
                self.ratio[layer] = s / alone


def adapt_key(step):
    """``(tensor, src Format, dst Format)`` of an adapt step."""
    return adapts.parse_step_name(step.name)


def time_plan(compiled, feeds, runs=5, warmup=2, min_time=0.3, max_runs=15, pause=0.03, lead_in=1):
    """Time one compiled plan in context: ``(routine costs, adapt costs, overhead s, wall s)``,
    each the median over at least ``runs`` timed runs (more, up to ``max_runs``, until
    ``min_time`` seconds of runs have passed: a short model's median needs more samples on a
    noisy machine), after ``warmup`` untimed ones.  Every timed run is taken the way the
    workbench measures latency (:data:`~workbench.tuning.measure.LATENCY_METHOD`: the threads settled,
    ``pause`` seconds idle, ``lead_in`` untimed runs, then the timed one), alternately a plain run (the wall time)
    and one timed step by step (the steps), so that the prediction is of the latency reported."""
    for _ in range(warmup):
        compiled.run(feeds)
    steps, walls = {}, []
    spent, n = 0.0, 0

    def turn(timed):
        # Without the settle the pause starts while the workers still spin, the vCPUs stay
        # awake, and the turn runs faster than the ones the latency reports take.
        settle()
        time.sleep(pause)
        for _ in range(lead_in):
            compiled.run(feeds)
        t0 = time.perf_counter()
        out = compiled.run_timed(feeds)[1] if timed else compiled.run(feeds)
        return out, time.perf_counter() - t0

    while n < runs or (n < max_runs and spent < min_time):
        n += 1
        _, wall = turn(False)
        walls.append(wall)
        times, d = turn(True)
        spent += wall + d
        for k, (step, _, d) in enumerate(times):
            steps.setdefault(k, (step, []))[1].append(d)
    routine, adapt = {}, {}
    total = 0.0
    for step, ds in steps.values():
        med = float(np.median(ds))
        total += med
        if step.kind == "adapt":
            adapt[adapt_key(step)] = med
        else:
            routine[(step.name, step.what)] = med
    wall = float(np.median(walls))
    return routine, adapt, max(0.0, wall - total), wall


def overlay(costs, adapt_costs, context):
    """The profile's costs with ``context``'s in its place (new dicts).

    A routine timed in context takes that time.  The others of a layer take their profiled time
    scaled by ``context.ratio`` (the layer's last timed routine's in-context over profiled
    time): what the layer's neighbours and caches do to one routine they mostly do to the
    others, and leaving the untimed ones at their alone times would bias the selection towards
    whatever was not timed yet.
    """
    costs = {layer: dict(per) for layer, per in costs.items()}
    for layer, ratio in context.ratio.items():
        if layer in costs:
            costs[layer] = {d: c * ratio for d, c in costs[layer].items()}
    for (layer, descriptor), s in context.routine.items():
        if layer in costs and descriptor in costs[layer]:
            costs[layer][descriptor] = s
    adapt_costs = dict(adapt_costs)
    adapt_costs.update({k: s for k, s in context.adapt.items() if k in adapt_costs})
    return costs, adapt_costs


def challenger(session, costs, margin=0.25):
    """The plan with, on each layer, the cheapest other routine (by ``costs``, the overlaid
    ``{layer: {descriptor: s}}``) that reads and writes the same layouts as the chosen one (so the
    adapts stay as they are) and costs at most ``1 + margin`` times it; None where no layer has one."""
    from .. import routines
    graph, choice = session.graph, dict(session.plan.choice)
    swapped = dict(choice)
    for layer in graph:
        chosen, per = choice.get(layer.name), costs.get(layer.name, {})
        if chosen not in per:
            continue
        specs = graph.input_specs(layer)
        mine = routines.get(layer.op, chosen)
        formats = (mine.input_formats(layer, specs), mine.output_formats(layer))
        best = None
        for d, c in per.items():
            if d == chosen or c > (1 + margin) * per[chosen] or (best is not None and c >= per[best]):
                continue
            r = routines.get(layer.op, d)
            if (r.input_formats(layer, specs), r.output_formats(layer)) == formats:
                best = d
        if best is not None:
            swapped[layer.name] = best
    return swapped if swapped != choice else None


def calibrate(session, feeds=None, rounds=3, runs=5, margin=0.25):
    """Time ``session``'s plan in context and select again (see the module doc); sets
    ``session.context`` and ``session.plan``; returns the :class:`Context`."""
    feeds = feeds if feeds is not None else session.random_inputs()
    ctx = session.context = Context(runs=runs)
    profiled = session.costs(in_context=False)[0]
    seen = []

    def timed():   # the current plan in context, its times taken
        routine, adapt, overhead, wall = time_plan(session.compile(), feeds, runs=runs)
        ctx.add(routine, adapt, profiled)
        ctx.overhead_s = overhead
        ctx.walls.append(wall)
        ctx.rounds += 1

    for _ in range(rounds):
        seen.append(dict(session.plan.choice))
        timed()
        if ctx.rounds == 1:
            other = challenger(session, overlay(profiled, {}, ctx)[0], margin)
            if other is not None:
                from ..runtime.compiled import CompiledModel
                model = CompiledModel(session.graph, other, num_threads=session.num_threads,
                                      io_format=session.io_format, flush_denormals=session.flush_denormals)
                # Its routines' times only: the adapts, overhead and wall stay the plan's own.
                ctx.add(time_plan(model, feeds, runs=runs)[0], {}, profiled)
                ctx.challenged = sum(other[k] != v for k, v in seen[0].items())
        session.retune()
        if dict(session.plan.choice) in seen:
            break   # a plan already timed: the selection has settled
        ctx.plans_changed += 1
    else:
        # The rounds ran out on a plan never timed, chosen on scaled costs alone (a routine that
        # ran 3x slower in the model than its scaled profile said took a voice-activity model's
        # STFT): time it too, and select once more on what it showed.
        timed()
        session.retune()
    return ctx
