"""Constant folding: a layer whose inputs are all constant is computed once and replaced by its value.

:func:`fold_node` is also what the importer calls on each node as it walks the ONNX graph, so the
shape subgraphs exporters write (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) vanish at
import; :func:`fold_constants` catches what later rewrites make constant.
"""
import numpy as np

from .. import ops


def _shape_stand_in(spec):
    # Shape/Size read only the shape: a zero-stride view costs no memory.
    return np.lib.stride_tricks.as_strided(np.zeros(1, spec.dtype), spec.shape, [0] * len(spec.shape))


def fold_node(layer, consts, spec_of, shape_only=False):
    """Compute ``layer`` now if its result is known before run time; store outputs in ``consts``.

    Returns True when the layer was folded.
    """
    if shape_only:
        args = [_shape_stand_in(spec_of(layer.inputs[0]))]
    elif all(not t or i in layer.consts for i, t in enumerate(layer.inputs)) and layer.inputs:
        args = [layer.consts.get(i) for i in range(len(layer.inputs))]
    else:
        return False
    results = ops.get(layer.op).compute(layer, args)
    for name, value in zip(layer.outputs, results):
        if name:
            consts[name] = np.asarray(value)
    return True


def fold_constants(graph):
    """Fold every layer whose inputs are all constant; returns the names of the folded layers."""
    folded = []
    for layer in list(graph):
        values = {}
        if not fold_node(layer, values, graph.spec):
            continue
        for consumer in graph.consumers_of_outputs(layer):
            for i, t in enumerate(consumer.inputs):
                if t in values:
                    consumer.consts[i] = values[t]
        for out, value in values.items():
            if out in graph.outputs:
                graph.constants[out] = value
        graph.remove_layer(layer.name)
        graph.touch()
        folded.append(layer.name)
    return folded
