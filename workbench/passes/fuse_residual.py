"""Residual fusion: Conv -> Add(skip) [-> activation] becomes one Conv layer with a second input.

The fused Conv reads the skip tensor as input 3, adds it after the bias and before the
activation (the Add's fused activation moves with it).  When both Add operands come from
eligible Convs, the later one in topological order absorbs the Add.
"""


def _eligible_conv(graph, tensor, add):
    conv = graph.producer(tensor)
    if (conv is None or conv.op != "Conv" or conv.attrs.get("activation") or conv.attrs.get("residual")
            or graph.single_consumer(tensor) is not add):
        return None
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
        if not candidates:
            continue
        conv, skip = max(candidates, key=lambda cs: cs[0].meta["index"])
        conv.inputs = (conv.inputs + [""] * 3)[:3] + [skip]
        conv.attrs["residual"] = True
        for key in ("activation", "activation_params"):
            if key in add.attrs:
                conv.attrs[key] = add.attrs[key]
        conv.outputs = [add.outputs[0]]
        conv.fused = conv.fused + add.fused
        graph.remove_layer(add.name)
        graph.touch()
        fused.append(add.name)
    return fused
