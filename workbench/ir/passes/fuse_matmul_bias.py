"""MatMul then Add of a constant along the last axis becomes one MatMul with a bias.

Exporters write a linear layer on a batch of vectors (PyTorch's ``nn.Linear`` on a 3-D input,
Paddle's ``linear``) as ``MatMul(x, W)`` followed by ``Add(., b)``; a recogniser's classifier
over 18,710 characters spent a sixth of its time in that Add, a second pass over the product
that the GEMM's epilogue does in registers.  The MatMul takes ``b`` (N values, broadcast from
one) as a third, constant input, the Add's output and the Add's activation if it has one.  Only
a MatMul with a constant 2-D ``W`` qualifies (one GEMM over all rows of ``x``), only when the Add
alone reads the product and leaves its shape as it is, and only with an activation that every
MatMul routine runs (SiLU and GELU stay on the Add, whose kernel runs them).  The pass runs after
:func:`~workbench.ir.passes.fuse_activation.fuse_activations`, which has put them there.
"""
import numpy as np

from ..ops.activation import FUSABLE

_ACTIVATIONS = tuple(a for a in FUSABLE if a != "PRelu")   # a per-channel slope only on 2-D outputs


def _last_axis_bias(c, shape):
    """``c`` as a vector of ``shape[-1]`` values when it varies along the last axis alone."""
    c = np.asarray(c)
    if c.dtype != np.float32 or c.ndim > len(shape) or any(d != 1 for d in c.shape[:-1]):
        return None
    if c.ndim and c.shape[-1] not in (1, shape[-1]):
        return None
    return np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (shape[-1],)))


def fuse_matmul_bias(graph):
    """Fuse each qualifying MatMul + Add (see the module docstring); returns the removed Adds."""
    removed = []
    for mm in list(graph):
        if (mm.op != "MatMul" or len(mm.inputs) != 2 or 0 in mm.consts or np.ndim(mm.consts.get(1)) != 2
                or mm.attrs.get("activation") or len(mm.out_specs[0].shape) < 2):
            continue
        add = graph.single_consumer(mm.outputs[0])
        if (add is None or add.op != "Add" or len(add.inputs) != 2 or len(add.consts) != 1
                or add.attrs.get("activation", "Relu") not in _ACTIVATIONS):
            continue
        const_at = next(iter(add.consts))
        if add.inputs[1 - const_at] != mm.outputs[0] or add.out_specs[0].shape != mm.out_specs[0].shape:
            continue
        bias = _last_axis_bias(add.consts[const_at], mm.out_specs[0].shape)
        if bias is None or mm.out_specs[0].dtype != "float32":
            continue
        mm.inputs = list(mm.inputs) + [add.inputs[const_at]]
        mm.consts[2] = bias
        for key in ("activation", "activation_params"):
            if key in add.attrs:
                mm.attrs[key] = add.attrs[key]
        tag = "bias" + (f"+{add.attrs['fusion']}" if add.attrs.get("fusion") else "")
        old = mm.attrs.get("fusion")
        mm.attrs["fusion"] = f"{old}+{tag}" if old else tag
        mm.outputs = [add.outputs[0]]
        mm.fused = mm.fused + add.fused
        graph.remove_layer(add.name)
        graph.touch()
        removed.append(add.name)
    return removed
