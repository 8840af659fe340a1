"""The plan as plain data: the DP table of a layer and the optimal path into it, and the
per-layer table with the runner-up routine and what switching to it would cost."""
from __future__ import annotations

from ... import routines
from ...session import NotTunedError
from .base import missing, ms, need_plan
from .times import layer_times


def _out_format(session, layer, descriptor):
    r = routines.get(session.graph.layer(layer).op, descriptor)
    return r.output_formats(session.graph.layer(layer))[0]


def dp_table(session, layer):
    """One dict per output format the DP reached at ``layer`` (name or index): the cost of every
    layer up to it in topological order with their adapts, the routine, each input's producer
    and the format it was written in, and whether the plan uses this format."""
    plan = need_plan(session)
    name = session.layer(layer).name
    if not plan.table:
        raise NotTunedError(f"the plan was found by {plan.method}: there is no DP table")
    used = _out_format(session, name, plan.choice[name])
    rows = []
    for fmt, entry in sorted(plan.table[name].items(), key=lambda kv: kv[1].cost):
        preds = [f"{t} <- {p or 'graph input'} ({f})" for t, p, f in entry.predecessors]
        rows.append(dict(format=str(fmt), cost_ms=ms(entry.cost), routine=entry.routine,
                         predecessors=preds, in_plan=fmt == used))
    return rows


def dp_path(session, layer):
    """``[(layer, format)]``: the optimal path into ``layer`` through the DP table, from the entry
    of the format the plan uses back along each chosen predecessor (every branch of a merge)."""
    plan = need_plan(session)
    if not plan.table:
        return []
    name = session.layer(layer).name
    todo, seen, path = [(name, _out_format(session, name, plan.choice[name]))], set(), []
    while todo:
        node, fmt = todo.pop()
        if (node, fmt) in seen or fmt not in plan.table.get(node, {}):
            continue
        seen.add((node, fmt))
        path.append((node, fmt))
        todo.extend((p, f) for _, p, f in plan.table[node][fmt].predecessors if p is not None)
    order = {l.name: i for i, l in enumerate(session.graph)}
    return sorted(path, key=lambda nf: order[nf[0]])


def adapt_deltas(session, alternative):
    """``{layer: s}``: for each layer that ``alternative`` (``{layer: descriptor}``) names, how
    much more the plan would pay in adapts if that layer alone ran the alternative routine,
    every other layer keeping the plan's.  Only the tensors the layer reads and writes change:
    each pays one adapt per other format its readers (and a graph output) want, priced from the
    profile, as :func:`workbench.tuning.search.evaluate` prices a whole plan.  ``inf`` where a needed
    adapt does not exist; a layer whose routines are not all costed is left out."""
    plan = need_plan(session)
    prob = session.problem()   # every profiled routine a candidate, whatever the filters allow
    cands = {node.name: {c.name: c for c in node.candidates} for node in prob.nodes}
    nodes = {node.name: node for node in prob.nodes}
    producer = {t: node.name for node in prob.nodes for t in node.outputs}
    readers = {}
    for node in prob.nodes:
        for k, t in enumerate(node.inputs):
            readers.setdefault(t, []).append((node.name, k))

    def tensor_adapts(t, pick):
        src = pick(producer[t]).out_format if t in producer else prob.input_formats[t]
        wants = {pick(r).in_formats[k] for r, k in readers.get(t, ())}
        if t in prob.output_formats:
            wants.add(prob.output_formats[t])
        return sum(prob.adapt(t, src, f) for f in wants if f != src)

    base = lambda n: cands[n][plan.choice[n]]   # noqa: E731
    out = {}
    for layer, other in alternative.items():
        swapped = lambda n, layer=layer, other=other: cands[n][other] if n == layer else base(n)   # noqa: E731
        tensors = set(nodes[layer].inputs) | set(nodes[layer].outputs)
        try:
            out[layer] = sum(tensor_adapts(t, swapped) - tensor_adapts(t, base) for t in tensors)
        except KeyError:   # a routine of this layer or a neighbour was never profiled (a loaded plan)
            continue
    return out


#: The plan table's orders: label -> (row key, descending).  Rows lacking the key go last;
#: ties keep the graph's order.
PLAN_SORTS = {
    "layer order": ("index", False),
    "slowest (routine + adapts)": ("total_ms", True),
    "routine ms": ("ms", True),
    "adapt ms": ("adapt_ms", True),
    "op": ("op", False),
    "closest runner-up": ("switch_ms", False),
}


def sort_plan_rows(rows, by="layer order"):
    """``rows`` of :func:`plan_rows` in the order :data:`PLAN_SORTS` names ``by``."""
    try:
        key, descending = PLAN_SORTS[by]
    except KeyError:
        raise ValueError(f"plan table order {by!r}: expected one of {', '.join(PLAN_SORTS)}") from None

    def order(row):
        v = row[key]
        if missing(v):
            return (1, 0, row["index"])
        return (0, -v if descending else v, row["index"])
    return sorted(rows, key=order)


def plan_rows(session, sort="layer order"):
    """One dict per layer, in the order ``sort`` names (:data:`PLAN_SORTS`):

    ``index``, ``name``, ``op``, ``output`` (shapes), ``routine`` and its profiled ``ms``;
    ``precision``, the data type it computes in, and ``sensitivity_cosine``, the outputs' cosine
    with float32 when only this layer computes below it (None until ``Session.sensitivity`` ran;
    ``sensitivity``: the same as text, six decimals);
    ``adapt_ms``: the adapts counted for this layer (:func:`~workbench.ui.views.layer_times`),
    ``total_ms`` the two together; ``adapts``: the adapt steps inserted before it;
    ``runner_up``: the fastest other profiled routine (``Session.layer_rows``) and its
    ``runner_up_ms``; ``routine_delta_ms = runner_up_ms - ms``; ``adapt_delta_ms``: how much
    more the plan would pay in adapts if this layer alone ran the runner-up
    (:func:`adapt_deltas`); ``switch_ms``, their sum, is what that switch would add to the
    plan's predicted cost: a runner-up faster than the choice (``routine_delta_ms < 0``) lost it
    on adapts.  ``decision``: ``"pinned"`` or ``"chosen"``; ``fused``: the fused ONNX nodes."""
    layer_rows = session.layer_rows()
    deltas = adapt_deltas(session, {r["name"]: r["runner_up"] for r in layer_rows if r["runner_up"]})
    adapt_ms = {name: a for name, _, a in layer_times(session)}
    rows = []
    for row, layer in zip(layer_rows, session.graph):
        name = row["name"]
        routine_delta = row["runner_up_ms"] - row["cost_ms"] if row["runner_up"] else None
        adapt_delta = ms(deltas[name]) if name in deltas else None
        sens = row["sensitivity"]
        rows.append(dict(index=row["index"], name=name, op=row["op"],
                         output=", ".join(str(s) for s in layer.out_specs), routine=row["routine"],
                         precision=row["precision"], sensitivity_cosine=None if sens is None else sens.cosine,
                         sensitivity=None if sens is None else f"{sens.cosine:.6f}",
                         ms=row["cost_ms"], adapt_ms=adapt_ms[name], total_ms=row["cost_ms"] + adapt_ms[name],
                         runner_up=row["runner_up"] or None, runner_up_ms=row["runner_up_ms"] if row["runner_up"] else None,
                         routine_delta_ms=routine_delta, adapt_delta_ms=adapt_delta,
                         switch_ms=None if missing(routine_delta) or adapt_delta is None else routine_delta + adapt_delta,
                         adapts=row["adapts"], decision="pinned" if row["pinned"] else "chosen", fused=list(layer.fused)))
    return sort_plan_rows(rows, sort)
