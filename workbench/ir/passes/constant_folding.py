"""Constant folding: a layer whose inputs are all constant is computed once and replaced by its value.

:func:`fold_node` is also what the importer calls on each node as it walks the ONNX graph, so the
shape subgraphs exporters write (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) vanish at
import; :func:`fold_constants` catches what later rewrites make constant.
"""
import numpy as np

from .. import ops


#: Inputs that an op reads only for their spec (shape, dtype), never for their values: with static
#: shapes the op folds even when such an input is computed at run time.  The torch.export-based
#: exporter writes ``CastLike(0, x)`` for the zero bias of a bias-free Conv, for instance.
SPEC_ONLY_INPUTS = {"Shape": (0,), "Size": (0,), "CastLike": (1,)}


def _spec_stand_in(spec):
    # The values are never read: a zero-stride view of the right shape and dtype costs no memory.
    return np.lib.stride_tricks.as_strided(np.zeros(1, spec.dtype), spec.shape, [0] * len(spec.shape))


def fold_node(layer, consts, spec_of):
    """Compute ``layer`` now if its result is known before run time; store outputs in ``consts``.

    Returns True when the layer was folded.
    """
    if not layer.inputs:
        return False
    spec_only = SPEC_ONLY_INPUTS.get(layer.op, ())
    args = []
    for i, t in enumerate(layer.inputs):
        if i in layer.consts or not t:
            args.append(layer.consts.get(i))
        elif i in spec_only:
            args.append(_spec_stand_in(spec_of(t)))
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
