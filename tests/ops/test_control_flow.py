"""If nodes whose condition folds at load (on shapes, or on inputs given as constants): the chosen
branch inlined, against ONNX Runtime on the original model; nested Ifs reading a branch's own
tensors, branch initializers, branch outputs that are outer tensors; and the errors for a
condition known only at run time, an unsupported op inside a branch, and bad constants."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import workbench
from onnx_helpers import make_model, relative_error
from workbench.errors import ModelImportError, ShapeError, UnsupportedOpsError
from workbench.onnx_io.ort import run_onnxruntime


def _branch(nodes, outputs, inits=()):
    return helper.make_graph(nodes, "branch", [], [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                   for o in outputs],
                             initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in inits])


def _check(model, feeds, constants=None, rtol=1e-6, **load):
    graph = workbench.load(model.SerializeToString(), constants=constants, **load)
    assert "If" not in graph.op_counts()
    ours = workbench.ReferenceExecutor(graph).run(feeds)
    theirs = run_onnxruntime(model, {**feeds, **{k: np.asarray(v) for k, v in (constants or {}).items()}})
    assert set(ours) == set(theirs)
    for k in theirs:
        assert ours[k].shape == theirs[k].shape and relative_error(ours[k], theirs[k]) <= rtol, k
    return graph


def _shape_if_model():
    """``y = relu(x) * 2`` where x's last dim is 5, else ``-x``; the then-branch holds an
    initializer and a nested If (on the rank) reading the branch's own tensor."""
    inner_then = _branch([helper.make_node("Mul", ["t/r", "two"], ["inner_y"])], ["inner_y"])
    inner_else = _branch([helper.make_node("Neg", ["t/r"], ["inner_n"])], ["inner_n"])
    then = _branch([helper.make_node("Relu", ["x"], ["t/r"]),
                    helper.make_node("Shape", ["x"], ["t/s"]), helper.make_node("Size", ["t/s"], ["t/rank"]),
                    helper.make_node("Equal", ["t/rank", "four"], ["t/c"]),
                    helper.make_node("If", ["t/c"], ["t/y"], then_branch=inner_then, else_branch=inner_else)],
                   ["t/y"], [("two", np.float32(2)), ("four", np.int64(4))])
    other = _branch([helper.make_node("Neg", ["x"], ["e/y"])], ["e/y"])
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "last"], ["d"]),
             helper.make_node("Equal", ["d", "five"], ["c"]),
             helper.make_node("If", ["c"], ["y"], name="pick", then_branch=then, else_branch=other),
             helper.make_node("Add", ["y", "x"], ["z"])]
    return make_model(nodes, [("x", ["n", 3, 4, "w"])], [("z", None)],
                      [("last", np.int64(3)), ("five", np.int64(5))], opset=16)


@settings(max_examples=10, deadline=None)
@given(w=st.integers(3, 9))
def test_an_if_on_shapes_is_its_branch(w):
    model = _shape_if_model()
    feeds = {"x": np.random.default_rng(w).standard_normal((2, 3, 4, w)).astype(np.float32)}
    graph = _check(model, feeds, shapes={"x": (2, 3, 4, w)})
    assert ("Relu" in graph.op_counts()) == (w == 5)


def _flag_model():
    """An If on a boolean input; the else-branch's output is its own initializer."""
    then = _branch([helper.make_node("Sigmoid", ["x"], ["sg"])], ["sg"])
    other = _branch([], ["half"], [("half", np.full((2, 7), 0.5, np.float32))])
    nodes = [helper.make_node("If", ["flag"], ["y", ], name="gate", then_branch=then, else_branch=other),
             helper.make_node("Mul", ["y", "x"], ["z"])]
    return make_model(nodes, [("x", [2, 7]), ("flag", [], TensorProto.BOOL)], [("z", None)], opset=16)


@pytest.mark.parametrize("flag", [True, False])
def test_an_if_on_a_constant_input_is_its_branch(flag):
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 7)).astype(np.float32)}
    graph = _check(_flag_model(), feeds, constants={"flag": flag})
    assert "flag" not in graph.inputs and graph.meta["constant_inputs"]["flag"] == flag


@pytest.mark.parametrize("flag", [True, False])
def test_an_if_on_a_run_time_input_runs_the_branch_it_picks(flag):
    """The condition an input: an If layer whose branches are graphs of their own, run by the
    reference and by the branches routine (each branch compiled once with its own plan)."""
    from routine_helpers import assert_routine_matches
    model = _flag_model()
    graph = workbench.load(model.SerializeToString())
    assert graph.op_counts().get("If") == 1 and "flag" in graph.inputs
    x = np.random.default_rng(3).standard_normal((2, 7)).astype(np.float32)
    feeds = {"x": x, "flag": np.array(flag)}
    ours = workbench.ReferenceExecutor(graph).run(feeds)
    theirs = run_onnxruntime(model, feeds)
    assert relative_error(ours["z"], theirs["z"]) <= 1e-6
    assert_routine_matches(graph, "cpu:float32:nchw/branches", feeds=feeds, expect_layers=["gate"])


def test_bad_constants_are_named():
    with pytest.raises(ShapeError, match="'nope', which is not an input"):
        workbench.load(_flag_model().SerializeToString(), constants={"nope": 1})
    with pytest.raises(ShapeError, match="input 'flag' has shape"):
        workbench.load(_flag_model().SerializeToString(), constants={"flag": [True, False]})


def test_an_unsupported_op_inside_a_branch_is_named():
    then = _branch([helper.make_node("Det", ["x"], ["l"], name="inner_det")], ["l"])
    other = _branch([helper.make_node("Neg", ["x"], ["n"])], ["n"])
    model = make_model([helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)],
                       [("x", [2, 2]), ("flag", [], TensorProto.BOOL)], [("y", None)], opset=16)
    with pytest.raises(UnsupportedOpsError, match="Det.*inner_det"):
        workbench.load(model.SerializeToString(), constants={"flag": True})


def _loop_model(trip, cond_limit=None, scan=True):
    """``acc`` summed with ``x * i`` for i in 0..trip-1 (while i < cond_limit, if given), each
    iteration's ``acc`` stacked as a scan output; the body reads x from outside."""
    body_nodes = [helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["x", "fi"], ["xi"]), helper.make_node("Add", ["acc_in", "xi"], ["acc_out"]),
                  helper.make_node("Identity", ["acc_out"], ["acc_scan"])]
    if cond_limit is None:
        body_nodes.append(helper.make_node("Identity", ["c_in"], ["c_out"]))
    else:
        body_nodes += [helper.make_node("Add", ["i", "one"], ["next"]), helper.make_node("Less", ["next", "limit"], ["c_out"])]
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)]
        + ([helper.make_tensor_value_info("acc_scan", TensorProto.FLOAT, None)] if scan else []),
        initializer=[numpy_helper.from_array(np.int64(1), "one"), numpy_helper.from_array(np.int64(cond_limit or 0), "limit")])
    inits = [("acc0", np.zeros((2, 3), np.float32)), ("yes", np.array(True))]
    ins = ["", "yes", "acc0"]
    if trip is not None:
        inits.append(("trip", np.int64(trip)))
        ins[0] = "trip"
    outs = ["final"] + (["stacked"] if scan else [])
    node = helper.make_node("Loop", ins, outs, name="loop", body=body)
    return make_model([node, helper.make_node("Relu", ["final"], ["y"])], [("x", [2, 3])],
                      [("y", None)] + ([("stacked", None)] if scan else []), inits, opset=16)


@settings(max_examples=15, deadline=None)
@given(trip=st.one_of(st.none(), st.integers(1, 7)), limit=st.one_of(st.none(), st.integers(1, 6)),
       scan=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_a_loop_that_folds_is_unrolled(trip, limit, scan, seed):
    if trip is None and limit is None:
        limit = 3   # a loop with neither runs forever
    model = _loop_model(trip, limit, scan)
    feeds = {"x": np.random.default_rng(seed).standard_normal((2, 3)).astype(np.float32)}
    graph = _check(model, feeds)
    assert "Loop" not in graph.op_counts()


def test_a_loop_whose_condition_is_an_input_is_refused_by_name():
    model = _loop_model(3)
    model.graph.initializer.pop()   # trip: now a graph input, known only at run time
    model.graph.input.append(helper.make_tensor_value_info("trip", TensorProto.INT64, []))
    with pytest.raises(ModelImportError, match=r"'loop' \(Loop\).*trip count 'trip' is known only at run time"):
        workbench.load(model.SerializeToString())


@pytest.mark.parametrize("batch_axis, time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence_matches_onnxruntime(batch_axis, time_axis):
    shape = [5, 3, 2] if time_axis == 0 else [3, 5, 2]
    node = helper.make_node("ReverseSequence", ["x", "lens"], ["r"], batch_axis=batch_axis, time_axis=time_axis)
    model = make_model([node, helper.make_node("Relu", ["r"], ["y"])], [("x", shape)], [("y", None)],
                       [("lens", np.array([5, 2, 0], np.int64))], opset=16)
    feeds = {"x": np.random.default_rng(2).standard_normal(shape).astype(np.float32)}
    graph = workbench.load(model.SerializeToString())
    ours = workbench.ReferenceExecutor(graph).run(feeds)
    np.testing.assert_array_equal(ours["y"], run_onnxruntime(model, feeds)["y"])


def test_a_run_time_if_tunes_exports_and_names_a_branch_that_cannot_run(tmp_path):
    """Tuned (the profile times the branch that runs at these shapes), exported as a tuned file that
    runs again and in ONNX Runtime; a branch that does not import at the graph's shapes (a reshape
    for other sizes) is an error naming it only when it is picked."""
    from workbench.session import Session
    from workbench.tuning.profiledb import ProfileDatabase
    then = _branch([helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Relu", ["r"], ["t"])], ["t"],
                   [("shape", np.array([7, 2], np.int64))])
    other = _branch([helper.make_node("Reshape", ["x", "bad"], ["e"])], ["e"], [("bad", np.array([3, 5], np.int64))])
    model = make_model([helper.make_node("If", ["flag"], ["y"], name="gate", then_branch=then, else_branch=other)],
                       [("x", [2, 7]), ("flag", [], TensorProto.BOOL)], [("y", None)], opset=16)
    s = Session.from_onnx(model, num_threads=2, db=ProfileDatabase(tmp_path / "p.sqlite", num_threads=2))
    s.tune()
    assert s.plan.choice["gate"] == "cpu:float32:nchw/branches"
    x = np.random.default_rng(4).standard_normal((2, 7)).astype(np.float32)
    feeds = {"x": x, "flag": np.array(True)}
    want = run_onnxruntime(model, feeds)["y"]
    np.testing.assert_array_equal(s.run(feeds)["y"], want)
    s.export(tmp_path / "t.onnx", measure_runs=0)
    np.testing.assert_array_equal(Session.load(tmp_path / "t.onnx").run(feeds)["y"], want)
    np.testing.assert_array_equal(run_onnxruntime(str(tmp_path / "t.onnx"), feeds)["y"], want)
    with pytest.raises(ShapeError, match=r"'gate' \(If\): the else branch cannot run at these input shapes"):
        s.run({"x": x, "flag": np.array(False)})


def _scan_rnn_model(batch, steps, hidden, in_axis, in_dir, out_axis, out_dir, second_output, opset, seed):
    """An RNN cell written as a Scan over the sequence (as tf2onnx and scripted PyTorch write
    one): state ``h`` (batch, hidden), ``h' = tanh(x_t W + h R + b)``, the new state also a scan
    output; with ``second_output`` a second scan input (added to the output) and a second scan
    output (its running sum), in the other direction."""
    rng = np.random.default_rng(seed)
    feat = 3
    w = rng.standard_normal((feat, hidden)).astype(np.float32) * 0.5
    r = rng.standard_normal((hidden, hidden)).astype(np.float32) * 0.5
    b = rng.standard_normal(hidden).astype(np.float32)
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("MatMul", ["x_t", "W"], ["xw"]), helper.make_node("MatMul", ["h_in", "R"], ["hr"]),
             helper.make_node("Add", ["xw", "hr"], ["pre"]), helper.make_node("Add", ["pre", "b"], ["pre_b"]),
             helper.make_node("Tanh", ["pre_b"], ["h_out"]), helper.make_node("Identity", ["h_out"], ["y_t"])]
    ins = [helper.make_tensor_value_info("h_in", f32, [batch, hidden]), helper.make_tensor_value_info("x_t", f32, [batch, feat])]
    outs = [helper.make_tensor_value_info("h_out", f32, [batch, hidden]), helper.make_tensor_value_info("y_t", f32, [batch, hidden])]
    attrs = {"num_scan_inputs": 1, "scan_input_axes": [in_axis], "scan_input_directions": [in_dir],
             "scan_output_axes": [out_axis], "scan_output_directions": [out_dir]}
    if second_output:
        nodes += [helper.make_node("Add", ["acc_in", "z_t"], ["acc_out"]), helper.make_node("Identity", ["acc_out"], ["s_t"])]
        ins.insert(1, helper.make_tensor_value_info("acc_in", f32, [batch, hidden]))
        ins.append(helper.make_tensor_value_info("z_t", f32, [batch, hidden]))
        outs.insert(1, helper.make_tensor_value_info("acc_out", f32, [batch, hidden]))
        outs.append(helper.make_tensor_value_info("s_t", f32, [batch, hidden]))
        attrs = {"num_scan_inputs": 2, "scan_input_axes": [in_axis, 0], "scan_input_directions": [in_dir, 1 - in_dir],
                 "scan_output_axes": [out_axis, -1], "scan_output_directions": [out_dir, 1 - out_dir]}
    body = helper.make_graph(nodes, "cell", ins, outs, initializer=[numpy_helper.from_array(w, "W"),
                                                                  numpy_helper.from_array(r, "R")])
    x_shape = [batch, feat]
    x_shape.insert(in_axis % 3, steps)
    graph_ins = [("x", x_shape), ("h0", [batch, hidden])]
    scan_ins, scan_outs = ["h0", "x"], ["h_last", "ys"]
    if second_output:
        graph_ins.append(("z", [steps, batch, hidden]))
        scan_ins, scan_outs = ["h0", "acc0", "x", "z"], ["h_last", "acc_last", "ys", "sums"]
    node = helper.make_node("Scan", scan_ins, scan_outs, name="scan", body=body, **attrs)
    inits = [("b", b)] + ([("acc0", np.zeros((batch, hidden), np.float32))] if second_output else [])
    return make_model([node, helper.make_node("Relu", ["h_last"], ["y"])], graph_ins,
                      [("y", None), ("ys", None)] + ([("sums", None), ("acc_last", None)] if second_output else []),
                      inits, opset=opset)


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 3), steps=st.integers(1, 6), hidden=st.integers(1, 9), in_axis=st.sampled_from([0, 1, -1]),
       in_dir=st.integers(0, 1), out_axis=st.sampled_from([0, 1, 2, -1]), out_dir=st.integers(0, 1),
       second=st.booleans(), opset=st.sampled_from([11, 16]), seed=st.integers(0, 2 ** 16))
def test_a_scan_is_unrolled(batch, steps, hidden, in_axis, in_dir, out_axis, out_dir, second, opset, seed):
    """Directions, axes (negative too), one or two scan inputs and outputs, batch > 1: the graph
    (reference and the default compiled plan) computes what ONNX Runtime does."""
    model = _scan_rnn_model(batch, steps, hidden, in_axis, in_dir, out_axis, out_dir, second, opset, seed)
    rng = np.random.default_rng(seed + 1)
    graph = workbench.load(model.SerializeToString())
    feeds = {t: rng.standard_normal(s.shape).astype(np.float32) for t, s in graph.inputs.items()}
    graph = _check(model, feeds, rtol=1e-4)   # MatMul and Tanh: float32 sums in another order than ORT's
    assert "Scan" not in graph.op_counts()
    session = workbench.Session(graph, num_threads=2)
    session.tune()
    ours, theirs = session.run(feeds), run_onnxruntime(model, feeds)
    for k in theirs:
        assert relative_error(ours[k], theirs[k]) <= 1e-4, k


def test_a_scan_of_opset_8_or_ragged_inputs_is_refused_by_name():
    model = _scan_rnn_model(2, 4, 3, 0, 0, 0, 0, True, 11, 0)
    model.graph.input[2].type.tensor_type.shape.dim[0].dim_value = 5   # z: 5 steps, x: 4
    with pytest.raises(ModelImportError, match=r"'scan' \(Scan\): its scan inputs differ in length \(\[4, 5\]\)"):
        workbench.load(model.SerializeToString())
    model = _scan_rnn_model(2, 4, 3, 0, 0, 0, 0, False, 11, 0)
    model.opset_import[0].version = 8
    with pytest.raises(ModelImportError, match=r"'scan' \(Scan\): the opset 8 Scan"):
        workbench.load(model.SerializeToString())


def test_a_run_time_if_has_tuned_branch_plans_kept_in_the_tuned_file(tmp_path):
    """Tuning a session tunes each branch as a model of its own (its plan the selection's on the
    profile, here the fast convolution rather than the reference); the compiled If runs that plan,
    the tuned file keeps it, and an annotation naming a routine that does not apply is refused
    with the layer named."""
    import onnx
    from workbench.session import Session
    from workbench.tuned_file import TunedModelError
    from workbench.tuning.profiledb import ProfileDatabase
    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)   # read by both branches from outside
    then = _branch([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4), helper.make_node("Relu", ["c"], ["t"])],
                   ["t"])
    other = _branch([helper.make_node("Conv", ["x", "w"], ["e"], pads=[1] * 4)], ["e"])
    model = make_model([helper.make_node("If", ["flag"], ["y"], name="gate", then_branch=then, else_branch=other)],
                       [("x", [1, 3, 9, 9]), ("flag", [], TensorProto.BOOL)], [("y", None)], [("w", w)], opset=16)
    s = Session.from_onnx(model, num_threads=2, db=ProfileDatabase(tmp_path / "p.sqlite", num_threads=2))
    s.tune()
    gate = s.graph.layer("gate")
    plans = gate.meta["branch_plans"]
    assert set(plans) == {"then", "else"}
    for which, graph in gate.meta["branches"].items():
        (conv,) = [l for l in graph if l.op == "Conv"]
        assert plans[which].keys() == {l.name for l in graph}
        assert plans[which][conv.name] != "cpu:float32:nchw/reference"
    x = rng.standard_normal((1, 3, 9, 9)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        assert relative_error(s.run(feeds)["y"], run_onnxruntime(model, feeds)["y"]) <= 1e-4
    s.export(tmp_path / "t.onnx", measure_runs=0)
    again = Session.load(tmp_path / "t.onnx")
    assert again.graph.layer("gate").meta["branch_plans"] == plans
    feeds = {"x": x, "flag": np.array(False)}
    assert relative_error(again.run(feeds)["y"], run_onnxruntime(model, feeds)["y"]) <= 1e-4
    tuned = onnx.load(str(tmp_path / "t.onnx"))
    (node,) = [n for n in tuned.graph.node if n.name == "gate"]
    (prop,) = [p for p in node.metadata_props if p.key == "workbench.branch_plans"]
    conv_name = next(l.name for l in gate.meta["branches"]["then"] if l.op == "Conv")
    bad = {k: dict(v) for k, v in plans.items()}
    bad["then"][conv_name] = "cpu:float32:nchw/softmax_rows"
    prop.value = json.dumps(bad)
    onnx.save(tuned, str(tmp_path / "bad.onnx"))
    with pytest.raises(TunedModelError, match=r"'gate'.*branch_plans.*then branch layer"):
        Session.load(tmp_path / "bad.onnx")
