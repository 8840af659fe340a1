"""Remove layers whose outputs nobody reads (and that are not graph outputs)."""


def remove_dead_layers(graph):
    removed = []
    for layer in reversed(list(graph)):
        if any(o and (o in graph.outputs or graph.consumers(o)) for o in layer.outputs):
            continue
        graph.remove_layer(layer.name)
        removed.append(layer.name)
    if removed:
        graph.touch()
    return removed
