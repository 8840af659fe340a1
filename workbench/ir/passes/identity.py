"""Remove Identity and (inference-mode) Dropout layers, keeping graph output names."""


def remove_identities(graph):
    removed = []
    for layer in list(graph):
        if layer.op not in ("Identity", "Dropout") or not layer.activation_inputs:
            continue
        if any(o and (o in graph.outputs or graph.consumers(o)) for o in layer.outputs[1:]):
            continue  # a Dropout mask that is actually read
        src, dst = layer.inputs[0], layer.outputs[0]
        producer = graph.producer(src)
        if dst in graph.outputs:
            # The graph output keeps its name: the producer writes it directly.
            if producer is None or src in graph.outputs:
                continue
            graph.remove_layer(layer.name)
            producer.outputs = [dst if o == src else o for o in producer.outputs]
            graph.rename_tensor(src, dst)
        else:
            graph.remove_layer(layer.name)
            graph.rename_tensor(dst, src)
        graph.touch()
        removed.append(layer.name)
    return removed
