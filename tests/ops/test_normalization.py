"""BatchNormalization (standalone: a ChannelAffine after fusion), InstanceNormalization and
LayerNormalization against ONNX Runtime."""
import numpy as np
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper

from _onnx_case import cases, model, randn, run_case


@cases(40)
@given(hnp.array_shapes(min_dims=2, max_dims=5, max_side=6), st.sampled_from([None, 1e-5, 1e-3, 0.1]),
       st.sampled_from([7, 9, 14, 15]), st.sampled_from(["input", "Relu", "Neg"]), st.integers(0, 2 ** 16))
def test_batch_normalization(shape, epsilon, opset, source, seed):
    """A BN with no foldable producer (graph input, Relu, ...) becomes a per-channel affine layer."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = randn(rng, shape)
    inits = {"scale": randn(rng, [c]), "bias": randn(rng, [c]), "mean": randn(rng, [c]),
             "var": rng.uniform(0.05, 3, c).astype(np.float32)}
    attrs = {} if epsilon is None else {"epsilon": epsilon}
    src = "x" if source == "input" else "t"
    nodes = [] if source == "input" else [helper.make_node(source, ["x"], ["t"])]
    nodes.append(helper.make_node("BatchNormalization", [src, "scale", "bias", "mean", "var"], ["y"], **attrs))

    def fused(graph):
        assert "BatchNormalization" not in graph.op_counts(), graph.op_counts()

    run_case(model(nodes, {"x": x}, ["y"], inits, opset=opset), {"x": x}, expect="BatchNormalization",
             check_fused=fused)


@cases(30)
@given(hnp.array_shapes(min_dims=3, max_dims=5, max_side=6), st.sampled_from([None, 1e-3]), st.integers(0, 2 ** 16))
def test_instance_normalization(shape, epsilon, seed):
    # With one value per instance the exact result is the bias; ORT's E[x^2] - E[x]^2 variance
    # leaves rounding noise there that 1/sqrt(epsilon) blows up past any tolerance.
    assume(np.prod(shape[2:]) >= 2)
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = randn(rng, shape) * np.float32(3) + np.float32(1)
    inits = {"scale": randn(rng, [c]), "bias": randn(rng, [c])}
    attrs = {} if epsilon is None else {"epsilon": epsilon}
    node = helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"], **attrs)
    run_case(model(node, {"x": x}, ["y"], inits, opset=6), {"x": x}, expect="InstanceNormalization")


@cases(40)
@given(hnp.array_shapes(min_dims=1, max_dims=4, max_side=6), st.booleans(), st.sampled_from([None, 1e-3]),
       st.booleans(), st.data())
def test_layer_normalization(shape, with_bias, epsilon, scale_is_input, data):
    rank = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1)))
    tail = shape[(axis if axis is not None else -1) % rank:]
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x = randn(rng, shape) * np.float32(2) + np.float32(0.5)
    inits, feeds = {}, {"x": x}
    (feeds if scale_is_input else inits)["scale"] = randn(rng, tail)
    if with_bias:
        inits["bias"] = randn(rng, tail)
    attrs = {k: v for k, v in (("axis", axis), ("epsilon", epsilon)) if v is not None}
    node = helper.make_node("LayerNormalization", ["x", "scale"] + (["bias"] if with_bias else []), ["y"], **attrs)
    run_case(model(node, feeds, ["y"], inits, opset=17), feeds, expect="LayerNormalization")
