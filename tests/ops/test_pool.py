"""MaxPool, AveragePool (pads, auto_pad, strides, dilations, ceil_mode, count_include_pad) and the
global pools against ONNX Runtime, 1-D to 3-D."""
import numpy as np
from hypothesis import assume, given, strategies as st
from onnx import helper

from _onnx_case import cases, model, randn, run_case, same_pads

PAD_FORMS = ("explicit", "none", "SAME_UPPER", "SAME_LOWER", "VALID")


@st.composite
def pool_params(draw, dilations):
    nd = draw(st.sampled_from([1, 2, 2, 3]))
    kernel = [draw(st.integers(1, 4 if nd < 3 else 3)) for _ in range(nd)]
    return dict(
        nd=nd, kernel=kernel,
        shape=[draw(st.integers(1, 2)), draw(st.integers(1, 3))] + [draw(st.integers(1, 10 if nd < 3 else 6))
                                                                     for _ in range(nd)],
        strides=[draw(st.integers(1, 3)) for _ in range(nd)],
        dilations=[draw(st.integers(1, 3)) for _ in range(nd)] if dilations and draw(st.booleans()) else None,
        # ORT (and the spec's shape inference) want each pad smaller than the kernel.
        pads=[draw(st.integers(0, k - 1)) for k in kernel * 2],
        pad_form=draw(st.sampled_from(PAD_FORMS)), ceil_mode=draw(st.integers(0, 1)),
        count_include_pad=draw(st.integers(0, 1)), seed=draw(st.integers(0, 2 ** 16)))


def _pool_case(op, p, opset):
    rng = np.random.default_rng(p["seed"])
    x = randn(rng, p["shape"])
    attrs = dict(kernel_shape=p["kernel"], strides=p["strides"])
    if p["ceil_mode"]:
        attrs["ceil_mode"] = 1
    if p["dilations"] is not None:
        attrs["dilations"] = p["dilations"]
    if op == "AveragePool":
        attrs["count_include_pad"] = p["count_include_pad"]
    if p["pad_form"] == "explicit":
        attrs["pads"] = p["pads"]
    elif p["pad_form"] != "none":
        attrs["auto_pad"] = p["pad_form"]
    d = p["dilations"] or [1] * p["nd"]
    pads = attrs.get("pads", [0] * 2 * p["nd"])
    if p["pad_form"] not in ("SAME_UPPER", "SAME_LOWER"):
        for i, (size, k, dd) in enumerate(zip(p["shape"][2:], p["kernel"], d)):
            assume(size + pads[i] + pads[i + p["nd"]] >= (k - 1) * dd + 1)
    m = model(helper.make_node(op, ["x"], ["y"], **attrs), {"x": x}, ["y"], opset=opset)
    ort_m = None
    if attrs.get("auto_pad", "").startswith("SAME") and (max(d) > 1 or any(k < s for k, s in zip(p["kernel"], p["strides"]))):
        # ORT's SAME pooling ignores dilation, and fails where its padding comes out negative
        # (kernel < stride): ORT gets the pads the spec prescribes instead.
        ort_attrs = {k: v for k, v in attrs.items() if k != "auto_pad"}
        ort_attrs["pads"] = same_pads(p["shape"][2:], p["kernel"], p["strides"], d, attrs["auto_pad"])
        ort_m = model(helper.make_node(op, ["x"], ["y"], **ort_attrs), {"x": x}, ["y"], opset=opset)
    run_case(m, {"x": x}, expect=op, ort_model=ort_m)


@cases(60)
@given(pool_params(dilations=True), st.sampled_from([12, 18]))
def test_max_pool(p, opset):
    _pool_case("MaxPool", p, opset)


@cases(60)
@given(pool_params(dilations=False), st.sampled_from([11, 18]))
def test_average_pool(p, opset):
    _pool_case("AveragePool", p, opset)


@cases(20)
@given(pool_params(dilations=True))
def test_average_pool_dilations(p):
    """AveragePool took dilations in opset 19."""
    assume(p["dilations"] is not None)
    _pool_case("AveragePool", p, 19)


@cases(25)
@given(st.sampled_from(["GlobalAveragePool", "GlobalMaxPool"]),
       st.lists(st.integers(1, 7), min_size=3, max_size=5), st.integers(0, 2 ** 16))
def test_global_pool(op, shape, seed):
    x = randn(np.random.default_rng(seed), shape)
    run_case(model(helper.make_node(op, ["x"], ["y"]), {"x": x}, ["y"], opset=13), {"x": x}, expect=op)
