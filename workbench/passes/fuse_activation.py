"""Fuse an activation layer into the epilogue of the layer that produces its input.

Applies when the producer's op can carry an epilogue (Conv, ConvTranspose, Gemm, MatMul, Add,
Sub, Mul, Div, ChannelAffine), has none yet, and its output feeds only the activation.
"""
from .. import ops
from ..ops.activation import FUSABLE


def _params(act):
    if act.op == "PRelu":
        return {"slope": act.consts[1]}
    return dict(act.attrs)


def fuse_activations(graph):
    fused = []
    for act in list(graph):
        if act.op not in FUSABLE or (act.op == "PRelu" and 1 not in act.consts):
            continue
        producer = graph.producer(act.inputs[0])
        if (producer is None or not ops.get(producer.op).fusable or producer.attrs.get("activation")
                or graph.single_consumer(act.inputs[0]) is not act or len(producer.outputs) != 1
                or act.out_specs[0] != producer.out_specs[0]):
            continue
        producer.attrs["activation"] = act.op
        producer.attrs["activation_params"] = _params(act)
        producer.outputs = [act.outputs[0]]
        producer.fused = producer.fused + act.fused
        graph.remove_layer(act.name)
        graph.touch()
        fused.append(act.name)
    return fused
