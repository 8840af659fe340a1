"""Check one routine against the NumPy reference inside a compiled model."""
from contextlib import contextmanager

import numpy as np

import workbench
from workbench import routines
from workbench.runtime.compiled import CompiledModel
from workbench.tuning.ranges import calibrate
from workbench.tuning.precision import tolerance

REFERENCE = "cpu:float32:nchw/reference"


@contextmanager
def parallel_even_when_small(*names):
    """Kernels run small inputs on one thread; inside this, every built ISA variant of the kernel
    modules ``names`` takes the tests' small cases through its parallel paths too."""
    from workbench.runtime import cpu
    modules = [m for name in names for m in dict.fromkeys(cpu.kernel_module(name, isa) for isa in (None, "avx2", "avx512"))
               if m is not None]
    old = [m.set_grain(1) for m in modules]
    try:
        yield
    finally:
        for m, grain in zip(modules, old):
            m.set_grain(grain)


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
    if used and any(routines.get(graph.layer(n).op, descriptor).quantized for n in used) and not len(graph.quant):
        # qint8: calibrated on the inputs it runs (and a few more), so that nothing saturates
        calibrate(graph, [feeds] + [workbench.random_inputs(graph, seed=seed + 1 + i) for i in range(3)])
    ours = CompiledModel(graph, assignment, num_threads=num_threads).run(feeds)
    ref = workbench.ReferenceExecutor(graph).run(feeds)
    return ours, ref, used


def compiled_in(graph, layout, num_threads=2):
    """``graph`` compiled with, on every layer, the first routine in ``layout`` that applies."""
    assignment = {}
    for layer in graph:
        table = routines.routines_for(layer.op)
        fits = [d for d, r in table.items() if f":{layout}/" in d and r.applies(layer, graph.input_specs(layer))]
        assignment[layer.name] = fits[0]
    return CompiledModel(graph, assignment, num_threads=num_threads)


def assert_routine_matches(graph, descriptor, rtol=1e-4, expect_layers=None, **kwargs):
    """Assert ``descriptor`` ran (on ``expect_layers`` if given, else on at least one layer) and
    every output matches the reference within ``rtol`` of the output's largest magnitude (for a
    bfloat16 routine, within the tolerance its rounding allows at least,
    :func:`workbench.tuning.precision.tolerance` of the layers it ran)."""
    ours, ref, used = run_with_routine(graph, descriptor, **kwargs)
    if ":bfloat16:" in descriptor:
        rtol = max(rtol, tolerance(len(used) * routines.error_weight(descriptor)))
    if expect_layers is not None:
        assert sorted(used) == sorted(expect_layers), (descriptor, used)
    else:
        assert used, f"{descriptor} applied to no layer"
    for name, r in ref.items():
        scale = max(float(np.abs(r).max()), 1e-6)
        err = float(np.abs(ours[name].astype(np.float64) - r).max()) / scale
        assert err <= rtol, (descriptor, name, err)
    return used


#: Non-default attributes for the activations the conv tests fuse (defaults would hide mistakes).
ACTIVATION_ATTRS = {"LeakyRelu": dict(alpha=0.15), "HardSigmoid": dict(alpha=0.3, beta=0.4)}


def conv_graph(x_shape, w, bias=None, attrs=None, activation=None, residual=False, act_attrs=None, slope=None):
    """A one-Conv graph (layer ``conv``), optionally followed by ``Add(skip)`` and an activation,
    imported with fusion (so the routines see the fused epilogue).  ``attrs`` override the Conv
    defaults (stride 1, no pads, dilation 1, group 1, kernel from ``w``; residual only in 2-D)."""
    from onnx import helper
    from onnx_helpers import make_model
    from workbench.ir.ops.conv import conv_out_size
    m = w.shape[0]
    n = w.ndim - 2
    a = dict(kernel_shape=list(w.shape[2:]), strides=[1] * n, pads=[0] * 2 * n, dilations=[1] * n, group=1)
    a.update(attrs or {})
    inits = [("w", w)] + ([("b", bias)] if bias is not None else [])
    nodes = [helper.make_node("Conv", ["x", "w"] + (["b"] if bias is not None else []), ["y0"], name="conv", **a)]
    inputs, last = [("x", list(x_shape))], "y0"
    if residual:
        out = [x_shape[0], m] + [conv_out_size(x_shape[2 + i], a["kernel_shape"][i], a["strides"][i],
                                               a["dilations"][i], a["pads"][i], a["pads"][i + 2]) for i in range(2)]
        inputs.append(("skip", out))
        nodes.append(helper.make_node("Add", [last, "skip"], ["y1"], name="add"))
        last = "y1"
    if activation is not None:
        act_inputs = [last]
        if activation == "PRelu":
            inits.append(("slope", slope if slope is not None else
                          np.linspace(-0.5, 0.7, m, dtype=np.float32).reshape(m, 1, 1)))
            act_inputs.append("slope")
        elif activation == "Clip":
            inits += [("lo", np.float32(-0.4)), ("hi", np.float32(0.9))]
            act_inputs += ["lo", "hi"]
        params = act_attrs if act_attrs is not None else ACTIVATION_ATTRS.get(activation, {})
        nodes.append(helper.make_node(activation, act_inputs, ["y"], name="act", **params))
        last = "y"
    model = make_model(nodes, inputs, [(last, None)], initializers=inits)
    return workbench.load(model.SerializeToString())


def conv_transpose_graph(x_shape, w, bias=None, act=None, **attrs):
    """A one-ConvTranspose graph (``x`` -> ``y``), optionally followed by an activation (PRelu:
    a per-channel slope), imported with fusion: one layer."""
    from onnx import helper
    from onnx_helpers import make_model
    inits, names = [("W", w)], ["x", "W"]
    if bias is not None:
        inits.append(("B", bias))
        names.append("B")
    nodes = [helper.make_node("ConvTranspose", names, ["t" if act else "y"], **attrs)]
    if act == "PRelu":
        nodes.append(helper.make_node("PRelu", ["t", "s"], ["y"]))
        inits.append(("s", np.linspace(0.1, 0.5, w.shape[1] * attrs.get("group", 1), dtype=np.float32)
                      .reshape(-1, 1, 1)))
    elif act:
        nodes.append(helper.make_node(act, ["t"], ["y"]))
    g = workbench.load(make_model(nodes, [("x", list(x_shape))], [("y", None)], initializers=inits).SerializeToString())
    assert [layer.op for layer in g] == ["ConvTranspose"]
    return g


def bkey(tensor, layout, dtype="float32"):
    """A compiled model's buffer key: the tensor and the format it is held in."""
    from workbench.ir.formats import Format
    return (tensor, Format(dtype, layout))
