"""Check one routine against the NumPy reference inside a compiled model."""
import numpy as np

import workbench
from workbench import routines
from workbench.compiled import CompiledModel

REFERENCE = "cpu:float32:nchw/reference"


def run_with_routine(graph, descriptor, layers=None, num_threads=2, seed=0, feeds=None):
    """Run ``graph`` with ``descriptor`` on ``layers`` (default: every layer it applies to) and
    the reference elsewhere; returns (our outputs, reference outputs, the layers it ran on)."""
    assignment, used = {}, []
    for layer in graph:
        specs = graph.input_specs(layer)
        table = routines.routines_for(layer.op)
        wanted = (layers is None or layer.name in layers) and descriptor in table and table[descriptor].applies(layer, specs)
        assignment[layer.name] = descriptor if wanted else REFERENCE
        if wanted:
            used.append(layer.name)
    feeds = feeds or workbench.random_inputs(graph, seed=seed)
    ours = CompiledModel(graph, assignment, num_threads=num_threads).run(feeds)
    ref = workbench.ReferenceExecutor(graph).run(feeds)
    return ours, ref, used


def assert_routine_matches(graph, descriptor, rtol=1e-4, expect_layers=None, **kwargs):
    """Assert ``descriptor`` ran (on ``expect_layers`` if given, else on at least one layer) and
    every output matches the reference within ``rtol`` of the output's largest magnitude."""
    ours, ref, used = run_with_routine(graph, descriptor, **kwargs)
    if expect_layers is not None:
        assert sorted(used) == sorted(expect_layers), (descriptor, used)
    else:
        assert used, f"{descriptor} applied to no layer"
    for name, r in ref.items():
        scale = max(float(np.abs(r).max()), 1e-6)
        err = float(np.abs(ours[name].astype(np.float64) - r).max()) / scale
        assert err <= rtol, (descriptor, name, err)
    return used
