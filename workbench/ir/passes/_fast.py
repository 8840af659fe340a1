"""Whether a fused layer still has a routine other than the reference: the passes that give a
Conv an epilogue only some kernels apply (a post-activation affine, a residual after the
activation) make the move only where one of them takes the result, so a CPU without those
kernels keeps the layers as they were."""

REFERENCE = "cpu:float32:nchw/reference"


def runs_fast(graph, layer):
    """Whether a routine other than the reference applies to ``layer`` as it now stands."""
    from ... import routines
    specs = graph.input_specs(layer)
    return any(d != REFERENCE and r.applies(layer, specs) for d, r in routines.routines_for(layer.op).items())
