"""Resize (opsets 10, 11, 13, 18, 19) and Upsample (7, 9) against ONNX Runtime: nearest with every
nearest_mode, linear, every coordinate_transformation_mode, scales and sizes, up and down,
non-integer scales."""
import numpy as np
from hypothesis import assume, given, strategies as st
from onnx import helper

from _onnx_case import cases, model, randn, run_case

NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
COORD = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"]
SCALES = st.sampled_from([0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 1.7, 2.0, 2.5, 3.0])


@st.composite
def resize_case(draw):
    opset = draw(st.sampled_from([11, 13, 18, 19]))
    mode = draw(st.sampled_from(["nearest", "linear"]))
    rank = 4 if mode == "linear" else draw(st.sampled_from([3, 4, 4, 5]))
    shape = [draw(st.integers(1, 2)), draw(st.integers(1, 3))] + [draw(st.integers(1, 7)) for _ in range(rank - 2)]
    coord = draw(st.sampled_from(COORD + (["half_pixel_symmetric"] if opset >= 19 else [])))
    return dict(opset=opset, mode=mode, shape=shape, coord=coord, nearest=draw(st.sampled_from([None] + NEAREST)),
                by_sizes=draw(st.booleans()), scales=[draw(SCALES) for _ in range(rank - 2)],
                sizes=[draw(st.integers(1, 12)) for _ in range(rank - 2)], seed=draw(st.integers(0, 2 ** 16)))


@cases(150)
@given(resize_case())
def test_resize(p):
    x = randn(np.random.default_rng(p["seed"]), p["shape"])
    attrs = {"mode": p["mode"], "coordinate_transformation_mode": p["coord"]}
    if p["nearest"] is not None and p["mode"] == "nearest":
        attrs["nearest_mode"] = p["nearest"]
    inits = {"roi": np.zeros(0, np.float32)}
    if p["by_sizes"]:
        inits["sizes"] = np.array(p["shape"][:2] + p["sizes"], np.int64)
        if p["opset"] >= 13:
            inputs = ["x", "", "", "sizes"]
        else:
            inits["scales"] = np.zeros(0, np.float32)
            inputs = ["x", "roi", "scales", "sizes"]
    else:
        assume(all(int(d * s) > 0 for d, s in zip(p["shape"][2:], p["scales"])))
        inits["scales"] = np.array([1, 1] + p["scales"], np.float32)
        inputs = ["x", "", "scales"] if p["opset"] >= 13 else ["x", "roi", "scales"]
    inits = {k: v for k, v in inits.items() if k in inputs}
    m = model(helper.make_node("Resize", inputs, ["y"], **attrs), {"x": x}, ["y"], inits, opset=p["opset"])
    run_case(m, {"x": x}, expect="Resize")



@cases(30)
@given(st.sampled_from(["nearest", "linear"]), st.lists(st.integers(1, 6), min_size=2, max_size=2),
       st.lists(SCALES, min_size=2, max_size=2), st.booleans(), st.integers(0, 2 ** 16))
def test_resize_axes(mode, hw, scales, by_sizes, seed):
    """Opset 18's axes attribute: scales/sizes for the listed axes only."""
    x = randn(np.random.default_rng(seed), [1, 2] + hw)
    attrs = {"mode": mode, "axes": [2, -1]}
    if by_sizes:
        inits, inputs = {"sizes": np.array([hw[0] + 2, max(1, hw[1] - 1)], np.int64)}, ["x", "", "", "sizes"]
    else:
        assume(all(int(d * s) > 0 for d, s in zip(hw, scales)))
        inits, inputs = {"scales": np.array(scales, np.float32)}, ["x", "", "scales"]
    m = model(helper.make_node("Resize", inputs, ["y"], **attrs), {"x": x}, ["y"], inits, opset=18)
    run_case(m, {"x": x}, expect="Resize")


@cases(30)
@given(st.sampled_from(["nearest", "linear"]), st.lists(st.integers(1, 6), min_size=2, max_size=2),
       st.lists(SCALES, min_size=2, max_size=2), st.integers(0, 2 ** 16))
def test_resize_opset10(mode, hw, scales, seed):
    """Resize-10: only X and scales (asymmetric coordinates, nearest rounds down)."""
    assume(all(int(d * s) > 0 for d, s in zip(hw, scales)))
    x = randn(np.random.default_rng(seed), [1, 3] + hw)
    inits = {"scales": np.array([1, 1] + scales, np.float32)}
    m = model(helper.make_node("Resize", ["x", "scales"], ["y"], mode=mode), {"x": x}, ["y"], inits, opset=10)
    run_case(m, {"x": x}, expect="Resize")


@cases(30)
@given(st.sampled_from([7, 9]), st.sampled_from(["nearest", "linear"]),
       st.lists(st.integers(1, 6), min_size=2, max_size=2), st.lists(SCALES.filter(lambda s: s >= 1), min_size=2, max_size=2),
       st.integers(0, 2 ** 16))
def test_upsample(opset, mode, hw, scales, seed):
    """Upsample (scales >= 1): scales as an attribute (opset 7) or an input (opset 9)."""
    x = randn(np.random.default_rng(seed), [2, 3] + hw)
    full = [1.0, 1.0] + scales
    if opset == 7:
        node, inits = helper.make_node("Upsample", ["x"], ["y"], mode=mode, scales=full), {}
    else:
        node, inits = helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode), {"s": np.array(full, np.float32)}
    run_case(model(node, {"x": x}, ["y"], inits, opset=opset), {"x": x}, expect="Upsample")
