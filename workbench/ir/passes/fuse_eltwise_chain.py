"""Fuse runs of Add/Sub/Mul/Div layers into one :class:`~workbench.ir.ops.elementwise.EltwiseChain`.

Exporters write ``x + x * se(x)``, then ``+ upsample(y)`` (PP-OCR's residual squeeze-excite
necks) as three layers, and each intermediate tensor makes a round trip through memory.  After
the other passes have put what they can into convolutions and per-channel affines, a binary
layer whose output only one other binary layer reads, with the same output shape, joins that
layer's chain; the chain is one layer that computes every step on a block of the output while
it is in cache, with the same float32 operations in the same order.

A step keeps its layer's fused activation (not PRelu).  A chain has at most 8 steps and 8
inputs (constants count), the limits of ``kernels_pyx/eltwise_chain.pyx``; a longer run becomes
several chains.  The chain takes the name of its last layer, so a re-import of an exported
model (which writes the layers back one by one, ``onnx_export``) finds it again; its
``meta["chain"]`` keeps each step's layer name, output tensor and fused nodes for that export.
"""
from ..graph import Layer

BINARY = ("Add", "Sub", "Mul", "Div")
#: Activations the chain kernel applies after a step (the codes of eltwise.pyx, PRelu aside).
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "Silu", "Gelu")
MAX_STEPS = 8
MAX_INPUTS = 8


def eligible(graph, layer):
    """Whether ``layer`` is a binary layer a chain can take as a step."""
    return (layer.op in BINARY and len(layer.inputs) == 2 and len(layer.outputs) == 1 and len(layer.consts) < 2
            and layer.out_specs[0].dtype == "float32" and not layer.attrs.get("post_affine")
            and layer.attrs.get("activation", "Relu") in ACTIVATIONS
            and all(s is not None and s.dtype == "float32" for s in graph.input_specs(layer)))


def _groups(graph):
    """Chains as lists of layers in topological order, the last one the root (its output leaves)."""
    root_of, members, outside = {}, {}, {}   # outside: the group's external operands, an upper bound
    for layer in reversed(list(graph)):
        if not eligible(graph, layer):
            continue
        reader = graph.single_consumer(layer.outputs[0])
        root = root_of.get(reader.name) if reader is not None else None
        if (root is not None and reader.out_specs[0].shape == layer.out_specs[0].shape
                and len(members[root]) < MAX_STEPS):
            ext = (outside[root] - {layer.outputs[0]}) | set(layer.inputs)
            if len(ext) <= MAX_INPUTS:
                root_of[layer.name] = root
                members[root].append(layer)
                outside[root] = ext
                continue
        root_of[layer.name] = layer.name
        members[layer.name] = [layer]
        outside[layer.name] = set(layer.inputs)
    return [group[::-1] for group in members.values() if len(group) >= 2]


def chain_layer(group):
    """The EltwiseChain layer of ``group`` (topological order, root last)."""
    root = group[-1]
    step_of = {layer.outputs[0]: i for i, layer in enumerate(group)}
    inputs, consts, slot = [], {}, {}
    steps, record = [], []
    for layer in group:
        args = []
        for pos, tensor in enumerate(layer.inputs):
            if tensor in step_of:
                args.append(-step_of[tensor] - 1)
                continue
            if tensor not in slot:
                slot[tensor] = len(inputs)
                inputs.append(tensor)
                if pos in layer.consts:
                    consts[slot[tensor]] = layer.consts[pos]
            args.append(slot[tensor])
        step = {"op": layer.op, "args": args}
        for key in ("activation", "activation_params"):
            if key in layer.attrs:
                step[key] = layer.attrs[key]
        steps.append(step)
        record.append({"name": layer.name, "output": layer.outputs[0], "fused": list(layer.fused)})
    fused = list(root.fused) + [n for layer in group[:-1] for n in layer.fused]
    return Layer(name=root.name, op="EltwiseChain", inputs=inputs, outputs=list(root.outputs),
                 attrs={"steps": steps, "fusion": "eltwise_chain"}, consts=consts, out_specs=list(root.out_specs),
                 fused=fused, meta={"index": root.meta["index"], "chain": record})


def fuse_eltwise_chains(graph):
    """Replace each chain of two or more binary layers by one layer; returns the layers removed."""
    removed = []
    for group in _groups(graph):
        chain = chain_layer(group)
        for layer in group:
            graph.remove_layer(layer.name)
        graph.add_layer(chain)
        removed += [layer.name for layer in group[:-1]]
    if removed:
        graph.touch()
    return removed
