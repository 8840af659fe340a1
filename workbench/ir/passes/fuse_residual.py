"""Residual fusion: Conv -> Add(skip) [-> activation] becomes one Conv layer with a second input.

The fused Conv reads the skip tensor as input 3, adds it after the bias and before the
activation (the Add's fused activation moves with it).  When both Add operands come from
eligible Convs, the later one in topological order absorbs the Add.

A Conv that already has its activation (YOLO's bottlenecks: ``x + silu(conv(x))``) takes the Add
too, as ``residual_after_activation``: the skip tensor is added last, after the activation.  That
move is made for group-1 Convs (the depthwise kernels add a residual before the activation
only) where a routine other than the reference takes the fused Conv, and never with an
activation on the Add as well.
"""

from ._fast import runs_fast


def _eligible_conv(graph, tensor, add):
    conv = graph.producer(tensor)
    if (conv is None or conv.op != "Conv" or conv.attrs.get("residual") or "post_affine" in conv.attrs
            or len(conv.outputs) != 1 or graph.single_consumer(tensor) is not add):
        return None
    if conv.attrs.get("activation") and (add.attrs.get("activation") or conv.attrs.get("group", 1) != 1):
        return None   # two activations; or a grouped Conv, whose depthwise kernels cannot take it
    return conv


def fuse_residual_adds(graph):
    fused = []
    for add in list(graph):
        if add.op != "Add" or add.consts or len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
            continue
        specs = [graph.spec(t) for t in add.inputs]
        if not (specs[0] == specs[1] == add.out_specs[0]):
            continue  # broadcasting adds stay elementwise layers
        candidates = [(c, skip) for t, skip in (add.inputs, add.inputs[::-1])
                      if (c := _eligible_conv(graph, t, add)) is not None]
        # a Conv whose activation comes first only where no Conv can take the Add before it
        candidates = ([cs for cs in candidates if not cs[0].attrs.get("activation")]
                      or candidates)
        if not candidates:
            continue
        conv, skip = max(candidates, key=lambda cs: cs[0].meta["index"])
        saved = (conv.inputs, dict(conv.attrs), conv.outputs)
        conv.inputs = (conv.inputs + [""] * 3)[:3] + [skip]
        conv.attrs["residual"] = True
        if conv.attrs.get("activation"):
            conv.attrs["residual_after_activation"] = True
            if not runs_fast(graph, conv):   # only the reference would take it: leave the Add
                conv.inputs, conv.attrs, conv.outputs = saved
                continue
        for key in ("activation", "activation_params"):
            if key in add.attrs:
                conv.attrs[key] = add.attrs[key]
        conv.outputs = [add.outputs[0]]
        conv.fused = conv.fused + add.fused
        graph.remove_layer(add.name)
        graph.touch()
        fused.append(add.name)
    return fused
