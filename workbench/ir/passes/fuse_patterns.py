"""Activations as exporters spell them, merged into one activation layer.

- SiLU: ``x * Sigmoid(x)`` (either operand order) -> ``Silu``;
- GELU: ``0.5 * x * (1 + Erf(x / sqrt 2))`` and ``0.5 * x * (1 + Tanh(sqrt(2/pi) (x + 0.044715 x^3)))``,
  in any association order, Div or Mul by the reciprocal, Pow or repeated Mul -> ``Gelu``;
- hard-sigmoid and hard-swish spelled with Add/Clip/Mul/Div (PyTorch's and Paddle2ONNX's
  ``Clip(x + 3, 0, 6) / 6``, ``x * Clip(x + 3, 0, 6) / 6``, ``* (1/6)``...) -> ``HardSigmoid`` /
  ``HardSwish``.

Each anchor (Sigmoid, Erf, Tanh, Clip) roots a subgraph: the single-reader elementwise layers
that compute its input from one tensor ``x``, then, one reader at a time, the layers after it
(whose other operands are constants or computed from ``x`` alone).  The longest such subgraph
that computes the target function on probe values (see :mod:`._cone`) becomes one layer: the
anchor's, which keeps its name (export writes the spelled form back with the anchor under that
name, so a re-import finds the same layer), with ``attrs["fusion"]`` naming the pattern.
The activation layers that result fuse into their producer afterwards (fuse_activations).
"""
import numpy as np

from ._cone import PROBES, close, evaluate, pure_elementwise, upstream


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _gelu_erf(x):
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _roots(graph, tensor, depth=8):
    """Tensors that ``tensor`` is computed from through single-reader elementwise layers."""
    layer = graph.producer(tensor)
    if depth == 0 or layer is None or not pure_elementwise(layer) or graph.single_consumer(tensor) is None:
        return {tensor}
    found = set()
    for t in layer.activation_inputs:
        found |= _roots(graph, t, depth - 1)
    return found


def _grow(graph, anchor, x, steps=6):
    """``(layers, out)``: the anchor's cone from ``x``, then each extension by the next reader."""
    layers = []
    for t in anchor.activation_inputs:
        sub = upstream(graph, t, x)
        if sub is None:
            return
        layers += [l for l in sub if l not in layers]
    layers.append(anchor)
    out = anchor.outputs[0]
    yield layers, out
    for _ in range(steps):
        reader = graph.single_consumer(out)
        if reader is None or not pure_elementwise(reader):
            return
        side = []
        for t in reader.activation_inputs:
            if t in (out, x):
                continue
            sub = upstream(graph, t, x)
            if sub is None or any(l in layers for l in sub):
                return
            side += sub
        layers = layers + side + [reader]
        out = reader.outputs[0]
        yield layers, out


def _hard_targets(graph, clip, x):
    """Targets for a Clip(u(x), 0, c) anchor: hard-sigmoid (u linear in x) and hard-swish."""
    lo, hi = clip.attrs.get("min"), clip.attrs.get("max")
    if lo != 0 or not np.isfinite(hi) or hi <= 0:
        return []
    up = upstream(graph, clip.inputs[0], x)
    u = evaluate(up, x, clip.inputs[0]) if up is not None else None
    if u is None:
        return []
    p = PROBES.astype(np.float64)
    alpha0, beta0 = np.polyfit(p, u, 1)
    if alpha0 <= 0 or not close(u, alpha0 * p + beta0, 1e-5):
        return []
    alpha, beta = alpha0 / hi, beta0 / hi

    def hs(v):
        return np.clip(alpha * v + beta, 0, 1)
    targets = [("hardsigmoid", "HardSigmoid", {"alpha": float(alpha), "beta": float(beta)}, hs)]
    if np.isclose(alpha, 1 / 6, rtol=1e-5) and np.isclose(beta, 0.5, rtol=1e-5):
        targets.append(("hardswish", "HardSwish", {}, lambda v: v * hs(v)))
    return targets


TARGETS = {
    "Sigmoid": [("silu", "Silu", {}, lambda v: v * _sigmoid(v))],
    "Erf": [("gelu(erf)", "Gelu", {"approximate": "none"}, _gelu_erf)],
    "Tanh": [("gelu(tanh)", "Gelu", {"approximate": "tanh"}, _gelu_tanh)],
}


def _match(graph, anchor):
    """The longest ``(layers, out, target)`` rooted at ``anchor``, or None."""
    if not pure_elementwise(anchor, TARGETS.keys() | {"Clip"}) or len(anchor.activation_inputs) != 1:
        return None
    roots = _roots(graph, anchor.activation_inputs[0])
    if len(roots) != 1:
        return None
    (x,) = roots
    spec = graph.spec(x)
    if spec.dtype not in ("float32", "float64"):
        return None
    targets = _hard_targets(graph, anchor, x) if anchor.op == "Clip" else TARGETS.get(anchor.op, [])
    if not targets:
        return None
    best = None
    p = PROBES.astype(np.float64)
    for layers, out in _grow(graph, anchor, x):
        values = evaluate(layers, x, out)
        for target in targets:
            if close(values, target[3](p)) and graph.spec(out).shape == spec.shape:
                best = (list(layers), out, target, x)
    return best


def _tag(kind, layers):
    ops = list(dict.fromkeys(l.op.lower() for l in layers))
    return f"{kind}({'/'.join(ops)})" if kind.startswith("hard") else kind


def fuse_patterns(graph):
    """Merge spelled-out SiLU/GELU/hard-sigmoid/hard-swish subgraphs; returns the absorbed layers."""
    absorbed = []
    for anchor in list(graph):
        if anchor.name not in graph or anchor.op not in ("Sigmoid", "Erf", "Tanh", "Clip"):
            continue
        found = _match(graph, anchor)
        if found is None or len(found[0]) < 2:
            continue
        layers, out, (kind, op, attrs, _), x = found
        last = layers[-1]
        others = [l for l in layers if l is not anchor]
        anchor.op, anchor.attrs = op, dict(attrs, fusion=_tag(kind, layers))
        anchor.inputs, anchor.consts, anchor.outputs = [x], {}, [out]
        anchor.out_specs = list(last.out_specs)
        anchor.fused = anchor.fused + [n for l in others for n in l.fused]
        for l in others:
            graph.remove_layer(l.name)
            absorbed.append(l.name)
        graph.touch()
    return absorbed
