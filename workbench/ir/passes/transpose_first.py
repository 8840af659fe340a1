"""A detection head's ``Reshape (N, C, H, W) -> (N, C, H*W)`` then ``Transpose (0, 2, 1)`` becomes
``Transpose (0, 2, 3, 1)`` then ``Reshape (N, H*W, C)``.

Anchor-free and SSD-style heads (PP-PicoDet and the layout models built on it, NanoDet, GFL)
write every level's map out that way: channels last, one row per pixel.  As spelled, the Reshape
needs the map channels-first, so a channels-last plan adapts it to NCHW and the Transpose then
copies it back.  Transposed first, the same elements are the map's channels-last buffer itself:
the Transpose runs as a view of an NHWC tensor (``cpu:float32:nhwc/view``) and the Reshape as a
view of that, and neither moves a byte.  Where the map stays NCHW, the Transpose copies once, as
before.
"""
import numpy as np
from onnx import helper

from ..graph import Layer, TensorSpec


def _flattens_spatial(graph, reshape):
    """``reshape`` takes a 4-D (N, C, H, W) tensor to (N, C, H*W)."""
    if reshape.op != "Reshape" or not reshape.activation_inputs or reshape.inputs[0] in graph.constants:
        return False
    x = graph.spec(reshape.inputs[0]).shape
    return (len(x) == 4 and all(isinstance(d, (int, np.integer)) and d > 0 for d in x)
            and tuple(reshape.out_specs[0].shape) == (x[0], x[1], x[2] * x[3]))


def transpose_before_flatten(graph):
    rewritten = []
    for t in list(graph):
        if t.op != "Transpose" or len(t.inputs) != 1 or t.attrs.get("perm") not in ([0, 2, 1], [0, -1, -2]):
            continue
        flat = t.inputs[0]
        r = graph.producer(flat)
        if (r is None or not _flattens_spatial(graph, r) or flat in graph.outputs
                or [c.name for c in graph.consumers(flat)] != [t.name]):
            continue
        x = r.inputs[0]
        n, c, h, w = graph.spec(x).shape
        mid = f"{flat}.channels_last"
        shape = [n, h * w, c]
        # meta["onnx"]: how export writes each back (onnx_export._source_attributes).
        first = Layer(name=r.name, op="Transpose", inputs=[x], outputs=[mid], attrs={"perm": [0, 2, 3, 1]},
                      out_specs=[TensorSpec((n, h, w, c), t.out_specs[0].dtype)], fused=list(r.fused),
                      meta={"index": r.meta["index"],
                            "onnx": {"op_type": "Transpose", "taken": {},
                                     "attributes": [helper.make_attribute("perm", [0, 2, 3, 1])]}})
        then = Layer(name=t.name, op="Reshape", inputs=[mid], outputs=list(t.outputs),
                     attrs={"shape": shape, "allowzero": 0, "fusion": "transposed_first"},
                     out_specs=list(t.out_specs), fused=list(t.fused),
                     meta={"index": t.meta["index"],
                           "onnx": {"op_type": "Reshape", "attributes": [],
                                    "taken": {1: (f"{t.name}.shape", np.array(shape, np.int64))}}})
        graph.remove_layer(r.name)
        graph.remove_layer(t.name)
        graph.add_layer(first)
        graph.add_layer(then)
        rewritten += [r.name, t.name]
    return rewritten
