"""Routine selection: the cheapest routine per layer plus adapts, by dynamic programming.

Pure: plain data in (:class:`Problem`), a :class:`Plan` and its DP table out.  No I/O, no
timing, no kernels.

The objective is the sum of the chosen routines' costs plus, for every tensor, the cost of
adapting it from the format its producer writes to each *distinct* other format its readers
want (an adapt is paid once per target format and shared by all readers of that format).
Graph inputs arrive in fixed formats; graph outputs must leave in fixed formats.

The DP walks the layers in topological order.  Its state is the set of *open* tensors
(produced, still to be read) with, for each, the format it was written in and the formats it has
already been adapted to.  Every choice at a layer depends only on that state, and the state
holds everything later layers can be charged for, so the DP is exact on every DAG.  Its cost
grows with the number of states, which is at most (formats x 2^formats)^(open tensors): small
on CNNs (a chain has one open tensor, a residual block two, a concat of k branches k).  When
the state count passes ``max_states`` the problem is solved exactly as a MILP instead
(:func:`solve_milp`) and the plan says so; it is never silently approximated.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class Candidate:
    """One routine for one layer: its measured cost, the format it reads each input in, the
    format it writes its outputs in."""

    name: str
    cost: float
    in_formats: tuple
    out_format: str


@dataclass(frozen=True)
class Node:
    """A layer: the tensors it reads (activations only, in order) and writes, its candidates."""

    name: str
    inputs: tuple
    outputs: tuple
    candidates: tuple


@dataclass
class Problem:
    """Nodes in topological order; ``adapt_cost[(tensor, src, dst)]`` (missing pair: impossible);
    fixed formats of graph inputs and outputs."""

    nodes: list
    adapt_cost: dict
    input_formats: dict
    output_formats: dict

    def adapt(self, tensor, src, dst):
        return 0.0 if src == dst else self.adapt_cost.get((tensor, src, dst), math.inf)


class TableEntry(NamedTuple):
    """One cell of the DP table: the cheapest way to have run a node with its output in one
    format: total cost so far (every node up to this one in topological order, and their
    adapts), the node's routine, and per input ``(tensor, producing node or None for a graph
    input, the format that producer wrote it in)``."""

    cost: float
    routine: str
    predecessors: tuple


@dataclass
class Plan:
    """The chosen candidate per node, the adapts ``(tensor, src, dst)`` it implies, its cost;
    ``written`` the format each tensor is written in, ``readers`` each adapt's readers in order
    (node names, :data:`OUTPUT` for a graph output): what views, tables and files show of the
    plan, so that none of them works it out again.  Make one with :func:`plan_of`."""

    choice: dict
    cost: float
    adapts: list = field(default_factory=list)
    method: str = "dp"
    table: dict = field(default_factory=dict)   # node -> {out format: TableEntry}
    states: int = 0
    written: dict = field(default_factory=dict)   # tensor -> format
    readers: dict = field(default_factory=dict)   # (tensor, src, dst) -> (reader, ...)

    def adapts_into(self, node):
        """The adapts ``(tensor, src, dst)`` that ``node`` reads."""
        return [a for a, rs in self.readers.items() if node in rs]


#: The reader that stands for a graph output in :attr:`Plan.readers`.
OUTPUT = "<output>"


def _readers(problem):
    readers = {}
    for node in problem.nodes:
        for t in node.inputs:
            readers.setdefault(t, []).append(node.name)
    return readers


def _last_use(problem):
    last = {}
    for i, node in enumerate(problem.nodes):
        for t in node.inputs:
            last[t] = i
    for t in problem.output_formats:
        last[t] = len(problem.nodes)   # graph outputs stay open to the end
    return last


def _walk(problem, choice):
    """``(cost, adapts, written, readers)`` of ``choice`` (see :class:`Plan`)."""
    written = dict(problem.input_formats)
    wants = {}   # tensor -> {format: [readers]}
    total = 0.0
    for node in problem.nodes:
        cand = next(c for c in node.candidates if c.name == choice[node.name])
        total += cand.cost
        for t, f in zip(node.inputs, cand.in_formats):
            wants.setdefault(t, {}).setdefault(f, {})[node.name] = None
        for t in node.outputs:
            written[t] = cand.out_format
    for t, f in problem.output_formats.items():
        wants.setdefault(t, {}).setdefault(f, {})[OUTPUT] = None
    adapts, readers = [], {}
    for t, formats in wants.items():
        for f in sorted(formats):
            if f != written[t]:
                total += problem.adapt(t, written[t], f)
                adapts.append((t, written[t], f))
                readers[(t, written[t], f)] = tuple(formats[f])
    return total, adapts, written, readers


def evaluate(problem, choice):
    """Total cost of ``choice`` (node -> candidate name) and the adapts it needs."""
    return _walk(problem, choice)[:2]


def plan_of(problem, choice, method, **extra):
    """The :class:`Plan` of ``choice`` on ``problem``, found by ``method`` (``extra``: its DP
    ``table`` and ``states``)."""
    cost, adapts, written, readers = _walk(problem, choice)
    return Plan(dict(choice), cost, adapts, method, written=written, readers=readers, **extra)


def compose_adapts(adapt_cost):
    """``adapt_cost`` (``{(tensor, src, dst): s}``, the adapts that exist) with every pair that a
    chain of them reaches added, priced as its cheapest chain (a cast then a transpose, say,
    where no one adapt does both).  Pairs given stay as given.  Pure, per tensor (Floyd-Warshall
    over its formats)."""
    by_tensor = {}
    for (t, s, d), c in adapt_cost.items():
        by_tensor.setdefault(t, {})[(s, d)] = c
    out = dict(adapt_cost)
    for t, direct in by_tensor.items():
        formats = sorted({f for pair in direct for f in pair})
        best = {(s, d): direct.get((s, d), 0.0 if s == d else math.inf) for s in formats for d in formats}
        for k in formats:
            for s in formats:
                for d in formats:
                    via = best[(s, k)] + best[(k, d)]
                    if via < best[(s, d)]:
                        best[(s, d)] = via
        for (s, d), c in best.items():
            if s != d and (t, s, d) not in out and c < math.inf:
                out[(t, s, d)] = c
    return out


def solve(problem, max_states=20000):
    """The optimal :class:`Plan` (DP; MILP fallback when the DP's state space is too large)."""
    last = _last_use(problem)
    producer = {t: n.name for n in problem.nodes for t in n.outputs}
    # state: tuple of (tensor, src format, frozenset of formats already adapted to), sorted
    start = tuple(sorted((t, f, frozenset()) for t, f in problem.input_formats.items() if t in last))
    frontier = {start: (0.0, None)}
    history = []   # per node: {state: (cost, prev state, candidate name)}
    table = {}
    peak = 1
    for i, node in enumerate(problem.nodes):
        nxt = {}
        for state, (cost, _) in frontier.items():
            open_ = {t: (src, paid) for t, src, paid in state}
            for cand in node.candidates:
                c = cost + cand.cost
                updated = dict(open_)
                for t, f in zip(node.inputs, cand.in_formats):
                    src, paid = updated[t]
                    if f != src and f not in paid:
                        c += problem.adapt(t, src, f)
                        updated[t] = (src, paid | {f})
                if math.isinf(c):
                    continue
                for t in node.outputs:
                    if t in last and last[t] > i:
                        updated[t] = (cand.out_format, frozenset())
                    elif t in problem.output_formats:
                        updated[t] = (cand.out_format, frozenset())
                # close tensors read for the last time here (graph outputs pay their adapt at the end)
                for t in list(updated):
                    if last.get(t, -1) <= i and t not in problem.output_formats:
                        del updated[t]
                key = tuple(sorted((t, s, p) for t, (s, p) in updated.items()))
                if key not in nxt or c < nxt[key][0] or (c == nxt[key][0] and cand.name < nxt[key][2]):
                    nxt[key] = (c, state, cand.name)
        if not nxt:
            raise ValueError(f"node {node.name!r}: no feasible candidate (missing adapts or no candidates)")
        peak = max(peak, len(nxt))
        if peak > max_states:
            plan = solve_milp(problem)
            plan.method = f"milp (DP state space {peak} > {max_states})"
            return plan
        history.append(nxt)
        per_format = {}
        for key, (c, prev, name) in nxt.items():
            fmt = next(cd.out_format for cd in node.candidates if cd.name == name)
            if fmt not in per_format or c < per_format[fmt].cost:
                src = {t: f for t, f, _ in prev}
                per_format[fmt] = TableEntry(c, name, tuple((t, producer.get(t), src[t]) for t in node.inputs))
        table[node.name] = per_format
        frontier = {k: (v[0], v[1]) for k, v in nxt.items()}
    # close the graph outputs
    best_key, best_cost = None, math.inf
    for state, (cost, _) in sorted(frontier.items(), key=lambda kv: (kv[1][0], str(kv[0]))):
        c = cost
        for t, src, paid in state:
            f = problem.output_formats.get(t)
            if f is not None and f != src and f not in paid:
                c += problem.adapt(t, src, f)
        if c < best_cost:
            best_key, best_cost = state, c
    if best_key is None:
        raise ValueError("no feasible plan: graph outputs cannot be brought to their formats")
    choice, key = {}, best_key
    for node, states in zip(reversed(problem.nodes), reversed(history)):
        _, prev, name = states[key]
        choice[node.name] = name
        key = prev
    return plan_of(problem, choice, "dp", table=table, states=peak)


def brute_force(problem):
    """Exhaustive search (for tests on small problems)."""
    names = [n.name for n in problem.nodes]
    best = None
    for combo in itertools.product(*[[c.name for c in n.candidates] for n in problem.nodes]):
        choice = dict(zip(names, combo))
        cost = evaluate(problem, choice)[0]
        if best is None or cost < best[0] - 1e-12:
            best = (cost, choice)
    return plan_of(problem, best[1], "brute force")


def greedy(problem):
    """Cheapest routine per layer, ignoring adapts (the baseline the DP must beat or equal)."""
    choice = {n.name: min(n.candidates, key=lambda c: (c.cost, c.name)).name for n in problem.nodes}
    return plan_of(problem, choice, "greedy")


def solve_milp(problem):
    """The same problem as an exact mixed-integer program (``scipy.optimize.milp``).

    Variables: x[v,c] (candidate c chosen for node v), need[t,f] (tensor t is read in format f),
    w[t,s,f] (t is written in s and read in f != s: an adapt).  Minimise sum cost*x + sum
    adapt*w subject to one candidate per node, need >= x for each reader's format, and
    w >= src(t)=s + need[t,f] - 1 where src(t)=s is the sum of the producer's x with that format.
    """
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    index, costs = {}, []

    def var(key, cost):
        index[key] = len(costs)
        costs.append(cost)

    formats = sorted({c.out_format for n in problem.nodes for c in n.candidates}
                     | {f for n in problem.nodes for c in n.candidates for f in c.in_formats}
                     | set(problem.input_formats.values()) | set(problem.output_formats.values()))
    producer = {}
    for n in problem.nodes:
        for c in n.candidates:
            var(("x", n.name, c.name), c.cost)
        for t in n.outputs:
            producer[t] = n
    tensors = sorted({t for n in problem.nodes for t in n.inputs} | set(problem.output_formats))
    for t in tensors:
        for f in formats:
            var(("need", t, f), 0.0)
        for s in formats:
            for f in formats:
                if s != f:
                    cost = problem.adapt(t, s, f)
                    var(("w", t, s, f), cost if math.isfinite(cost) else 1e9)
    rows, lo, hi = [], [], []

    def row(coefs, lower, upper):
        r = np.zeros(len(costs))
        for k, v in coefs:
            r[index[k]] += v
        rows.append(r), lo.append(lower), hi.append(upper)

    for n in problem.nodes:
        row([(("x", n.name, c.name), 1) for c in n.candidates], 1, 1)
        for c in n.candidates:
            for t, f in zip(n.inputs, c.in_formats):
                row([(("need", t, f), 1), (("x", n.name, c.name), -1)], 0, np.inf)
    for t, f in problem.output_formats.items():
        row([(("need", t, f), 1)], 1, 1)
    for t in tensors:
        for s in formats:
            if t in problem.input_formats:
                src_terms, fixed = [], 1.0 if problem.input_formats[t] == s else 0.0
            else:
                src_terms = [(("x", producer[t].name, c.name), 1) for c in producer[t].candidates if c.out_format == s]
                fixed = 0.0
            for f in formats:
                if s != f:
                    # w - src_s - need_f >= fixed - 1
                    row([(("w", t, s, f), 1), (("need", t, f), -1)] + [(k, -v) for k, v in src_terms], fixed - 1, np.inf)
    # HiGHS stops within an absolute gap of 1e-6 as well as the relative one: costs in seconds
    # (1e-5..1e-2) would let it stop short of the optimum, so the objective is scaled to ~1e6.
    c = np.array(costs)
    finite = c[(c > 0) & (c < 1e9)]
    c = c * (1e6 / finite.sum() if finite.size else 1.0)
    res = milp(c=c, constraints=LinearConstraint(np.array(rows), lo, hi),
               integrality=np.ones(len(costs)), bounds=Bounds(0, 1), options={"mip_rel_gap": 0.0})
    if not res.success:
        raise ValueError(f"MILP found no plan: {res.message}")
    choice = {}
    for n in problem.nodes:
        choice[n.name] = max(n.candidates, key=lambda c: res.x[index[("x", n.name, c.name)]]).name
    return plan_of(problem, choice, "milp")
