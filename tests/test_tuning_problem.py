"""From a graph to the selection problem: on every zoo model the DP's optimum equals the MILP's,
and the tuned plan runs and matches the reference.  Costs here are synthetic (deterministic per
layer and routine) so the test is fast and exact; real costs come from the profiler."""
import hashlib

import numpy as np
import pytest

import workbench
from workbench.routines import adapts as adapt
from workbench import routines, zoo
from workbench.runtime.compiled import CompiledModel
from workbench.tuning.profiler import adapt_pairs, problem, profile
from workbench.tuning.profiledb import ProfileDatabase
from workbench.tuning.search import evaluate, greedy, solve, solve_milp


def synthetic_costs(graph):
    def h(*parts):
        return int(hashlib.md5("|".join(parts).encode()).hexdigest()[:6], 16) / 0xFFFFFF
    costs = {l.name: {r.descriptor: 1e-3 * (0.2 + h(l.name, r.descriptor)) * (50 if r.algo == "reference" else 1)
                      for r in routines.applicable(graph, l)} for l in graph}
    adapts = {(t, s, d): 2e-4 * (0.1 + h(t, str(s), str(d))) for t, pairs in adapt_pairs(graph).items()
              for s, d in pairs}
    return costs, adapts


@pytest.mark.parametrize("name", zoo.NAMES)
def test_dp_equals_milp_on_zoo_models(name):
    graph = workbench.load(zoo.build(name, resolution=64 if name != "tiny" else None))
    costs, adapts = synthetic_costs(graph)
    p = problem(graph, costs, adapts)
    dp, milp = solve(p), solve_milp(p)
    assert dp.method == "dp"
    assert dp.cost == pytest.approx(milp.cost, rel=1e-7)
    assert dp.cost <= greedy(p).cost + 1e-12
    assert dp.adapts   # the layouts meet somewhere: the problem has priced adapts to choose
    for layout in ("nchw", "nhwc"):   # every single-layout plan costs at least the optimum
        choice = {}
        for n in p.nodes:
            same = [c for c in n.candidates if c.out_format.layout == layout and c.name.split(":")[2].startswith(layout)]
            choice[n.name] = min(same or n.candidates, key=lambda c: c.cost).name
        assert evaluate(p, choice)[0] >= dp.cost - 1e-12
    # The plan compiles and computes the model.
    compiled = CompiledModel(graph, dp.choice, num_threads=2)
    feeds = workbench.random_inputs(graph)
    ours, ref = compiled.run(feeds)["logits"], workbench.ReferenceExecutor(graph).run(feeds)["logits"]
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    # Every adapt runs but those between identical bytes (SE blocks' (N, C, 1, 1)), which share.
    views = [1 for t, src, dst in dp.adapts if adapt.is_view(graph.spec(t).with_format(src), dst)]
    assert len(compiled.adapts) == len(dp.adapts) - len(views)


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v2"])
def test_every_adapt_a_plan_can_need_is_priced(name):
    """adapt_pairs lists every (tensor, src, dst) that some choice of candidates needs: random
    plans over all candidates (brute force would be too many) never need an unpriced adapt."""
    import random
    graph = workbench.load(zoo.build(name, resolution=64 if name != "tiny" else None))
    costs, adapts = synthetic_costs(graph)
    p = problem(graph, costs, adapts)
    rnd = random.Random(5)
    needed = set()
    for _ in range(300):
        cost, used = evaluate(p, {n.name: rnd.choice(n.candidates).name for n in p.nodes})
        assert cost < float("inf")
        needed.update(used)
    assert needed and needed <= set(adapts)
    assert len(needed) >= len(adapts) // 2   # and it lists few that no plan needs


def test_profile_measures_once_and_reuses(tmp_path):
    graph = workbench.load(zoo.build("tiny"))
    db = ProfileDatabase(tmp_path / "p.sqlite", num_threads=2)
    first = profile(graph, db=db, num_threads=2, repeats=3)
    n_jobs = sum(len(v) for v in first.routine.values()) + len(first.adapt)
    assert first.measured > 0 and first.reused == 0 and first.measured + first.shared == n_jobs
    again = profile(graph, db=db, num_threads=2, repeats=3)
    assert again.measured == 0 and again.reused == first.measured and again.shared == first.shared
    for layer in graph:
        fast = {r.descriptor for r in routines.applicable(graph, layer) if r.algo != "reference"}
        assert set(first.routine[layer.name]) == fast   # the reference is the oracle, not a candidate
        assert all(rec.median >= 0 for rec in first.routine[layer.name].values())
    p = problem(graph, {l: {d: r.median for d, r in v.items()} for l, v in again.routine.items()},
                {k: r.median for k, r in again.adapt.items()})
    plan = solve(p)
    assert plan.cost == pytest.approx(solve_milp(p).cost, rel=1e-7)
