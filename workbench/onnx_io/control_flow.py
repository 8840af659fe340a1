"""``If`` nodes whose condition is known at load: the chosen branch inlined in their place.

Exporters write ``If`` around what is decided by the input's shape (a squeeze only where a dim
is 1, a state built only when none is given) and, in voice-activity models, by a sample-rate
input.  Once the inputs' shapes are fixed and constant inputs given, such a condition folds to
a constant like any shape subgraph, and the ``If`` is its chosen branch: the branch's nodes go
into the graph where the ``If`` was, its local tensors renamed apart (prefixed with the ``If``'s
name) and its outputs becoming the ``If``'s.  A branch may read any tensor of the scopes around
it; a nested ``If`` is inlined in turn when the walk reaches it.  A condition only known at run
time is an error that names what it depends on.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..errors import ModelImportError


def subgraphs(node):
    """The graphs of ``node``'s attributes (an If's two branches, a Loop's body)."""
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def all_nodes(graph):
    """``graph``'s nodes and those of every subgraph inside them, depth first."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from all_nodes(sub)


def reads(node):
    """The tensors ``node`` reads: its inputs and what its subgraphs read from outside them."""
    out = [t for t in node.input if t]
    for sub in subgraphs(node):
        inner = {i.name for i in sub.initializer} | {i.name for i in sub.input}
        for n in all_nodes(sub):
            inner.update(t for t in n.output if t)
        out += [t for n in all_nodes(sub) for t in n.input if t and t not in inner]
        out += [vi.name for vi in sub.output if vi.name not in inner]
    return out


def condition(value, name):
    """The truth of an If's constant condition ``value`` (one element)."""
    v = np.asarray(value)
    if v.size != 1:
        raise ModelImportError(f"node {name!r} (If): its condition must have one element, got shape {v.shape}")
    return bool(v.reshape(-1)[0])


def _renamed(graph, names):
    """A copy of ``graph`` (a nested branch) with every reference in ``names`` renamed."""
    g = onnx.GraphProto()
    g.CopyFrom(graph)
    for node in all_nodes(g):
        for i, t in enumerate(node.input):
            if t in names:
                node.input[i] = names[t]
    for vi in g.output:
        if vi.name in names:
            vi.name = names[vi.name]
    return g


def inline_branch(node, cond, name):
    """``(nodes, constants)``: the nodes that stand for If ``node`` (called ``name``) with
    condition ``cond``: the chosen branch's, its local tensors renamed apart and its outputs the
    If's (an Identity where a branch output is a tensor from outside or a constant), and the
    branch's initializers under their new names."""
    branch = next((a.g for a in node.attribute if a.name == ("then_branch" if cond else "else_branch")), None)
    if branch is None:
        raise ModelImportError(f"node {name!r} (If): it has no {'then' if cond else 'else'}_branch")
    if len(branch.output) != len(node.output):
        raise ModelImportError(f"node {name!r} (If): the branch has {len(branch.output)} outputs, the If {len(node.output)}")
    prefix = f"{name}/{'then' if cond else 'else'}/"
    local = {t for n in branch.node for t in n.output if t} | {i.name for i in branch.initializer}
    names = {t: prefix + t for t in local}
    inits = {i.name for i in branch.initializer}
    tail = []
    for out, vi in zip(node.output, branch.output):
        t = vi.name
        if out and t in local and t not in inits and names[t] == prefix + t:
            names[t] = out   # the branch's node writes the If's output itself
        elif out:
            tail.append(helper.make_node("Identity", [names.get(t, t)], [out], name=f"{name}/{out}"))
    constants = {names[i.name]: onnx.numpy_helper.to_array(i) for i in branch.initializer}
    nodes = []
    for n in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.name = prefix + (n.name or f"{n.op_type}_{len(nodes)}")
        copy.input[:] = [names.get(t, t) for t in n.input]
        copy.output[:] = [names.get(t, t) if t else t for t in n.output]
        for a in copy.attribute:   # nested branches read the renamed tensors too
            if a.type == onnx.AttributeProto.GRAPH:
                a.g.CopyFrom(_renamed(a.g, names))
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    g.CopyFrom(_renamed(g, names))
        nodes.append(copy)
    return nodes + tail, constants
