"""1-D convolutions as 2-D ones of height 1, so that the 2-D routines run them.

Audio and sequence models (a voice-activity detector's STFT and encoder, text CNNs) convolve
(N, C, L) tensors; every fast convolution routine is written for (N, C, H, W) images, and a 1-D
Conv left as it is runs on the NumPy reference.  After the fusion passes (so that BatchNorm,
activations and residual adds are in the convolution already), each 1-D Conv becomes a 2-D one
over (N, C, 1, L), its weights (O, C/g, 1, k), with a Reshape on each side (views in NCHW) and one
for a fused residual; then :func:`~.reshapes.tidy_reshapes` lets one 2-D output go straight to the
next 2-D input.  Export writes the 2-D Conv between the Reshapes, which computes the same.
"""
import numpy as np
from onnx import helper

from ..graph import Layer, TensorSpec
from .reshapes import reshape_layer as _reshape, tidy_reshapes


def conv1d_as_2d(graph):
    """Rewrite every 1-D Conv as described above; returns the names of the Convs rewritten."""
    rewritten = []
    for conv in [l for l in graph if l.op == "Conv" and len(l.attrs["kernel_shape"]) == 1]:
        a = conv.attrs
        x, y = conv.inputs[0], conv.outputs[0]
        n, c, length = graph.spec(x).shape
        out = conv.out_specs[0]
        dtype = out.dtype
        index = conv.meta["index"]
        before = _reshape(f"{conv.name}/as_2d", x, f"{x}/as_2d@{conv.name}", (n, c, 1, length), dtype, index)
        after = _reshape(f"{conv.name}/as_1d", f"{y}/as_2d", y, out.shape, dtype, index)
        extra = []
        inputs = [before.outputs[0]] + list(conv.inputs[1:])
        if a.get("residual") and conv.inputs[3] == x:   # x + conv(x): the one reshape serves both
            inputs[3] = before.outputs[0]
        elif a.get("residual"):
            r = conv.inputs[3]
            rn, rc, rl = graph.spec(r).shape
            extra.append(_reshape(f"{conv.name}/residual_as_2d", r, f"{r}/as_2d_residual@{conv.name}", (rn, rc, 1, rl),
                                  dtype, index))
            inputs[3] = extra[-1].outputs[0]
        attrs = dict(a, kernel_shape=[1] + list(a["kernel_shape"]), strides=[1] + list(a["strides"]),
                     dilations=[1] + list(a["dilations"]), pads=[0, a["pads"][0], 0, a["pads"][1]])
        consts = dict(conv.consts)
        consts[1] = np.ascontiguousarray(consts[1][:, :, None, :])
        source = dict(conv.meta.get("onnx") or {"op_type": "Conv", "taken": {}})
        source["attributes"] = [helper.make_attribute(k, attrs[k]) for k in ("kernel_shape", "strides", "dilations",
                                                                               "pads", "group")]
        meta = dict(conv.meta, onnx=source)
        two_d = Layer(name=conv.name, op="Conv", inputs=inputs, outputs=[after.inputs[0]], attrs=attrs, consts=consts,
                      out_specs=[TensorSpec((out.shape[0], out.shape[1], 1, out.shape[2]), dtype)],
                      fused=list(conv.fused), meta=meta)
        graph.remove_layer(conv.name)
        for layer in [before] + extra + [two_d, after]:
            graph.add_layer(layer)
        rewritten.append(conv.name)
    if rewritten:   # one convolution feeding the next: (N, C, 1, L) from one to the other, no views between
        tidy_reshapes(graph)
    return rewritten
