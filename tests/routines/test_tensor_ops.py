"""Concat, Split, copies, Transpose, Pad, Slice and Resize routines against the reference,
in both layouts where the layout matters."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper

import workbench
from onnx_helpers import make_model
from routine_helpers import bkey, assert_routine_matches, parallel_even_when_small
from workbench import routines
from workbench.runtime.compiled import CompiledModel
from workbench.routines.eltwise import kernels

SETTINGS = settings(deadline=None, derandomize=True, max_examples=20)
LAYOUTS = ["nchw", "nhwc"]
REFERENCE = "cpu:float32:nchw/reference"


@pytest.fixture(autouse=True, scope="module")
def _parallel_even_when_small():
    with parallel_even_when_small("tensor_ops", "resize_lerp", "softmax", "pool", "eltwise", "linalg", "col2im"):
        yield


def _load(nodes, inputs, inits=(), outputs=("y",), opset=17, fuse=True):
    return workbench.load(make_model(nodes, inputs, [(o, None) for o in outputs], initializers=inits,
                                     opset=opset).SerializeToString(), fuse=fuse)


def _applies(g, descriptor):
    layer = next(iter(g))
    return routines.get(layer.op, descriptor).applies(layer, g.input_specs(layer))


shapes4 = st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 7), st.integers(1, 8))


@SETTINGS
@given(shapes4, st.integers(0, 3), st.integers(2, 3), st.booleans(), st.sampled_from(LAYOUTS))
def test_concat(shape, axis, parts, with_const, layout):
    rng = np.random.default_rng(sum(shape) + axis)
    sizes = [int(rng.integers(1, 5)) for _ in range(parts)]
    inputs, inits, names = [], [], []
    for i, s in enumerate(sizes):
        sh = list(shape)
        sh[axis] = s
        if with_const and i == 1:
            inits.append((f"x{i}", rng.standard_normal(sh).astype(np.float32)))
        else:
            inputs.append((f"x{i}", sh))
        names.append(f"x{i}")
    g = _load([helper.make_node("Concat", names, ["y"], axis=axis - 4 if axis % 2 else axis)], inputs, inits)
    assert_routine_matches(g, f"cpu:float32:{layout}/copy")


@SETTINGS
@given(shapes4, st.integers(0, 3), st.sampled_from(LAYOUTS))
def test_split(shape, axis, layout):
    shape = list(shape)
    shape[axis] += 2
    sizes = np.array([1, shape[axis] - 2, 1], np.int64)
    g = _load([helper.make_node("Split", ["x", "s"], ["a", "b", "c"], axis=axis)], [("x", shape)], [("s", sizes)],
              outputs=["a", "b", "c"])
    assert_routine_matches(g, f"cpu:float32:{layout}/copy")


def test_concat_2d_and_int64_channels_first_only():
    g = _load([helper.make_node("Concat", ["a", "b"], ["y"], axis=1)], [("a", [2, 3]), ("b", [2, 4])])
    assert_routine_matches(g, "cpu:float32:nchw/copy")
    assert not _applies(g, "cpu:float32:nhwc/copy")
    g = _load([helper.make_node("Concat", ["a", "b"], ["y"], axis=0)],
              [("a", [2, 3], TensorProto.INT64), ("b", [1, 3], TensorProto.INT64)])
    assert_routine_matches(g, "cpu:float32:nchw/copy")
    assert not _applies(g, "cpu:float32:nhwc/copy")


@pytest.mark.parametrize("node, shape, inits", [
    (helper.make_node("Flatten", ["x"], ["y"], axis=2), [2, 3, 4, 5], []),
    (helper.make_node("Reshape", ["x", "s"], ["y"]), [2, 3, 4, 5], [("s", np.array([2, -1], np.int64))]),
    (helper.make_node("Squeeze", ["x", "s"], ["y"]), [2, 1, 4, 1], [("s", np.array([1, 3], np.int64))]),
    (helper.make_node("Unsqueeze", ["x", "s"], ["y"]), [2, 3, 4], [("s", np.array([0], np.int64))]),
])
def test_copies(node, shape, inits):
    g = _load([helper.make_node("Relu", ["x"], ["r"]), node], [("x", shape)], inits)
    node_layer = [layer for layer in g][-1]
    assert node_layer.op == node.op_type
    assert_routine_matches(g, "cpu:float32:nchw/copy", expect_layers=[node_layer.name])
    assert_routine_matches(g, "cpu:float32:nchw/view", expect_layers=[node_layer.name])
    # In the executor the view owns no buffer; run on its own it copies.
    compiled = CompiledModel(g, {layer.name: "cpu:float32:nchw/view" if layer is node_layer else REFERENCE for layer in g})
    views = compiled._views
    assert np.shares_memory(views[bkey(node_layer.outputs[0], "nchw")], views[bkey(node_layer.inputs[0], "nchw")])
    view = routines.get(node.op_type, "cpu:float32:nchw/view")
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    y = np.zeros(node_layer.out_specs[0].shape, np.float32)
    view.run(node_layer, view.prepare(node_layer), [x] + [None] * (len(node_layer.inputs) - 1), [y], 2)
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [1, 0, 3, 2], [2, 0, 1]])
def test_transpose(perm):
    shape = [2, 3, 4, 5][:len(perm)]
    g = _load([helper.make_node("Transpose", ["x"], ["y"], perm=perm)], [("x", shape)])
    assert_routine_matches(g, "cpu:float32:nchw/copy", rtol=0)


@SETTINGS
@given(shapes4, st.sampled_from(["constant", "edge", "reflect", "wrap"]),
       st.lists(st.integers(-1, 3), min_size=8, max_size=8), st.sampled_from(LAYOUTS))
def test_pad(shape, mode, pads, layout):
    shape = [d + 2 for d in shape]   # room for crops and reflections
    inits = [("p", np.array(pads, np.int64))]
    names = ["x", "p"]
    if mode == "constant":
        inits.append(("v", np.array(1.5, np.float32)))
        names.append("v")
    g = _load([helper.make_node("Pad", names, ["y"], mode=mode)], [("x", shape)], inits)
    assert_routine_matches(g, f"cpu:float32:{layout}/gather", rtol=0)


@SETTINGS
@given(shapes4, st.lists(st.tuples(st.integers(-6, 6), st.integers(-6, 8), st.sampled_from([1, 2, -1, -2])),
                         min_size=1, max_size=4, unique_by=lambda t: id(t)), st.sampled_from(LAYOUTS))
def test_slice(shape, spec, layout):
    shape = [d + 3 for d in shape]
    axes = list(range(len(spec)))
    starts, ends, steps = zip(*spec)
    inits = [("s", np.array(starts, np.int64)), ("e", np.array(ends, np.int64)), ("a", np.array(axes, np.int64)),
             ("t", np.array(steps, np.int64))]
    # not fused: a Slice of one range along one axis would be a Split (passes/slices_as_split.py)
    g = _load([helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])], [("x", shape)], inits, fuse=False)
    if any(d == 0 for d in next(iter(g)).out_specs[0].shape):
        return
    assert_routine_matches(g, f"cpu:float32:{layout}/gather", rtol=0)


COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
          "half_pixel_symmetric"]


@SETTINGS
@given(shapes4, st.sampled_from(["nearest", "linear"]), st.sampled_from(COORDS),
       st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]),
       st.tuples(st.sampled_from([0.5, 0.6, 1.0, 1.5, 2.0, 3.0]), st.sampled_from([0.7, 1.0, 2.0, 2.5])),
       st.sampled_from(LAYOUTS))
def test_resize(shape, mode, coord, nearest, scales, layout):
    shape = [shape[0], shape[1], shape[2] + 1, shape[3] + 1]
    inits = [("scales", np.array([1, 1, *scales], np.float32))]
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode, coordinate_transformation_mode=coord,
                            nearest_mode=nearest)
    g = _load([node], [("x", shape)], inits, opset=19)
    if any(d == 0 for d in next(iter(g)).out_specs[0].shape):
        return
    algo = "gather" if mode == "nearest" else "bilinear"
    assert_routine_matches(g, f"cpu:float32:{layout}/{algo}", rtol=0 if mode == "nearest" else 1e-5)


@pytest.mark.parametrize("mode, algo", [("nearest", "gather"), ("linear", "bilinear")])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_upsample_opset9(mode, algo, layout):
    g = _load([helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode)], [("x", [2, 3, 5, 4])],
              [("s", np.array([1, 1, 2, 3], np.float32))], opset=9)
    assert next(iter(g)).op == "Upsample"
    assert_routine_matches(g, f"cpu:float32:{layout}/{algo}", rtol=1e-5)


def test_resize_sizes_and_channel_scales():
    inits = [("sizes", np.array([2, 3, 8, 8], np.int64))]
    g = _load([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear")], [("x", [2, 3, 4, 4])], inits,
              opset=19)
    assert _applies(g, "cpu:float32:nhwc/bilinear") and not _applies(g, "cpu:float32:nhwc/gather")
    assert_routine_matches(g, "cpu:float32:nhwc/bilinear")
    # A channel scale that keeps the size (the reference still resamples), or a 1-D resize: the reference's.
    for shape, scales in (([2, 3, 4, 4], [1, 1.2, 2, 1]), ([2, 3, 4], [1, 1, 2])):
        g = _load([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")], [("x", shape)],
                  [("s", np.array(scales, np.float32))], opset=19)
        assert not any(_applies(g, f"cpu:float32:{lay}/gather") for lay in LAYOUTS)


def _gather_reference(x, tables, fill):
    """NumPy's indexing of ``x`` by the four tables, ``fill`` wherever an index is -1."""
    idx = np.ix_(*[np.maximum(t, 0) for t in tables])
    out = x[idx].copy()
    hole = np.zeros(out.shape, bool)
    for axis, t in enumerate(tables):
        shape = [1] * 4
        shape[axis] = t.size
        hole |= (t < 0).reshape(shape)
    out[hole] = fill
    return out


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows, lead", [(np.repeat(np.arange(9), 3), 2), (np.repeat(np.arange(40), 2), 1),
                                        (np.array([-1, -1, 0, 0, 1, 1, 2, 2, -1, -1]), 3), (np.arange(30), 1)])
def test_gather4_copies_repeated_lines_as_numpy_indexes(threads, rows, lead):
    """Nearest upsampling repeats each source line: the kernel copies the repeat from the line it
    just wrote (lines along axis 1, as many as chunks take whole lines); padding lines (-1) and
    fills across the other axes as NumPy's indexing, on 1-3 threads."""
    from workbench._kernels import tensor_ops as k
    rng = np.random.default_rng(int(rows.size) + lead)
    x = rng.standard_normal((lead, int(rows.max()) + 1, 6, 5)).astype(np.float32)
    t = [np.arange(lead, dtype=np.int32), rows.astype(np.int32),
         np.array([-1, 0, 0, 1, 2, 3, 3, 4, 5, 5, -1], np.int32), np.array([0, 1, 2, 3, 4, -1], np.int32)]
    t[0][-1] = -1 if lead == 3 else t[0][-1]   # a whole image of padding
    out = np.full([len(a) for a in t], np.nan, np.float32)
    k.gather4(x, out, t, 2.5, threads)
    np.testing.assert_array_equal(out, _gather_reference(x, t, np.float32(2.5)))
    t[3] = np.arange(5, dtype=np.int32)   # whole pixels: the copied (not indexed) inner rows
    out = np.full([len(a) for a in t], np.nan, np.float32)
    k.gather4(x, out, t, 2.5, threads)
    np.testing.assert_array_equal(out, _gather_reference(x, t, np.float32(2.5)))


@pytest.mark.parametrize("threads", [1, 2])
def test_gather4_reads_and_writes_channel_slices(threads):
    """A nearest 2x upsample (and a padded crop) from and into channel slices of wider NHWC
    buffers, as in a Concat of an FPN: NumPy's indexing, and the channels around untouched."""
    from workbench._kernels import tensor_ops as k
    rng = np.random.default_rng(5)
    src = rng.standard_normal((2, 5, 7, 20)).astype(np.float32)
    x = src[..., 3:14]
    t = [np.arange(2, dtype=np.int32), np.repeat(np.arange(5, dtype=np.int32), 2),
         np.append(np.repeat(np.arange(7, dtype=np.int32), 2), -1).astype(np.int32), np.arange(11, dtype=np.int32)]
    big = np.full((2, 10, 15, 30), 7.0, np.float32)
    out = big[..., 9:20]
    k.gather4(x, out, t, -1.5, threads)
    want = x[:, t[1]][:, :, t[2][:-1]]
    np.testing.assert_array_equal(out[:, :, :14], want)
    assert (out[:, :, 14] == -1.5).all() and (big[..., :9] == 7).all() and (big[..., 20:] == 7).all()
    with pytest.raises(ValueError, match="channel slice"):
        k.gather4(x, np.empty((2, 20, 15, 11), np.float32)[:, ::2], t)


def test_kernel_twins_check_shapes():
    from workbench._kernels import tensor_ops as k
    a = np.arange(12, dtype=np.float32)
    with pytest.raises(ValueError, match="overrun"):
        k.copy_blocks(a, np.empty(12, np.float32), 3, 4, 4, 1, 4, 0)
    with pytest.raises(ValueError, match="overrun"):
        k.copy_blocks(a, np.empty(12, np.float32), 2, 4, 4, 0, 3, 0)
    with pytest.raises(TypeError, match="float64"):
        k.copy_blocks(a, np.empty(12, np.float64), 1, 12, 12, 0, 12, 0)
    x = np.zeros((1, 2, 3, 4), np.float32)
    t = [np.arange(n, dtype=np.int32) for n in (1, 2, 3, 4)]
    k.gather4(x, np.empty((1, 2, 3, 4), np.float32), t)
    with pytest.raises(ValueError, match="outside"):
        k.gather4(x, np.empty((1, 2, 3, 4), np.float32), t[:3] + [np.array([0, 1, 2, 4], np.int32)])
    with pytest.raises(ValueError, match="entries"):
        k.gather4(x, np.empty((1, 2, 3, 5), np.float32), t)
    with pytest.raises(TypeError, match="int32"):
        k.gather4(x, np.empty((1, 2, 3, 4), np.float32), t[:3] + [t[3].astype(np.int64)])
    h = (np.zeros(2, np.int32), np.ones(2, np.int32), np.zeros(2, np.float32))
    w = (np.zeros(5, np.int32), np.full(5, 3, np.int32), np.zeros(5, np.float32))
    lerp = kernels("resize_lerp")
    lerp.lerp2d(x, np.empty((1, 2, 2, 5), np.float32), False, h, w)
    with pytest.raises(ValueError, match="outside"):
        lerp.lerp2d(x, np.empty((1, 2, 2, 5), np.float32), False, h, (w[0], w[1] + 1, w[2]))
    with pytest.raises(ValueError, match="batch or channels"):
        lerp.lerp2d(x, np.empty((1, 2, 2, 5), np.float32), True, h, w)


# -- the zoo: every non-Conv layer has a fast routine, and a whole model runs on them ----------------------
ZOO = {"tiny": 64, "resnet50": 64, "mobilenet_v2": 64, "mobilenet_v3_large": 96, "vgg16": 32}
OURS = {f"workbench.routines.{m}" for m in ("pool", "eltwise", "linalg", "tensor_ops", "conv_transpose",
                                                      "softmax")}


def _ours(graph, layer, layout):
    """Our routines that apply to ``layer``, ``layout`` ones first."""
    found = [r for r in routines.applicable(graph, layer) if r.__module__ in OURS]
    return sorted(found, key=lambda r: (r.layout != layout, -r.priority, r.descriptor))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_non_conv_layers_run_on_fast_routines(name):
    from workbench import zoo
    from workbench.runtime.compiled import CompiledModel
    graph = workbench.load(zoo.build(name, batch=2, resolution=ZOO[name]).SerializeToString())
    assert set(workbench.zoo.NAMES) == set(ZOO)
    feeds = workbench.random_inputs(graph, seed=3)
    ref = workbench.ReferenceExecutor(graph).run(feeds)
    for layout in ("nchw", "nhwc"):
        assignment = {}
        for layer in graph:
            if layer.op == "Conv":
                assignment[layer.name] = "cpu:float32:nchw/reference"
                continue
            found = _ours(graph, layer, layout)
            assert found, f"{name}: no fast routine for {layer.name} ({layer.op})"
            assignment[layer.name] = found[0].descriptor
        assert any(f":{layout}/" in d for d in assignment.values())
        ours = CompiledModel(graph, assignment, num_threads=2).run(feeds)
        for out, r in ref.items():
            err = float(np.abs(ours[out].astype(np.float64) - r).max()) / max(float(np.abs(r).max()), 1e-6)
            assert err <= 1e-4, (name, layout, out, err)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.float16])
@pytest.mark.parametrize("grain", [1, 1 << 30])
def test_interleave_concat_and_split_against_numpy(dtype, grain):
    from workbench._kernels import tensor_ops as k
    rng = np.random.default_rng(7)
    rows, widths = 333, [16, 1, 70, 5]   # 70 float32 is over the 256-byte inline copy
    parts = [(rng.standard_normal((rows, w)) * 100).astype(dtype) for w in widths]
    old = k.set_grain(grain)
    try:
        whole = k.interleave(parts, np.empty((rows, sum(widths)), dtype), rows, widths, False, 2)
        np.testing.assert_array_equal(whole, np.concatenate(parts, axis=1))
        back = [np.empty_like(p) for p in parts]
        k.interleave(back, whole, rows, widths, True, 2)
        for a, b in zip(parts, back):
            np.testing.assert_array_equal(a, b)
    finally:
        k.set_grain(old)


def test_interleave_refuses_bad_arguments():
    from workbench._kernels import tensor_ops as k
    a, b = np.zeros((4, 2), np.float32), np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="expected 4 rows of 5"):
        k.interleave([a, b], np.zeros(19, np.float32), 4, [2, 3])
    with pytest.raises(ValueError, match="part 1 has 12 elements"):
        k.interleave([a, b], np.zeros(28, np.float32), 4, [2, 5])
    with pytest.raises(TypeError, match="part 0 must be float64"):
        k.interleave([a], np.zeros(8, np.float64), 4, [2])
    with pytest.raises(ValueError, match="2 parts and 1 widths"):
        k.interleave([a, b], np.zeros(20, np.float32), 4, [2])
    a.setflags(write=False)
    with pytest.raises(ValueError, match="part 0 is read-only"):
        k.interleave([a], np.zeros(8, np.float32), 4, [2], split=True)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", ["Concat", "Split"])
def test_channel_concat_and_split_of_many_pixels(layout, op):
    # An NHWC channel concat of 40x40 pixels takes the interleaved path (rows of 48 channels).
    if op == "Concat":
        g = _load([helper.make_node("Concat", ["a", "b", "c"], ["y"], axis=1)],
                  [("a", [1, 16, 40, 40]), ("b", [1, 24, 40, 40]), ("c", [1, 8, 40, 40])])
    else:
        g = _load([helper.make_node("Split", ["x", "s"], ["a", "b", "c"], axis=1)], [("x", [1, 48, 40, 40])],
                  [("s", np.array([16, 24, 8], np.int64))], outputs=["a", "b", "c"])
    assert_routine_matches(g, f"cpu:float32:{layout}/copy")


@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data())
def test_slice_block_plan_against_numpy(shape, data):
    # A random unit-step box: where block_plan gives runs, copying them gives x[box]; a box whose
    # leading axes are single or whole must get a plan.
    from workbench.routines.tensor_ops import block_plan
    box = []
    for size in shape:
        a = data.draw(st.integers(0, size - 1))
        box.append(slice(a, data.draw(st.integers(a + 1, size))))
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    tables = [np.arange(size)[b] for size, b in zip(shape, box)]
    plan = block_plan(tables, tuple(shape))
    lens = [len(t) for t in tables]
    partial = [n != size for n, size in zip(lens, shape)]
    p = max((a for a, f in enumerate(partial) if f), default=0)
    q = p
    while q > 0 and not partial[q - 1]:
        q -= 1
    assert (plan is not None) == all(lens[a] == 1 for a in range(q))
    if plan is not None:
        outer, width, ld, offset = plan
        flat = x.reshape(-1)
        got = np.concatenate([flat[offset + o * ld: offset + o * ld + width] for o in range(outer)])
        np.testing.assert_array_equal(got, x[tuple(box)].reshape(-1))


def test_yolo_head_slice_is_a_block_copy():
    # YOLOv8's DFL head: (1, 4, 2100)[:, 0:2] and [:, 2:4], one run each.
    from workbench.routines.tensor_ops import block_plan
    tables = [np.zeros(1, np.int32), np.zeros(1, np.int32), np.arange(2, 4), np.arange(2100)]
    assert block_plan(tables, (1, 1, 4, 2100)) == (1, 4200, 8400, 4200)
