"""Selection: the DP's optimum equals brute force and the exact MILP; it beats greedy where adapts matter."""
import math

import networkx as nx
import pytest
from hypothesis import given, settings, strategies as st

from workbench.tuning.search import (Candidate, Node, Problem, brute_force, compose_adapts, evaluate, greedy, solve,
                                     solve_milp)

FORMATS = ("nchw", "nhwc")


@st.composite
def problems(draw, max_nodes=7):
    n = draw(st.integers(1, max_nodes))
    nodes, tensors = [], ["in"]
    for i in range(n):
        k = draw(st.integers(1, min(3, len(tensors))))
        inputs = tuple(draw(st.lists(st.sampled_from(tensors), min_size=k, max_size=k, unique=True)))
        cands = []
        for j in range(draw(st.integers(1, 3))):
            fmt = draw(st.sampled_from(FORMATS))
            cands.append(Candidate(f"r{j}", draw(st.floats(0.1, 10)), tuple(fmt for _ in inputs), fmt))
        out = f"t{i}"
        nodes.append(Node(f"n{i}", inputs, (out,), tuple(cands)))
        tensors.append(out)
    read = {t for node in nodes for t in node.inputs}
    outputs = {t: "nchw" for t in tensors[1:] if t not in read} or {tensors[-1]: "nchw"}
    outputs[draw(st.sampled_from(tensors[1:]))] = draw(st.sampled_from(FORMATS))   # maybe also read later
    adapt = {(t, s, d): draw(st.floats(0.05, 5)) for t in tensors for s in FORMATS for d in FORMATS if s != d}
    return Problem(nodes, adapt, {"in": "nchw"}, outputs)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(problems())
def test_dp_equals_brute_force_and_milp(problem):
    dp = solve(problem)
    bf = brute_force(problem)
    assert dp.cost == pytest.approx(bf.cost, rel=1e-9, abs=1e-9)
    assert evaluate(problem, dp.choice)[0] == pytest.approx(dp.cost)
    assert solve_milp(problem).cost == pytest.approx(dp.cost, rel=1e-6, abs=1e-6)
    assert dp.cost <= greedy(problem).cost + 1e-9


def test_adapt_shared_by_readers_of_the_same_format():
    # One NCHW tensor read by three NHWC layers: a single adapt, not three.
    fast_nhwc = (Candidate("nhwc", 1.0, ("nhwc",), "nhwc"), Candidate("nchw", 1.5, ("nchw",), "nchw"))
    nodes = [Node(f"b{i}", ("x",), (f"y{i}",), fast_nhwc) for i in range(3)]
    adapts = {("x", "nchw", "nhwc"): 0.8}
    adapts.update({(f"y{i}", "nhwc", "nchw"): 0.1 for i in range(3)})
    problem = Problem(nodes, adapts, {"x": "nchw"}, {f"y{i}": "nchw" for i in range(3)})
    plan = solve(problem)
    # all NHWC: 3*1.0 + 0.8 (shared) + 3*0.1 = 4.1 < all NCHW 4.5
    assert plan.cost == pytest.approx(4.1) and set(plan.choice.values()) == {"nhwc"}
    assert plan.adapts.count(("x", "nchw", "nhwc")) == 1


def test_dp_beats_greedy_when_adapts_couple_neighbours():
    a = (Candidate("nhwc", 1.0, ("nchw",), "nhwc"), Candidate("nchw", 1.2, ("nchw",), "nchw"))
    b = (Candidate("nchw", 1.0, ("nchw",), "nchw"), Candidate("nhwc", 1.1, ("nhwc",), "nhwc"))
    problem = Problem([Node("a", ("x",), ("y",), a), Node("b", ("y",), ("z",), b)],
                      {("y", "nhwc", "nchw"): 1.0, ("z", "nhwc", "nchw"): 1.0, ("y", "nchw", "nhwc"): 1.0},
                      {"x": "nchw"}, {"z": "nchw"})
    assert greedy(problem).cost == pytest.approx(3.0)      # 1.0 + 1.0 + adapt y 1.0
    assert solve(problem).cost == pytest.approx(2.2)       # both NCHW
    table = solve(problem).table
    assert table["a"]["nchw"][0] == pytest.approx(1.2) and table["a"]["nhwc"][0] == pytest.approx(1.0)


def test_wide_frontier_falls_back_to_milp():
    # 12 parallel branches from one input, joined by a concat: the DP state space explodes
    branches = [Node(f"b{i}", ("x",), (f"y{i}",), (Candidate("nhwc", 1.0, ("nhwc",), "nhwc"),
                                                    Candidate("nchw", 1.05, ("nchw",), "nchw")))
                for i in range(12)]
    join = Node("cat", tuple(f"y{i}" for i in range(12)), ("z",), (Candidate("c", 1.0, ("nchw",) * 12, "nchw"),))
    adapt = {(f"y{i}", "nhwc", "nchw"): 0.01 for i in range(12)}
    adapt[("x", "nchw", "nhwc")] = 0.5
    problem = Problem(branches + [join], adapt, {"x": "nchw"}, {"z": "nchw"})
    plan = solve(problem, max_states=50)
    assert plan.method.startswith("milp")
    assert plan.cost == pytest.approx(solve(problem).cost)


def test_infeasible_is_an_error():
    node = Node("a", ("x",), ("y",), (Candidate("nhwc", 1.0, ("nhwc",), "nhwc"),))
    with pytest.raises(ValueError, match="no feasible"):
        solve(Problem([node], {}, {"x": "nchw"}, {"y": "nchw"}))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(2, 8), st.randoms(use_true_random=False))
def test_dp_table_traces_the_optimal_path_of_a_chain(n, rnd):
    """On a chain every output format is one DP state, so the table's cells along the plan are
    the plan: walking the predecessors back from the output gives the chosen routines, and each
    cell's cost is the plan's cost of the prefix (brute force over the prefix agrees)."""
    nodes = []
    for i in range(n):
        cands = tuple(Candidate(f"r{j}", rnd.uniform(0.1, 10), (fmt,), fmt)
                      for j, fmt in enumerate(rnd.sample(FORMATS * 2, rnd.randint(1, 3))))
        nodes.append(Node(f"n{i}", (f"t{i - 1}" if i else "in",), (f"t{i}",), cands))
    adapt = {(t, s, d): rnd.uniform(0.05, 5) for t in ["in"] + [f"t{i}" for i in range(n)]
             for s in FORMATS for d in FORMATS if s != d}
    problem = Problem(nodes, adapt, {"in": "nchw"}, {f"t{n - 1}": "nchw"})
    plan = solve(problem)
    out_format = {nd.name: next(c.out_format for c in nd.candidates if c.name == plan.choice[nd.name]) for nd in nodes}
    node, fmt = nodes[-1].name, out_format[nodes[-1].name]
    while node is not None:
        entry = plan.table[node][fmt]
        assert entry.routine == plan.choice[node]
        i = int(node[1:])
        prefix = Problem(nodes[:i + 1], adapt, {"in": "nchw"}, {f"t{i}": fmt})
        # the cell is the cheapest way to run nodes 0..i with node i writing ``fmt``
        assert entry.cost == pytest.approx(min(brute_force_with_output(prefix, fmt)), rel=1e-9)
        ((tensor, node, fmt),) = entry.predecessors
        assert node is None or fmt == out_format[node]


def brute_force_with_output(problem, fmt):
    """Costs (adapts of the last tensor excluded) of every choice whose last node writes ``fmt``."""
    import itertools
    free = Problem(problem.nodes, problem.adapt_cost, problem.input_formats, {})
    for combo in itertools.product(*[n.candidates for n in problem.nodes]):
        if combo[-1].out_format == fmt:
            yield evaluate(free, {n.name: c.name for n, c in zip(problem.nodes, combo)})[0]


# Formats as the planner sees them once data types are part of them: dtype and layout.
MANY = ("float32:nchw", "float32:nhwc", "bfloat16:nhwc", "bfloat16:nchw", "qint8:nhwc", "float32:nhwc16")


def _chained_problem(rnd, n_formats):
    """A random DAG over ``n_formats`` formats whose direct adapts form a ring plus a few chords
    (both random per tensor), so most pairs are reachable only through a chain of adapts."""
    formats = MANY[:n_formats]
    nodes, tensors = [], ["in"]
    for i in range(rnd.randint(2, 6)):
        inputs = tuple(rnd.sample(tensors, rnd.randint(1, min(2, len(tensors)))))
        cands = []
        for j in range(rnd.randint(1, 3)):
            fmt = rnd.choice(formats)
            cands.append(Candidate(f"r{j}", rnd.uniform(0.1, 10), tuple(rnd.choice((fmt, fmt, rnd.choice(formats)))
                                                                       for _ in inputs), fmt))
        nodes.append(Node(f"n{i}", inputs, (f"t{i}",), tuple(cands)))
        tensors.append(f"t{i}")
    direct = {}
    for t in tensors:
        ring = rnd.sample(formats, len(formats))
        for a, b in zip(ring, ring[1:] + ring[:1]):
            direct[(t, a, b)] = rnd.uniform(0.05, 2)
        for _ in range(rnd.randint(0, 2)):
            a, b = rnd.sample(formats, 2)
            direct[(t, a, b)] = rnd.uniform(0.05, 2)
    read = {t for node in nodes for t in node.inputs}
    outputs = {t: rnd.choice(formats) for t in tensors[1:] if t not in read}
    return Problem(nodes, direct, {"in": formats[0]}, outputs), direct


def test_composed_adapts_are_the_cheapest_chains():
    """Against shortest paths found by networkx on each tensor's adapt graph."""
    import random
    rnd = random.Random(7)
    for _ in range(40):
        problem, direct = _chained_problem(rnd, rnd.randint(4, 6))
        composed = compose_adapts(direct)
        for t in {t for t, _, _ in direct}:
            g = nx.DiGraph()
            g.add_weighted_edges_from((s, d, c) for (tt, s, d), c in direct.items() if tt == t)
            lengths = dict(nx.all_pairs_dijkstra_path_length(g))
            for s in g:
                for d in g:
                    if s != d:
                        want = direct.get((t, s, d), lengths[s][d])
                        assert composed[(t, s, d)] == pytest.approx(want, rel=1e-12)
        assert {k: v for k, v in composed.items() if k in direct} == direct


def test_dp_equals_brute_force_and_milp_with_many_formats_and_chains():
    """DP == MILP == brute force on random DAGs with 4-6 formats whose adapts between most pairs
    exist only as chains (priced by compose_adapts); some optimal plans must use such a chain."""
    import random
    rnd = random.Random(11)
    chained = 0
    for _ in range(120):
        problem, direct = _chained_problem(rnd, rnd.randint(4, 6))
        problem = Problem(problem.nodes, compose_adapts(direct), problem.input_formats, problem.output_formats)
        bf = brute_force(problem)   # the ring makes every format reachable: always a plan
        dp = solve(problem)
        assert dp.cost == pytest.approx(bf.cost, rel=1e-9, abs=1e-9)
        assert solve_milp(problem).cost == pytest.approx(dp.cost, rel=1e-6, abs=1e-6)
        chained += any(a not in direct for a in dp.adapts)
    print(f"{chained} of 120 optimal plans use an adapt that exists only as a chain")
    assert chained >= 20, chained
