"""Control flow known at load: an ``If`` becomes its chosen branch, a ``Loop`` its iterations.

Exporters write ``If`` around what is decided by the input's shape (a squeeze only where a dim
is 1, a state built only when none is given) and, in voice-activity models, by a sample-rate
input.  Once the inputs' shapes are fixed and constant inputs given, such a condition folds to
a constant like any shape subgraph, and the ``If`` is its chosen branch: the branch's nodes go
into the graph where the ``If`` was, its local tensors renamed apart (prefixed with the ``If``'s
name) and its outputs becoming the ``If``'s.  A branch may read any tensor of the scopes around
it; a nested ``If`` is inlined in turn when the walk reaches it.  A condition only known at run
time is an error that names what it depends on.

A ``Loop`` whose trip count and condition fold the same way (a recurrent layer a converter wrote
as a while loop over the sequence, :class:`Unrolled`) is unrolled: each iteration's body goes in
with the iteration number as a constant, so its condition folds too.  A ``Scan`` (a recurrent
layer as a scan over the sequence axis) always runs as many iterations as its inputs are long,
and is unrolled the same way (:func:`unroll_scan`).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..errors import ModelImportError, UnsupportedOpsError, WorkbenchError


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
    nodes = _copy_nodes(branch.node, names, prefix)
    return nodes + tail, constants


#: The most iterations a Loop is unrolled to.
MAX_ITERATIONS = 4096
#: The op type of the marker node that ends an unrolled iteration (never in a file).
NEXT = "__workbench_loop_next"


def _copy_nodes(nodes, names, prefix):
    """Copies of ``nodes`` with tensors renamed by ``names`` (nested subgraphs' reads too) and
    node names prefixed."""
    out = []
    for n in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.name = prefix + (n.name or f"{n.op_type}_{len(out)}")
        copy.input[:] = [names.get(t, t) for t in n.input]
        copy.output[:] = [names.get(t, t) if t else t for t in n.output]
        for a in copy.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                a.g.CopyFrom(_renamed(a.g, names))
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    g.CopyFrom(_renamed(g, names))
        out.append(copy)
    return out


class Unrolled:
    """A Loop whose trip count and condition fold at load, unrolled one iteration at a time.

    :meth:`start` and :meth:`step` return the nodes to import next: an iteration's body (its
    tensors renamed ``LOOP/iI/...``, the iteration number and incoming condition as constants,
    the loop-carried values read from the previous iteration), then a marker node (:data:`NEXT`)
    whose turn comes once they are imported, when the iteration's outgoing condition must have
    folded; after the last iteration, Identity nodes give the Loop its final values and
    Unsqueeze/Concat nodes stack each scan output over the iterations.
    """

    def __init__(self, node, name, consts, opset):
        self.node, self.name, self.opset = node, name, opset
        self.body = next((a.g for a in node.attribute if a.name == "body"), None)
        if self.body is None:
            raise ModelImportError(f"node {name!r} (Loop): it has no body")
        ins = list(node.input) + [""] * (2 - len(node.input))
        trip, cond = ins[0], ins[1]
        for what, t in (("trip count", trip), ("condition", cond)):
            if t and t not in consts:
                raise ModelImportError(f"node {name!r} (Loop): its {what} {t!r} is known only at run time; a Loop is "
                                       f"taken only where its trip count and condition fold at load (unrolled)")
        self.trip = None if not trip else int(np.asarray(consts[trip]).reshape(-1)[0])
        self.keep = True if not cond else condition(consts[cond], name)
        self.carried = list(ins[2:])
        n = len(self.carried)
        if len(self.body.input) != n + 2 or len(self.body.output) < n + 1:
            raise ModelImportError(f"node {name!r} (Loop): its body takes {len(self.body.input)} inputs and gives "
                                   f"{len(self.body.output)} outputs for {n} loop-carried value(s)")
        self.scans = [[] for _ in range(len(self.body.output) - 1 - n)]
        self.i = 0
        self.cond_out = None
        self.local = {t for b in self.body.node for t in b.output if t} | {x.name for x in self.body.initializer}

    def start(self, consts):
        return self._next(consts)

    def step(self, consts):
        """The marker's turn: the iteration's outgoing condition, then what comes next."""
        if self.cond_out not in consts:
            raise ModelImportError(f"node {self.name!r} (Loop): the condition its body computes is known only at run "
                                   f"time; a Loop is taken only where it folds at load (unrolled)")
        self.keep = condition(consts[self.cond_out], self.name)
        self.i += 1
        return self._next(consts)

    def _next(self, consts):
        if (self.trip is not None and self.i >= self.trip) or not self.keep:
            return self._finish(consts)
        if self.i >= MAX_ITERATIONS:
            raise ModelImportError(f"node {self.name!r} (Loop): more than {MAX_ITERATIONS} iterations to unroll")
        prefix = f"{self.name}/i{self.i}/"
        names = {t: prefix + t for t in self.local}
        it, cond_in = (x.name for x in self.body.input[:2])
        names[it], names[cond_in] = prefix + "iteration", prefix + "cond_in"
        consts[names[it]] = np.array(self.i, np.int64)
        consts[names[cond_in]] = np.array(self.keep)
        for x, t in zip(self.body.input[2:], self.carried):
            names[x.name] = t
        for init in self.body.initializer:
            consts[names[init.name]] = onnx.numpy_helper.to_array(init)
        nodes = _copy_nodes(self.body.node, names, prefix)
        outs = [names.get(o.name, o.name) for o in self.body.output]
        self.cond_out = outs[0]
        self.carried = outs[1:1 + len(self.carried)]
        for k, t in enumerate(outs[1 + len(self.carried):]):
            self.scans[k].append(t)
        marker = helper.make_node(NEXT, [t for t in outs if t not in consts], [], name=f"{self.name}/i{self.i}/next")
        return nodes + [marker]

    def _finish(self, consts):
        n = len(self.carried)
        outs = list(self.node.output) + [""] * (n + len(self.scans) - len(self.node.output))
        nodes = [helper.make_node("Identity", [t], [o], name=f"{self.name}/{o}") for t, o in zip(self.carried, outs[:n])
                 if o]
        axes = f"{self.name}/axes0"
        consts[axes] = np.array([0], np.int64)
        for k, (parts, o) in enumerate(zip(self.scans, outs[n:])):
            if not o:
                continue
            if not parts:
                raise ModelImportError(f"node {self.name!r} (Loop): no iteration ran, so its scan output {o!r} has no "
                                       f"shape")
            stacked = []
            for j, t in enumerate(parts):
                u = f"{self.name}/scan{k}/{j}"
                inputs = [t, axes] if self.opset >= 13 else [t]
                extra = {} if self.opset >= 13 else {"axes": [0]}
                nodes.append(helper.make_node("Unsqueeze", inputs, [u], name=u, **extra))
                stacked.append(u)
            nodes.append(helper.make_node("Concat", stacked, [o], name=f"{self.name}/{o}", axis=0))
        return nodes


def unroll_scan(node, name, consts, spec_of, opset):
    """The nodes that stand for Scan ``node`` (opset 9 on, called ``name``): its iterations
    unrolled, as many as its scan inputs' length along their axes (known once shapes are).  Each
    iteration's body reads the state the previous one left and, from every scan input, the
    element of its turn (a Gather of a constant index, backwards where that input's direction is
    1); each scan output stacks the iterations' values (Unsqueeze, Concat) along its axis, in
    its direction.  The index constants and the body's initializers go into ``consts``."""
    if opset < 9:
        raise ModelImportError(f"node {name!r} (Scan): the opset {opset} Scan (a sequence_lens input and a batch "
                               f"axis) is not supported; opset 9 and later are")
    body = next((a.g for a in node.attribute if a.name == "body"), None)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "body"}
    m = attrs.get("num_scan_inputs")
    if body is None or m is None:
        raise ModelImportError(f"node {name!r} (Scan): it needs a body and num_scan_inputs")
    n = len(node.input) - m
    k = len(body.output) - n
    if n < 0 or len(body.input) != n + m or k < 0:
        raise ModelImportError(f"node {name!r} (Scan): {len(node.input)} inputs with {m} scan input(s), and a body of "
                               f"{len(body.input)} inputs and {len(body.output)} outputs, do not match")

    def per_input(key, count, default=0):
        values = list(attrs.get(key, [default] * count))
        if len(values) != count:
            raise ModelImportError(f"node {name!r} (Scan): {key} has {len(values)} entries for {count}")
        return [int(v) for v in values]
    in_axes, in_dirs = per_input("scan_input_axes", m), per_input("scan_input_directions", m)
    out_axes, out_dirs = per_input("scan_output_axes", k), per_input("scan_output_directions", k)
    scans = list(node.input[n:])
    lengths = set()
    for j, (t, axis) in enumerate(zip(scans, in_axes)):
        shape = spec_of(t).shape
        if not -len(shape) <= axis < len(shape):
            raise ModelImportError(f"node {name!r} (Scan): scan input {t!r} of shape {tuple(shape)} has no axis {axis}")
        in_axes[j] = axis % len(shape)
        lengths.add(shape[in_axes[j]])
    if len(lengths) != 1:
        raise ModelImportError(f"node {name!r} (Scan): its scan inputs differ in length ({sorted(lengths)})")
    steps = lengths.pop()
    if steps > MAX_ITERATIONS:
        raise ModelImportError(f"node {name!r} (Scan): {steps} iterations, more than {MAX_ITERATIONS} to unroll")
    local = {t for b in body.node for t in b.output if t} | {x.name for x in body.initializer}
    state, stacks, nodes = list(node.input[:n]), [[] for _ in range(k)], []
    for i in range(steps):
        prefix = f"{name}/i{i}/"
        names = {t: prefix + t for t in local}
        for x, t in zip(body.input[:n], state):
            names[x.name] = t
        for j, (x, t) in enumerate(zip(body.input[n:], scans)):
            index, part = f"{prefix}index{j}", f"{prefix}{x.name}"
            consts[index] = np.array(steps - 1 - i if in_dirs[j] else i, np.int64)
            nodes.append(helper.make_node("Gather", [t, index], [part], name=part, axis=in_axes[j]))
            names[x.name] = part
        for init in body.initializer:
            consts[names[init.name]] = onnx.numpy_helper.to_array(init)
        nodes += _copy_nodes(body.node, names, prefix)
        outs = [names.get(o.name, o.name) for o in body.output]
        state = outs[:n]
        for j, t in enumerate(outs[n:]):
            stacks[j].append(t)
    outputs = list(node.output) + [""] * (n + k - len(node.output))
    nodes += [helper.make_node("Identity", [t], [o], name=f"{name}/{o}") for t, o in zip(state, outputs[:n]) if o]
    for j, (parts, o) in enumerate(zip(stacks, outputs[n:])):
        if not o:
            continue
        if not parts:
            raise ModelImportError(f"node {name!r} (Scan): no iteration ran, so its scan output {o!r} has no shape")
        rank = len(body.output[n + j].type.tensor_type.shape.dim) if body.output[n + j].type.HasField("tensor_type") \
            else None
        axis = out_axes[j]
        if axis < 0:
            if not rank:
                raise ModelImportError(f"node {name!r} (Scan): scan output {o!r} has a negative axis and no "
                                       f"declared rank")
            axis += rank + 1
        axes = f"{name}/out{j}/axes"
        consts[axes] = np.array([axis], np.int64)
        stacked = []
        for i, t in enumerate(parts[::-1] if out_dirs[j] else parts):
            u = f"{name}/out{j}/{i}"
            nodes.append(helper.make_node("Unsqueeze", [t, axes] if opset >= 13 else [t], [u], name=u,
                                          **({} if opset >= 13 else {"axes": [axis]})))
            stacked.append(u)
        nodes.append(helper.make_node("Concat", stacked, [o], name=f"{name}/{o}", axis=axis))
    return nodes


def branch_reads(graph_proto):
    """The tensors a branch (and the subgraphs in it) reads from outside it, in first-read order."""
    inner = {i.name for i in graph_proto.initializer} | {i.name for i in graph_proto.input}
    for n in all_nodes(graph_proto):
        inner.update(t for t in n.output if t)
    seen = []
    for t in [t for n in all_nodes(graph_proto) for t in n.input if t] + [vi.name for vi in graph_proto.output]:
        if t not in inner and t not in seen:
            seen.append(t)
    return seen


def outer_constants(node, consts):
    """``{name: value}`` of the constants an If's branches read from outside them (an export writes
    them as initializers again: no layer of the graph reads them)."""
    return {t: consts[t] for a in node.attribute if a.name in ("then_branch", "else_branch")
            for t in branch_reads(a.g) if t in consts}


def branch_graphs(node, name, model, consts, spec_of, importer):
    """``(reads, {"then": Graph, "else": Graph})`` of an If whose condition is known only at run
    time: each branch imported as a graph of its own (fused), whose inputs are the tensors it reads
    from outside (``reads``, the ones not constant; constants go in as initializers).  A branch
    that does not import at these shapes is the message why instead: running it is that error.
    ``importer``: :func:`~workbench.onnx_io.read.import_onnx` (the reader this is part of)."""
    from ..ir.passes import optimize
    graphs, reads = {}, []
    protos = {a.name.split("_")[0]: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
    if set(protos) != {"then", "else"}:
        raise ModelImportError(f"node {name!r} (If): it needs a then_branch and an else_branch")
    for proto in protos.values():
        reads += [t for t in branch_reads(proto) if t not in consts and t not in reads]
    for which, proto in protos.items():
        outside = branch_reads(proto)
        inputs = []
        for t in reads:
            s = spec_of(t)
            inputs.append(helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.dtype(s.dtype)),
                                                        list(s.shape)))
        inits = list(proto.initializer) + [onnx.numpy_helper.from_array(np.asarray(consts[t]), t)
                                           for t in outside if t in consts]
        g = helper.make_graph(list(proto.node), f"{name}/{which}", inputs, list(proto.output), initializer=inits)
        sub = helper.make_model(g, opset_imports=list(model.opset_import))
        sub.ir_version = model.ir_version
        try:
            graph = importer(sub, name=f"{name}/{which}")
        except UnsupportedOpsError:
            raise
        except WorkbenchError as e:   # a branch for other input shapes (an 8 kHz path fed 16 kHz frames)
            graphs[which] = f"the {which} branch cannot run at these input shapes: {e}"
            continue
        optimize(graph)
        graphs[which] = graph
    ready = {w: g for w, g in graphs.items() if not isinstance(g, str)}
    if not ready:
        raise ModelImportError(f"node {name!r} (If): neither branch imports at these input shapes: "
                               f"{graphs['then']}; {graphs['else']}")
    if len(ready) == 2:
        for k, (a, b) in enumerate(zip(*([g.spec(o) for o in g.outputs] for g in ready.values()))):
            if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
                raise ModelImportError(f"node {name!r} (If): output {k} of its branches differs ({a} vs {b}); an "
                                       f"If chosen at run time needs the same static shapes from both")
    return reads, graphs
