"""Concat of all of a Split's outputs, in order, along the Split's axis: read the Split's input.

CSP blocks (YOLOv5 to v8, PP-PicoDet, RT-DETR's encoders) split a tensor in two, work on one
half and concatenate both halves with what was computed: ``Concat(Split(t)[0], Split(t)[1], m)``
is ``Concat(t, m)``.  Read that way, ``t`` can be written straight into the Concat's buffer
(:mod:`workbench.runtime.slices`) and the Split outputs that only the Concat read are dead.
"""


def _axis(layer, rank):
    return layer.attrs.get("axis", 0) % rank


def rejoin_splits(graph):
    rewritten = []
    for concat in list(graph):
        if concat.op != "Concat" or not concat.inputs:
            continue
        rank = len(concat.out_specs[0].shape)
        inputs, i, changed = list(concat.inputs), 0, False
        while i < len(inputs):
            split = graph.producer(inputs[i]) if inputs[i] else None
            n = len(split.outputs) if split is not None and split.op == "Split" else 0
            if (n and split.inputs[0] not in graph.constants and all(split.outputs)
                    and inputs[i:i + n] == list(split.outputs) and _axis(split, rank) == _axis(concat, rank)
                    and len(graph.spec(split.inputs[0]).shape) == rank):
                inputs[i:i + n] = [split.inputs[0]]
                changed = True
            i += 1
        if changed:
            concat.inputs = inputs
            old = concat.attrs.get("fusion")
            concat.attrs["fusion"] = f"{old}+rejoined_split" if old else "rejoined_split"
            graph.touch()
            rewritten.append(concat.name)
    return rewritten
