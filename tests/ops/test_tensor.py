"""Data-movement ops against ONNX Runtime: Concat, Split, Slice, Flatten, Reshape, Transpose,
Squeeze, Unsqueeze, Pad, Gather, Expand, Tile, DepthToSpace, SpaceToDepth (attribute and input
forms across opsets)."""
import numpy as np
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper

from _onnx_case import cases, model, randn, run_case

INT64_MAX, INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6)
SEEDS = st.integers(0, 2 ** 16)


def _x(seed, shape, dtype="float32"):
    rng = np.random.default_rng(seed)
    return randn(rng, shape).astype(dtype) if dtype.startswith("float") else rng.integers(-50, 50, shape).astype(dtype)


@cases(40)
@given(SHAPES, st.integers(1, 4), st.data())
def test_concat(shape, n, data):
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1))
    rng = np.random.default_rng(data.draw(SEEDS))
    arrays, inits = {}, {}
    for i in range(n):
        s = list(shape)
        s[axis] = data.draw(st.integers(1, 4))
        (inits if i > 0 and data.draw(st.booleans()) else arrays)[f"x{i}"] = randn(rng, s)
    node = helper.make_node("Concat", [f"x{i}" for i in range(n)], ["y"], axis=axis)
    run_case(model(node, arrays, ["y"], inits, opset=13), arrays, expect="Concat")


@cases(60)
@given(SHAPES, st.sampled_from([2, 11, 13, 18]), st.data())
def test_split(shape, opset, data):
    """Split sizes as an attribute (before 13), an input (13+), equal parts, or num_outputs (18+)."""
    rank = len(shape)
    axis = data.draw(st.integers(-rank, rank - 1))
    dim = shape[axis]
    x = _x(data.draw(SEEDS), shape)
    attrs, inits, inputs = {"axis": axis}, {}, ["x"]
    # From opset 18 equal parts need num_outputs (ORT refuses a Split with neither).
    form = data.draw(st.sampled_from(["sizes"] + (["num_outputs"] if opset >= 18 else ["equal"])))
    if form == "sizes":
        cuts = sorted(data.draw(st.lists(st.integers(0, dim), max_size=3)))
        sizes = np.diff([0, *cuts, dim]).tolist()
        n = len(sizes)
        if opset >= 13:
            inits["split"] = np.array(sizes, np.int64)
            inputs.append("split")
        else:
            attrs["split"] = sizes
    elif form == "equal":
        n = data.draw(st.sampled_from([d for d in range(1, dim + 1) if dim % d == 0]))
    else:  # the last chunk may be smaller: ceil(dim / n) each
        n = data.draw(st.integers(1, dim))
        chunk = -(-dim // n)
        assume(chunk * (n - 1) < dim)
        attrs["num_outputs"] = n
    outputs = [f"y{i}" for i in range(n)]
    m = model(helper.make_node("Split", inputs, outputs, **attrs), {"x": x}, outputs, inits, opset=opset)
    run_case(m, {"x": x}, expect="Split")


BOUNDS = st.one_of(st.integers(-8, 8), st.sampled_from([INT64_MAX, INT64_MIN, -INT64_MAX]))


@cases(80)
@given(SHAPES, st.sampled_from([1, 10, 13]), st.data())
def test_slice(shape, opset, data):
    """Negative and out-of-range starts/ends (INT64_MAX/MIN too), negative steps, an axes subset."""
    rank = len(shape)
    axes = data.draw(st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True))
    axes = [a - rank if data.draw(st.booleans()) else a for a in axes]
    starts = [data.draw(BOUNDS) for _ in axes]
    ends = [data.draw(BOUNDS) for _ in axes]
    steps = [data.draw(st.sampled_from([1, 1, 2, 3, -1, -2])) for _ in axes] if opset >= 10 else None
    give_axes = data.draw(st.booleans()) or axes != list(range(len(axes)))
    x = _x(data.draw(SEEDS), shape, data.draw(st.sampled_from(["float32", "int64"])))
    inits, attrs = {}, {}
    if opset < 10:
        attrs = {"starts": starts, "ends": ends}
        if give_axes:
            attrs["axes"] = axes
        inputs = ["x"]
    else:
        inits = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
        inputs = ["x", "starts", "ends"]
        give_steps = data.draw(st.booleans()) or any(s != 1 for s in steps)
        if give_axes or give_steps:
            inits["axes"] = np.array(axes, np.int64)
            inputs.append("axes")
        if give_steps:
            inits["steps"] = np.array(steps, np.int64)
            inputs.append("steps")
    m = model(helper.make_node("Slice", inputs, ["y"], **attrs), {"x": x}, ["y"], inits, opset=opset)
    run_case(m, {"x": x}, expect="Slice")


@cases(30)
@given(hnp.array_shapes(min_dims=0, max_dims=4, max_side=5), st.sampled_from([9, 13]), st.data())
def test_flatten(shape, opset, data):
    rank = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-rank if opset >= 11 else 0, rank)))
    x = _x(data.draw(SEEDS), shape)
    attrs = {} if axis is None else {"axis": axis}
    run_case(model(helper.make_node("Flatten", ["x"], ["y"], **attrs), {"x": x}, ["y"], opset=opset), {"x": x},
             expect="Flatten")


@cases(50)
@given(hnp.array_shapes(min_dims=1, max_dims=4, max_side=5), st.data())
def test_reshape(shape, data):
    """Targets with 0 (copy the input dim) and -1 (inferred) entries."""
    x = _x(data.draw(SEEDS), shape)
    size = x.size
    target = []
    rest = size
    for i in range(data.draw(st.integers(1, 4))):
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        d = data.draw(st.sampled_from(divisors))
        target.append(d)
        rest //= d
    target[-1] *= rest
    for i in range(len(target)):
        if i < len(shape) and target[i] == shape[i] and data.draw(st.booleans()):
            target[i] = 0
    if data.draw(st.booleans()):
        target[data.draw(st.integers(0, len(target) - 1))] = -1
        assume(target.count(-1) == 1)
    inits = {"shape": np.array(target, np.int64)}
    m = model(helper.make_node("Reshape", ["x", "shape"], ["y"]), {"x": x}, ["y"], inits, opset=14)
    run_case(m, {"x": x}, expect="Reshape")


@cases(30)
@given(hnp.array_shapes(min_dims=0, max_dims=5, max_side=4), st.data())
def test_transpose(shape, data):
    perm = data.draw(st.one_of(st.none(), st.permutations(range(len(shape)))))
    x = _x(data.draw(SEEDS), shape, data.draw(st.sampled_from(["float32", "int32"])))
    attrs = {} if not perm else {"perm": list(perm)}  # (an empty perm cannot be written)
    run_case(model(helper.make_node("Transpose", ["x"], ["y"], **attrs), {"x": x}, ["y"], opset=13), {"x": x},
             expect="Transpose")


@cases(40)
@given(hnp.array_shapes(min_dims=1, max_dims=5, min_side=1, max_side=3), st.sampled_from([11, 13]), st.data())
def test_squeeze(shape, opset, data):
    ones = [i for i, d in enumerate(shape) if d == 1]
    rank = len(shape)
    axes = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(ones), min_size=1, unique=True))) if ones else None
    if axes:
        axes = [a - rank if data.draw(st.booleans()) else a for a in axes]
    x = _x(data.draw(SEEDS), shape)
    inits, inputs, attrs = {}, ["x"], {}
    if axes is not None:
        if opset >= 13:
            inits["axes"] = np.array(axes, np.int64)
            inputs.append("axes")
        else:
            attrs["axes"] = axes
    m = model(helper.make_node("Squeeze", inputs, ["y"], **attrs), {"x": x}, ["y"], inits, opset=opset)
    run_case(m, {"x": x}, expect="Squeeze")


@cases(40)
@given(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), st.sampled_from([11, 13]), st.data())
def test_unsqueeze(shape, opset, data):
    out_rank = len(shape) + data.draw(st.integers(1, 3))
    axes = data.draw(st.lists(st.integers(0, out_rank - 1), min_size=out_rank - len(shape),
                              max_size=out_rank - len(shape), unique=True))
    axes = [a - out_rank if data.draw(st.booleans()) else a for a in axes]
    x = _x(data.draw(SEEDS), shape)
    inits, inputs, attrs = {}, ["x"], {}
    if opset >= 13:
        inits["axes"] = np.array(axes, np.int64)
        inputs.append("axes")
    else:
        attrs["axes"] = axes
    m = model(helper.make_node("Unsqueeze", inputs, ["y"], **attrs), {"x": x}, ["y"], inits, opset=opset)
    run_case(m, {"x": x}, expect="Unsqueeze")


@st.composite
def pad_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6))
    opset = draw(st.sampled_from([2, 11, 13, 18, 19]))
    mode = draw(st.sampled_from(["constant", "reflect", "edge"] + (["wrap"] if opset >= 19 else [])))
    rank = len(shape)
    axes = None
    if opset >= 18 and draw(st.booleans()):
        axes = draw(st.lists(st.integers(-rank, rank - 1), min_size=1, max_size=rank, unique_by=lambda a: a % rank))
    dims = [shape[a] for a in (axes if axes is not None else range(rank))]
    pads = []
    for side in range(2):
        for d in dims:
            hi = d - 1 if mode == "reflect" else (d if mode == "wrap" else 3)
            pads.append(draw(st.integers(-(d - 1) if mode == "constant" else 0, max(hi, 0))))
    value = draw(st.one_of(st.none(), st.floats(-3, 3, width=32))) if mode == "constant" else None
    return dict(shape=shape, opset=opset, mode=mode, axes=axes, pads=pads, value=value, seed=draw(SEEDS),
                dtype=draw(st.sampled_from(["float32", "int64"])))


@cases(80)
@given(pad_case())
def test_pad(p):
    """constant (with a value, negative pads crop), reflect, edge, wrap; pads as attribute or input, axes."""
    n = len(p["pads"]) // 2
    dims = [p["shape"][a] for a in (p["axes"] if p["axes"] is not None else range(len(p["shape"])))]
    assume(all(d + p["pads"][i] + p["pads"][i + n] >= 0 for i, d in enumerate(dims)))
    x = _x(p["seed"], p["shape"], p["dtype"])
    attrs, inits, inputs = {"mode": p["mode"]}, {}, ["x"]
    value = p["value"] if p["dtype"] == "float32" or p["value"] is None else int(p["value"])
    if p["opset"] < 11:
        assume(p["dtype"] == "float32")
        attrs["pads"] = p["pads"]
        if value is not None:
            attrs["value"] = value
    else:
        inits["pads"] = np.array(p["pads"], np.int64)
        inputs.append("pads")
        if value is not None or p["axes"] is not None:
            inits["value"] = np.array(0 if value is None else value, x.dtype)
            inputs.append("value")
        if p["axes"] is not None:
            inits["axes"] = np.array(p["axes"], np.int64)
            inputs.append("axes")
    m = model(helper.make_node("Pad", inputs, ["y"], **attrs), {"x": x}, ["y"], inits, opset=p["opset"])
    run_case(m, {"x": x}, expect="Pad")


@cases(50)
@given(SHAPES, hnp.array_shapes(min_dims=0, max_dims=2, max_side=4), st.sampled_from(["int64", "int32"]),
       st.booleans(), st.data())
def test_gather(shape, idx_shape, idx_dtype, data_is_const, data):
    """Negative indices, scalar and N-D indices, any axis; data or indices constant."""
    rank = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1)))
    dim = shape[axis or 0]
    rng = np.random.default_rng(data.draw(SEEDS))
    idx = rng.integers(-dim, dim, idx_shape).astype(idx_dtype)
    x = randn(rng, shape)
    attrs = {} if axis is None else {"axis": axis}
    feeds, inits = {}, {}
    (inits if data_is_const else feeds)["x"] = x
    (feeds if data_is_const else inits)["i"] = idx
    m = model(helper.make_node("Gather", ["x", "i"], ["y"], **attrs), feeds, ["y"], inits, opset=13)
    run_case(m, feeds, expect="Gather")


@cases(40)
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=4), SEEDS)
def test_expand(shapes, seed):
    """The target shape may have a lower rank or 1s where the input is larger (bidirectional)."""
    sx, target = shapes.input_shapes
    x = _x(seed, sx)
    inits = {"shape": np.array(target, np.int64)}
    m = model(helper.make_node("Expand", ["x", "shape"], ["y"]), {"x": x}, ["y"], inits, opset=13)
    run_case(m, {"x": x}, expect="Expand")


@cases(25)
@given(SHAPES, st.data())
def test_tile(shape, data):
    repeats = [data.draw(st.integers(1, 3)) for _ in shape]
    x = _x(data.draw(SEEDS), shape)
    inits = {"repeats": np.array(repeats, np.int64)}
    m = model(helper.make_node("Tile", ["x", "repeats"], ["y"]), {"x": x}, ["y"], inits, opset=13)
    run_case(m, {"x": x}, expect="Tile")


@cases(30)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 3),
       st.sampled_from([None, "DCR", "CRD"]), SEEDS)
def test_depth_to_space(n, c, h, w, b, mode, seed):
    x = _x(seed, (n, c * b * b, h, w))
    attrs = {"blocksize": b} | ({} if mode is None else {"mode": mode})
    m = model(helper.make_node("DepthToSpace", ["x"], ["y"], **attrs), {"x": x}, ["y"], opset=13)
    run_case(m, {"x": x}, expect="DepthToSpace")


@cases(20)
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), SEEDS)
def test_space_to_depth(n, c, h, w, b, seed):
    x = _x(seed, (n, c, h * b, w * b))
    m = model(helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=b), {"x": x}, ["y"], opset=13)
    run_case(m, {"x": x}, expect="SpaceToDepth")
