"""Conv and ConvTranspose against ONNX Runtime: groups (depthwise too), dilation, every pad form,
1-D and 2-D, bias or not, and the fused forms (BatchNorm folded, activation, residual add)."""
import numpy as np
from hypothesis import assume, given, strategies as st
from onnx import helper

from _onnx_case import cases, model, randn, run_case, same_pads

PAD_FORMS = ("explicit", "none", "SAME_UPPER", "SAME_LOWER", "VALID")


@st.composite
def conv_params(draw, transpose=False, nd=None):
    nd = nd or draw(st.sampled_from([1, 2]))
    depthwise = draw(st.booleans())
    if depthwise:
        group = draw(st.integers(1, 4))
        cin_g, m_g = 1, draw(st.integers(1, 2))
    else:
        group = draw(st.sampled_from([1, 1, 2, 3]))
        cin_g, m_g = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sizes = [draw(st.integers(1 if transpose else 3, 9)) for _ in range(nd)]
    kernel = [draw(st.integers(1, 4)) for _ in range(nd)]
    strides = [draw(st.integers(1, 3)) for _ in range(nd)]
    dilations = [draw(st.integers(1, 3)) for _ in range(nd)]
    return dict(nd=nd, group=group, cin_g=cin_g, m_g=m_g, sizes=sizes, kernel=kernel, strides=strides,
                dilations=dilations, batch=draw(st.integers(1, 2)), bias=draw(st.booleans()),
                pad_form=draw(st.sampled_from(PAD_FORMS)), kernel_attr=draw(st.booleans()),
                pads=[draw(st.integers(0, k)) for k in kernel * 2], seed=draw(st.integers(0, 2 ** 16)))


def _window_attrs(p):
    attrs = dict(strides=p["strides"], dilations=p["dilations"], group=p["group"])
    if p["kernel_attr"]:
        attrs["kernel_shape"] = p["kernel"]
    if p["pad_form"] == "explicit":
        attrs["pads"] = p["pads"]
    elif p["pad_form"] != "none":
        attrs["auto_pad"] = p["pad_form"]
    return attrs


@cases(60)
@given(conv_params())
def test_conv(p):
    rng = np.random.default_rng(p["seed"])
    c, m = p["cin_g"] * p["group"], p["m_g"] * p["group"]
    pads = p["pads"] if p["pad_form"] == "explicit" else [0] * 2 * p["nd"]
    if p["pad_form"] not in ("SAME_UPPER", "SAME_LOWER"):
        for i, (s, k, d) in enumerate(zip(p["sizes"], p["kernel"], p["dilations"])):
            assume(s + pads[i] + pads[i + p["nd"]] >= (k - 1) * d + 1)
    x = randn(rng, [p["batch"], c, *p["sizes"]])
    inits = {"w": randn(rng, [m, p["cin_g"], *p["kernel"]])}
    if p["bias"]:
        inits["b"] = randn(rng, [m])
    inputs = ["x", "w"] + (["b"] if p["bias"] else [])
    attrs = _window_attrs(p)
    conv = model(helper.make_node("Conv", inputs, ["y"], **attrs), {"x": x}, ["y"], inits, opset=11)
    ort_m = None
    if attrs.get("auto_pad", "").startswith("SAME") and max(p["dilations"]) > 1:
        # ORT refuses SAME padding with dilation; it gets the pads the spec prescribes instead.
        ort_attrs = {k: v for k, v in attrs.items() if k != "auto_pad"}
        ort_attrs["pads"] = same_pads(p["sizes"], p["kernel"], p["strides"], p["dilations"], attrs["auto_pad"])
        ort_m = model(helper.make_node("Conv", inputs, ["y"], **ort_attrs), {"x": x}, ["y"], inits, opset=11)
    run_case(conv, {"x": x}, expect="Conv", ort_model=ort_m)


@st.composite
def conv_transpose_params(draw):
    p = draw(conv_params(transpose=True))
    p["strides"] = [draw(st.integers(1, 3)) for _ in range(p["nd"])]
    # output_padding must be smaller than the stride or the dilation (ORT checks the stride).
    p["output_padding"] = [draw(st.integers(0, s - 1)) for s in p["strides"]] if draw(st.booleans()) else None
    p["output_shape"] = draw(st.booleans())
    # output_shape up to stride - 1 - output_padding past the full size (zeros + bias at the end;
    # ORT refuses more, as then a Conv of the output would not give back the input size).
    op = p["output_padding"] or [0] * p["nd"]
    p["shrink"] = [draw(st.integers(-(s - 1 - o), (k - 1) * d))
                   for k, d, s, o in zip(p["kernel"], p["dilations"], p["strides"], op)]
    return p


@cases(60)
@given(conv_transpose_params())
def test_conv_transpose(p):
    rng = np.random.default_rng(p["seed"])
    n = p["nd"]
    c, m = p["cin_g"] * p["group"], p["m_g"] * p["group"]
    x = randn(rng, [p["batch"], c, *p["sizes"]])
    inits = {"w": randn(rng, [c, p["m_g"], *p["kernel"]])}
    if p["bias"]:
        inits["b"] = randn(rng, [m])
    attrs = _window_attrs(p)
    if p["output_padding"] is not None:
        attrs["output_padding"] = p["output_padding"]
    op = p["output_padding"] or [0] * n
    full = [s * (i - 1) + op_ + (k - 1) * d + 1
            for i, s, k, d, op_ in zip(p["sizes"], p["strides"], p["kernel"], p["dilations"], op)]
    if p["output_shape"]:
        # output_shape overrides explicit pads: the total padding is derived from it.
        attrs.pop("pads", None)
        attrs["output_shape"] = [f - sh for f, sh in zip(full, p["shrink"])]
        assume(all(o > 0 for o in attrs["output_shape"]))
    elif p["pad_form"] == "explicit":
        assume(all(f - p["pads"][i] - p["pads"][i + n] > 0 for i, f in enumerate(full)))
    node = helper.make_node("ConvTranspose", ["x", "w"] + (["b"] if p["bias"] else []), ["y"], **attrs)
    run_case(model(node, {"x": x}, ["y"], inits, opset=11), {"x": x}, expect="ConvTranspose")


ACTS = [("Relu", {}), ("LeakyRelu", {"alpha": 0.17}), ("Sigmoid", {}), ("Tanh", {}), ("HardSigmoid", {"alpha": 0.3}),
        ("HardSwish", {}), ("Clip", "minmax"), ("PRelu", "slope"), (None, {})]


def _act_node(act, attrs, src, dst, c, rng, inits):
    if attrs == "minmax":
        inits["lo"], inits["hi"] = np.array(-0.5, np.float32), np.array(0.75, np.float32)
        return helper.make_node("Clip", [src, "lo", "hi"], [dst])
    if attrs == "slope":
        inits["slope"] = randn(rng, [c, 1, 1])
        return helper.make_node("PRelu", [src, "slope"], [dst])
    return helper.make_node(act, [src], [dst], **attrs)


@cases(30)
@given(conv_params(nd=2), st.sampled_from(ACTS), st.sampled_from(["Conv", "ConvTranspose"]), st.booleans())
def test_conv_bn_activation_fused(p, act, op, with_bn):
    """Conv/ConvTranspose -> BatchNormalization -> activation: folding and epilogue fusion agree."""
    rng = np.random.default_rng(p["seed"])
    g = p["group"]
    c, m = p["cin_g"] * g, p["m_g"] * g
    x = randn(rng, [p["batch"], c, *p["sizes"]])
    w_shape = [m, p["cin_g"], *p["kernel"]] if op == "Conv" else [c, p["m_g"], *p["kernel"]]
    inits = {"w": randn(rng, w_shape)}
    if p["bias"]:
        inits["b"] = randn(rng, [m])
    attrs = dict(strides=p["strides"], dilations=p["dilations"], group=g, pads=[k // 2 for k in p["kernel"] * 2])
    if op == "Conv":
        for s, k, d in zip(p["sizes"], p["kernel"], p["dilations"]):
            assume(s + 2 * (k // 2) >= (k - 1) * d + 1)
    nodes = [helper.make_node(op, ["x", "w"] + (["b"] if p["bias"] else []), ["t"], name="conv", **attrs)]
    if with_bn:
        inits.update(scale=randn(rng, [m]), bias=randn(rng, [m]), mean=randn(rng, [m]),
                     var=rng.uniform(0.2, 2.0, m).astype(np.float32))
        nodes.append(helper.make_node("BatchNormalization", ["t", "scale", "bias", "mean", "var"], ["u"], epsilon=1e-3))
    else:
        nodes.append(helper.make_node("Identity", ["t"], ["u"]))
    name, attrs = act
    nodes.append(_act_node(name, attrs, "u", "y", m, rng, inits) if name else helper.make_node("Identity", ["u"], ["y"]))

    def fused(graph):
        assert [l.op for l in graph] == [op], graph.op_counts()
        assert graph.layer("conv").attrs.get("activation") == name

    run_case(model(nodes, {"x": x}, ["y"], inits, opset=14), {"x": x}, expect=op, check_fused=fused)


@cases(25)
@given(st.integers(1, 2), st.integers(1, 6), st.integers(3, 9), st.integers(3, 9), st.sampled_from(ACTS),
       st.booleans(), st.integers(0, 2 ** 16))
def test_conv_residual_add(batch, c, h, w, act, skip_first, seed):
    """Conv(x) + x [-> activation] becomes one Conv with a residual input; both operand orders."""
    rng = np.random.default_rng(seed)
    x = randn(rng, [batch, c, h, w])
    inits = {"w": randn(rng, [c, c, 3, 3]), "b": randn(rng, [c])}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Add", ["x", "t"] if skip_first else ["t", "x"], ["s"], name="add")]
    name, attrs = act
    nodes.append(_act_node(name, attrs, "s", "y", c, rng, inits) if name else helper.make_node("Identity", ["s"], ["y"]))

    def fused(graph):
        assert [l.op for l in graph] == ["Conv"], graph.op_counts()
        conv = graph.layer("conv")
        assert conv.attrs.get("residual") and conv.attrs.get("activation") == name

    run_case(model(nodes, {"x": x}, ["y"], inits, opset=14), {"x": x}, expect=("Conv", "Add"), check_fused=fused)
