"""Fuse an activation layer into the epilogue of the layer that produces its input.

Applies when the producer's op can carry an epilogue (Conv, ConvTranspose, Gemm, MatMul, Add,
Sub, Mul, Div, ChannelAffine), has none yet, and its output feeds only the activation.  SiLU and
GELU fuse into the elementwise producers and Conv (whose kernels run them vectorised on each
block of output while it is in cache), not into Gemm, MatMul or ConvTranspose.  The
activation's ``fusion`` tag moves with it.

Before opset 14 there is no HardSwish op, and exporters write ``x * HardSigmoid(x)`` (alpha 1/6,
beta 0.5) instead; that pair is first merged into one HardSwish layer, which then fuses as usual.
"""
import numpy as np

from .. import ops
from ..ops.activation import ELTWISE_PRODUCERS, FUSABLE, FUSABLE_ELTWISE


def _params(act):
    if act.op == "PRelu":
        return {"slope": act.consts[1]}
    return {k: v for k, v in act.attrs.items() if k != "fusion"}


def _is_hardswish_gate(layer):
    return (layer.op == "HardSigmoid" and np.isclose(layer.attrs["alpha"], 1 / 6, rtol=1e-6, atol=0)
            and np.isclose(layer.attrs["beta"], 0.5, rtol=1e-6, atol=0))


def merge_hardswish(graph):
    """Rewrite ``Mul(x, HardSigmoid(x, 1/6, 0.5))`` (either operand order) as ``HardSwish(x)``."""
    merged = []
    for gate in list(graph):
        if not _is_hardswish_gate(gate):
            continue
        x = gate.inputs[0]
        mul = graph.single_consumer(gate.outputs[0])
        if (mul is None or mul.op != "Mul" or mul.consts or mul.attrs.get("activation")
                or sorted(mul.inputs) != sorted([x, gate.outputs[0]]) or mul.out_specs[0] != gate.out_specs[0]):
            continue
        gate.op, gate.attrs = "HardSwish", {}
        gate.outputs = list(mul.outputs)
        gate.fused = gate.fused + mul.fused
        graph.remove_layer(mul.name)
        graph.touch()
        merged.append(mul.name)
    return merged


def fuse_activations(graph):
    fused = merge_hardswish(graph)
    for act in list(graph):
        if act.op not in FUSABLE + FUSABLE_ELTWISE or (act.op == "PRelu" and 1 not in act.consts):
            continue
        producer = graph.producer(act.inputs[0])
        if act.op in FUSABLE_ELTWISE and (producer is None or producer.op not in ELTWISE_PRODUCERS):
            continue
        if (producer is None or not ops.get(producer.op).fusable or producer.attrs.get("activation")
                or graph.single_consumer(act.inputs[0]) is not act or len(producer.outputs) != 1
                or act.out_specs[0] != producer.out_specs[0]):
            continue
        producer.attrs["activation"] = act.op
        producer.attrs["activation_params"] = _params(act)
        if act.attrs.get("fusion"):
            old = producer.attrs.get("fusion")
            producer.attrs["fusion"] = f"{old}+{act.attrs['fusion']}" if old else act.attrs["fusion"]
        producer.outputs = [act.outputs[0]]
        producer.fused = producer.fused + act.fused
        graph.remove_layer(act.name)
        graph.touch()
        fused.append(act.name)
    return fused
