"""An elementwise chain reads a nearest upsample's source where it lies.

Detection necks add a coarse map, upsampled by 2 (nearest), to a finer one: PP-OCR's
``x + x * se + up(y)``, FPN's ``x + up(y)``.  The Resize writes a copy four times the size of its
input, and the chain reads it back: two passes over the large tensor that carry no information.
Where a nearest Resize/Upsample by whole factors on height and width is read only by an
EltwiseChain (or a single Add/Sub/Mul/Div, made a chain of one step), the chain takes the
Resize's input instead and records the factors (``attrs["upsample"]``, ``[input, fh, fw]``); its
routines read each source row ``fw`` times along an output row and ``fh`` output rows over
(``routines/eltwise_chain.py``).  Batch 1; the chain's other inputs the output's shape, one value
per channel, or one value (the forms those routines take).

The Resize layer is kept in ``meta["upsampled"]`` under its input slot: export writes it back
before the chain's steps, so a re-import finds the same layers.
"""
import numpy as np

from ..ops.resize import Resize
from .fuse_eltwise_chain import BINARY, chain_layer, eligible


def _factors(graph, resize, reader):
    """``(fh, fw)`` where ``resize``'s output is a nearest upsample by whole factors read only by
    ``reader``, else None."""
    a = resize.attrs
    if resize.op not in ("Resize", "Upsample") or a.get("mode") != "nearest" or not resize.inputs:
        return None
    if graph.single_consumer(resize.outputs[0]) is not reader:
        return None
    x, y = graph.spec(resize.inputs[0]), resize.out_specs[0]
    if len(x.shape) != 4 or x.dtype != "float32" or x.shape[0] != 1 or x.shape[:2] != y.shape[:2]:
        return None
    factors = []
    for axis in (2, 3):
        n, m = x.shape[axis], y.shape[axis]
        if m % n:
            return None
        f = m // n
        coords = Resize.source_coords(a["coordinate_transformation_mode"], m, n, a["scales"][axis])
        index = Resize.nearest_index(coords, a["nearest_mode"], n, a["scales"][axis])
        if not np.array_equal(index, np.arange(m) // f):
            return None
        factors.append(f)
    return tuple(factors) if factors != [1, 1] else None


def _other_ok(shape, out):
    """The chain's routines take this operand beside an upsampled one."""
    shape = (1,) * (4 - len(shape)) + tuple(shape)
    return shape in (tuple(out), (1, out[1], 1, 1), (1, 1, 1, 1))


def _plan(graph, layer, reader):
    """``{input slot: (resize layer, (fh, fw))}`` for chain ``layer``'s upsampled inputs (one
    factor pair); ``reader``: the layer in the graph that reads them (``layer`` or the one it is
    made from)."""
    out = layer.out_specs[0].shape
    if len(out) != 4 or out[0] != 1:
        return {}
    found, others = {}, []
    for k, tensor in enumerate(layer.inputs):
        producer = None if k in layer.consts else graph.producer(tensor)
        f = _factors(graph, producer, reader) if producer is not None else None
        if f is not None and layer.inputs.count(tensor) == 1 and (not found or f == next(iter(found.values()))[1]):
            found[k] = (producer, f)
        else:
            others.append(np.shape(layer.consts[k]) if k in layer.consts else graph.spec(tensor).shape)
    if not found or len(found) > 4 or not all(_other_ok(s, out) for s in others):
        return {}
    return found


def fuse_upsample_reads(graph):
    """Let chains read their nearest-upsampled inputs' sources; returns the Resize layers removed."""
    removed = []
    for layer in list(graph):
        if layer.op == "EltwiseChain" and not layer.attrs.get("upsample"):
            chain = layer
        elif layer.op in BINARY and eligible(graph, layer):
            chain = chain_layer([layer])   # a chain of one step, if something is upsampled
        else:
            continue
        plan = _plan(graph, chain, layer)
        if not plan:
            continue
        if chain is not layer:
            graph.remove_layer(layer.name)
            graph.add_layer(chain)
        chain.attrs["upsample"] = [[k, fh, fw] for k, (_, (fh, fw)) in sorted(plan.items())]
        chain.meta["upsampled"] = {k: resize for k, (resize, _) in plan.items()}
        chain.attrs["fusion"] = "eltwise_chain+upsample"
        for k, (resize, _) in plan.items():
            chain.inputs[k] = resize.inputs[0]
            chain.fused = chain.fused + list(resize.fused)
            graph.remove_layer(resize.name)
            removed.append(resize.name)
    if removed:
        graph.touch()
    return removed
