"""Importer: the ways weights arrive, symbolic dims, and every bad-input error."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench
from workbench import zoo
from workbench.errors import InputError, ModelFileError, ModelImportError, ShapeError, UnsupportedOpsError
from onnx_helpers import assert_matches_onnxruntime, make_model


def conv_relu_model(rng, batch_dim=2, height=9, width=11):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 0, 1, 2]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return make_model(nodes, [("x", [batch_dim, 3, height, width])], [("y", None)], [("w", w), ("b", b)]), w, b


def test_weights_as_initializers_constants_and_initialized_inputs(rng):
    model, w, b = conv_relu_model(rng)
    assert_matches_onnxruntime(model)
    # The same weights as Constant nodes.
    as_constants = onnx.ModelProto()
    as_constants.CopyFrom(model)
    del as_constants.graph.initializer[:]
    consts = [helper.make_node("Constant", [], [n], name=f"const_{n}", value=numpy_helper.from_array(v, n))
              for n, v in (("w", w), ("b", b))]
    nodes = consts + list(as_constants.graph.node)
    del as_constants.graph.node[:]
    as_constants.graph.node.extend(nodes)
    graph, _ = assert_matches_onnxruntime(as_constants)
    assert list(graph.inputs) == ["x"]
    # Graph inputs that have an initializer (old exporters) are weights, not inputs.
    as_inputs = onnx.ModelProto()
    as_inputs.CopyFrom(model)
    as_inputs.ir_version = 3
    as_inputs.graph.input.extend([helper.make_tensor_value_info("w", TensorProto.FLOAT, w.shape),
                                  helper.make_tensor_value_info("b", TensorProto.FLOAT, b.shape)])
    assert list(workbench.load(as_inputs).inputs) == ["x"]


def test_external_data(tmp_path, rng):
    model, _, _ = conv_relu_model(rng)
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.weights", size_threshold=0)
    assert (tmp_path / "ext.weights").exists()
    graph = workbench.load(path)
    feeds = workbench.random_inputs(graph)
    ours = workbench.ReferenceExecutor(graph).run(feeds)
    from workbench.onnx_io.ort import run_onnxruntime
    np.testing.assert_allclose(ours["y"], run_onnxruntime(str(path), feeds)["y"], rtol=1e-5, atol=1e-5)
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(ModelFileError, match="external data"):
        workbench.load(path)


def test_all_unsupported_ops_in_one_error(rng):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"),
             helper.make_node("NonZero", ["a"], ["b"], name="nz1"),
             helper.make_node("TopK", ["x", "k"], ["c", "ci"], name="topk", axis=1),
             helper.make_node("NonZero", ["x"], ["d"], name="nz2"),
             helper.make_node("FusedConv", ["x"], ["e"], name="fc", domain="com.microsoft")]
    model = make_model(nodes, [("x", ["N", 4])], [("b", None), ("c", None), ("d", None), ("e", None)],
                       [("k", np.array([2], np.int64))])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    # Reported before anything else (here the symbolic batch has no value: that error must not win).
    with pytest.raises(UnsupportedOpsError) as info:
        workbench.load(model.SerializeToString())
    assert info.value.ops == {"NonZero": ["nz1", "nz2"], "TopK": ["topk"], "com.microsoft.FusedConv": ["fc"]}
    message = str(info.value)
    for word in ("NonZero", "nz1", "nz2", "TopK", "topk", "com.microsoft.FusedConv", "fc"):
        assert word in message


def test_truncated_garbage_empty_and_missing_files(tmp_path):
    data = zoo.build("tiny").SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        workbench.load(truncated)
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelFileError, match="notes.onnx"):
        workbench.load(text)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        workbench.load(empty)
    with pytest.raises(ModelFileError, match="no such file"):
        workbench.load(tmp_path / "missing.onnx")


def test_symbolic_dims_need_values(rng):
    model, _, _ = conv_relu_model(rng, batch_dim="batch", height="h", width="w")
    with pytest.raises(ShapeError, match=r"'x'.*dim 0.*'batch'"):
        workbench.load(model)
    with pytest.raises(ShapeError, match=r"'x'.*dim 2.*'h'.*resolution"):
        workbench.load(model, batch=3)
    graph = workbench.load(model, batch=3, resolution=(10, 12))
    assert graph.inputs["x"].shape == (3, 3, 10, 12)
    assert graph.spec("y").shape == (3, 4, 10, 12)   # pads 1,0 / 1,2 with a 3x3 kernel
    graph = workbench.load(model, shapes={"x": (1, 3, 7, 5)})
    assert graph.spec("y").shape == (1, 4, 7, 5)
    assert_matches_onnxruntime(model, batch=2, resolution=(9, 13))


def test_given_shape_must_agree_with_fixed_dims(rng):
    model, _, _ = conv_relu_model(rng)
    with pytest.raises(ShapeError, match="fixed to 9"):
        workbench.load(model, shapes={"x": (2, 3, 10, 11)})
    with pytest.raises(ShapeError, match="unknown input"):
        workbench.load(model, shapes={"image": (2, 3, 9, 11)})
    with pytest.raises(ShapeError, match="batch dim is fixed to 2"):
        workbench.load(model, batch=4)


def test_wrong_inputs_at_run(rng):
    model, _, _ = conv_relu_model(rng)
    run = workbench.ReferenceExecutor(workbench.load(model)).run
    good = np.zeros((2, 3, 9, 11), np.float32)
    with pytest.raises(InputError, match=r"'x': shape \(2, 3, 11, 9\), the model expects \(2, 3, 9, 11\)"):
        run({"x": good.reshape(2, 3, 11, 9)})
    with pytest.raises(InputError, match="'x': dtype float64"):
        run({"x": good.astype(np.float64)})
    with pytest.raises(InputError, match="unknown input name"):
        run({"x": good, "extra": good})
    with pytest.raises(InputError, match="missing input"):
        run({})


def test_inconsistent_shapes_name_the_node(rng):
    w = rng.standard_normal((4, 5, 3, 3)).astype(np.float32)   # expects 5 channels, gets 3
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv_12")],
                       [("x", [1, 3, 8, 8])], [("y", None)], [("w", w)])
    with pytest.raises(ShapeError, match=r"node 'conv_12' \(Conv\): input has 3 channels"):
        workbench.load(model)


def test_dynamic_values_are_a_clear_error():
    # Reshape whose target shape is computed from a second *input*: not static.
    model = make_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape_dyn")],
                       [("x", [2, 6]), ("s", [2], TensorProto.INT64)], [("y", None)])
    with pytest.raises(ModelImportError, match=r"'reshape_dyn' \(Reshape\).*shape.*run time"):
        workbench.load(model)


def test_graph_outputs_keep_their_names_through_identity_and_fusion(rng):
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["out_a"], name="id"),
             helper.make_node("Dropout", ["c"], ["out_b"], name="drop")]
    model = make_model(nodes, [("x", [1, 3, 5, 7])], [("out_a", None), ("out_b", None)], [("w", w)])
    graph, ours = assert_matches_onnxruntime(model)
    assert graph.outputs == ["out_a", "out_b"]
    assert graph.op_counts() == {"Conv": 1, "Relu": 1}   # conv output is read twice: Relu not fused


def test_every_symbolic_dim_of_every_input_in_one_error(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                        helper.make_node("Add", ["c", "mask"], ["y"], name="add")],
                       [("image", ["N", 3, "H", "W"]), ("mask", ["N", 4, "H", "W"])], [("y", None)], [("w", w)])
    with pytest.raises(ShapeError) as e:
        workbench.load(model)
    text = str(e.value)
    assert text.startswith("6 symbolic input dimension(s) have no value:")
    assert "'image' (N, 3, H, W): dim 0 'N' (batch), dim 2 'H' (resolution), dim 3 'W' (resolution)" in text
    assert "'mask' (N, 4, H, W): dim 0 'N' (batch), dim 2 'H' (resolution), dim 3 'W' (resolution)" in text
    assert "(Python: batch=N, resolution=R or (H, W))" in text
    assert "shapes={'image': (N, 3, H, W), 'mask': (N, 4, H, W)}" in text
    # Given only the batch, the same error lists just H and W of both inputs.
    with pytest.raises(ShapeError, match=r"^4 symbolic") as e:
        workbench.load(model, batch=2)
    assert "dim 0" not in str(e.value)
    # The keywords it names work, and agree with ONNX Runtime.
    assert_matches_onnxruntime(model, batch=2, resolution=(5, 7))
    assert_matches_onnxruntime(model, shapes={"image": (1, 3, 6, 4), "mask": (1, 4, 6, 4)})


def test_dims_other_than_batch_and_resolution_need_shape(rng):
    model = make_model([helper.make_node("Add", ["a", "b"], ["y"], name="add")],
                       [("a", ["N", "K"]), ("b", ["N", "K"])], [("y", None)])
    with pytest.raises(ShapeError) as e:
        workbench.load(model, batch=3)
    text = str(e.value)
    assert "'a' (N, K): dim 1 'K'" in text and "'b' (N, K): dim 1 'K'" in text
    assert "give them per input with --shape a=NxK --shape b=NxK" in text and "--batch N --resolution" not in text
    graph = workbench.load(model, shapes={"a": (3, 5), "b": (3, 5)})
    assert graph.spec("y").shape == (3, 5)


def test_exporters_long_dim_names_become_readable_placeholders_in_the_suggested_shape():
    # Paddle2ONNX names every free dim 'p2o.DynamicDimension.<k>': the suggested flag writes N, H, W.
    dims = ["p2o.DynamicDimension.0", 3, "p2o.DynamicDimension.1", "p2o.DynamicDimension.2"]
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [("x", dims)], [("y", None)])
    with pytest.raises(ShapeError) as e:
        workbench.load(model)
    text = str(e.value)
    assert "3 symbolic input dimension(s)" in text
    assert "--shape x=Nx3xHxW" in text and "shapes={'x': (N, 3, H, W)}" in text
    assert "--batch N --resolution R" in text
    graph = workbench.load(model, batch=2, resolution=(32, 48))
    assert graph.spec("y").shape == (2, 3, 32, 48)
