"""Helpers shared by the pattern passes: scalar constants, readers, and evaluating a small
elementwise subgraph on probe values.

Exporters spell one function in many ways (``x * 0.5 * (1 + erf(x / sqrt2))``, ``0.5 * x * ...``,
Div or Mul by a reciprocal, constants as Constant nodes, initializers, scalars or shape-(1,)
tensors).  Rather than list the spellings, the passes collect the single-reader elementwise
layers between one input ``x`` and a candidate output, and *evaluate* that subgraph with the
ops' reference compute on probe values: it is the pattern when it computes the target function.
"""
import numpy as np

from .. import ops

#: Arithmetic a pattern may wrap around its anchor (each elementwise, given scalar constants).
#: Nonlinear ops are not in it: an anchor's input passing through a Relu is not the same pattern.
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Neg", "Reciprocal")

#: Probe points covering both signs, the hard-sigmoid's knees at +-3 and GELU's tails.
PROBES = np.array([-7.0, -4.1, -3.0, -2.6, -1.3, -0.6, -0.11, 0.0, 0.23, 0.9, 1.7, 2.6, 3.0, 3.4, 4.6, 8.0],
                  np.float32)


def scalar(layer, position):
    """The constant at ``position`` as a float when it holds one value, else None."""
    c = layer.consts.get(position)
    if c is None or np.asarray(c).size != 1 or not np.issubdtype(np.asarray(c).dtype, np.floating):
        return None
    return float(np.asarray(c).reshape(()))


def _scalar_consts(layer):
    return all(np.asarray(v).size == 1 for v in layer.consts.values())


def pure_elementwise(layer, ops=ELEMENTWISE):
    return (layer.op in ops and _scalar_consts(layer) and len(layer.outputs) == 1
            and not layer.attrs.get("activation"))


def upstream(graph, tensor, x, limit=6):
    """Layers computing ``tensor`` from ``x`` alone through single-reader elementwise layers.

    Returns the list (producers first), ``[]`` when ``tensor`` is ``x``, None when it also depends
    on anything else.
    """
    if tensor == x:
        return []
    layer = graph.producer(tensor)
    if layer is None or limit == 0 or not pure_elementwise(layer) or graph.single_consumer(tensor) is None:
        return None
    found = []
    for t in layer.activation_inputs:
        sub = upstream(graph, t, x, limit - 1)
        if sub is None:
            return None
        found += [l for l in sub if l not in found]
    return found + [layer]


def evaluate(layers, x, out, probes=PROBES):
    """Run ``layers`` (topological order) on ``x = probes`` with the reference; ``out``'s values, raveled."""
    env = {x: probes}
    for layer in layers:
        args = [layer.consts.get(i) if i in layer.consts else (env.get(t) if t else None)
                for i, t in enumerate(layer.inputs)]
        if any(a is None for i, a in enumerate(args) if layer.inputs[i]):
            return None
        with np.errstate(all="ignore"):
            results = ops.get(layer.op).compute(layer, args)
        env.update(zip(layer.outputs, results))
    value = env.get(out)
    if value is None or np.asarray(value).size != probes.size:
        return None
    return np.asarray(value, np.float64).ravel()


def close(values, target, rtol=2e-5):
    return values is not None and bool(np.all(np.abs(values - target) <= rtol * (1 + np.abs(target))))
