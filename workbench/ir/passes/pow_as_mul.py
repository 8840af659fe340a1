"""``x ** 2`` (a float Pow of the constant 2) becomes ``x * x``.

Exporters write a magnitude as ``sqrt(re ** 2 + im ** 2)`` and a variance as ``(x - mean) ** 2``.
The product is the same float (a square is one rounding either way, NaN and infinities alike)
and a Mul runs on the binary routines and joins an elementwise chain
(:mod:`.fuse_eltwise_chain`), where a Pow runs on NumPy's power.
"""
import numpy as np


def pow_as_mul(graph):
    """Rewrite each such Pow in place; returns their names."""
    rewritten = []
    for layer in graph:
        if (layer.op != "Pow" or len(layer.inputs) != 2 or 0 in layer.consts or 1 not in layer.consts
                or layer.out_specs[0].dtype not in ("float32", "float64", "float16", "bfloat16")):
            continue
        exponent = np.asarray(layer.consts[1])
        if exponent.size != 1 or exponent.ndim > len(layer.out_specs[0].shape) or float(exponent.reshape(-1)[0]) != 2.0:
            continue
        if graph.spec(layer.inputs[0]).shape != layer.out_specs[0].shape:
            continue   # the exponent broadcasts the base to a larger shape
        layer.op = "Mul"
        layer.inputs = [layer.inputs[0], layer.inputs[0]]
        layer.consts = {}
        layer.meta["onnx"] = {"op_type": "Mul", "attributes": [], "taken": {}}
        rewritten.append(layer.name)
    if rewritten:
        graph.touch()
    return rewritten
