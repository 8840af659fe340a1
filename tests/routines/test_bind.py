"""Bound steps (``Routine.bind``): the executor's kernel calls checked once, on its own buffers.

Every routine that binds must compute exactly what its ``run`` computes (the profiler and any
caller without an executor still go through ``run``), on the same graphs, bit for bit; a bound
step must really be used by the executor; and binding refuses arrays that do not fit."""
import numpy as np
import pytest

import workbench
from routine_helpers import conv_graph, run_with_routine
from workbench.runtime import cpu
from workbench import routines
from workbench.tuning.precision import tolerance

#: One (op, descriptor) per routine class that binds.
BINDING = sorted({r: (op, d) for op, d, r in routines.all_routines()
                  if r.bind.__func__ is not routines.Routine.bind.__func__}.values())


def _graphs():
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((24, 20, 1, 1)).astype(np.float32)
    dw = rng.standard_normal((20, 1, 3, 3)).astype(np.float32)
    yield "conv1x1", conv_graph([1, 20, 9, 13], w1, rng.standard_normal(24).astype(np.float32),
                                activation="HardSwish")
    yield "conv1x1_residual", conv_graph([1, 20, 9, 13], rng.standard_normal((20, 20, 1, 1)).astype(np.float32),
                                         residual=True, activation="Relu")
    yield "conv3x3", conv_graph([1, 20, 9, 13], rng.standard_normal((12, 20, 3, 3)).astype(np.float32),
                                rng.standard_normal(12).astype(np.float32), dict(pads=[1, 1, 1, 1]),
                                residual=True, activation="LeakyRelu")
    # channels in whole AMX tiles (implicit_amx), a row of 13 pixels: tiles end inside rows
    yield "conv3x3_c32", conv_graph([1, 32, 7, 13], rng.standard_normal((40, 32, 3, 3)).astype(np.float32),
                                    rng.standard_normal(40).astype(np.float32), dict(pads=[1, 1, 1, 1]),
                                    activation="Relu")
    yield "depthwise", conv_graph([2, 20, 11, 17], dw, rng.standard_normal(20).astype(np.float32),
                                  dict(group=20, pads=[1, 1, 1, 1], strides=[2, 1]), activation="Clip")
    from onnx import TensorProto, helper, numpy_helper
    from onnx_helpers import make_model
    consts = [("s", rng.standard_normal((1, 8, 1, 1)).astype(np.float32)),
              ("t", rng.standard_normal((1, 8, 1, 1)).astype(np.float32)),
              ("r", rng.standard_normal((1, 1, 1, 5)).astype(np.float32))]
    nodes = [helper.make_node("Relu", ["x"], ["x0"]),   # on the graph input: a layer of its own
             helper.make_node("Mul", ["x0", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["a"]),
             helper.make_node("HardSigmoid", ["a"], ["h"], alpha=0.3, beta=0.4),
             helper.make_node("Mul", ["h", "r"], ["b"]), helper.make_node("Sub", ["b", "x"], ["y"])]
    model = make_model(nodes, [("x", [1, 8, 6, 5])], [("y", None), ("b", None)], consts)   # b: Sub stays a layer
    yield "eltwise", workbench.load(model.SerializeToString())
    nodes = [helper.make_node("Mul", ["x", "g"], ["m"]), helper.make_node("Add", ["x", "m"], ["a"]),
             helper.make_node("Sub", ["a", "z"], ["d"]), helper.make_node("Relu", ["d"], ["y"])]
    model = make_model(nodes, [("x", [1, 8, 6, 5]), ("g", [1, 8, 1, 1]), ("z", [1, 8, 6, 5])], [("y", None)])
    yield "eltwise_chain", workbench.load(model.SerializeToString())
    consts = [("w", rng.standard_normal((20, 7)).astype(np.float32)),
              ("g", rng.standard_normal((9, 7)).astype(np.float32)), ("c", rng.standard_normal(9).astype(np.float32))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Reshape", ["m", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "g", "c"], ["q"], transB=1), helper.make_node("Relu", ["q"], ["y"])]
    consts.append(("shape", np.array([6, 7], np.int64)))
    model = make_model(nodes, [("x", [1, 6, 20])], [("y", None)], consts)
    yield "matmul_gemm", workbench.load(model.SerializeToString())
    consts = [("g", rng.standard_normal(20).astype(np.float32)), ("h", rng.standard_normal(20).astype(np.float32))]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "h"], ["y"], axis=-1, epsilon=1e-5)]
    model = make_model(nodes, [("x", [1, 6, 20])], [("y", None)], consts)
    yield "layernorm", workbench.load(model.SerializeToString())
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
             helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Sigmoid", ["b"], ["sb"]),
             helper.make_node("Concat", ["sb", "ra", "x"], ["y"], axis=1)]
    model = make_model(nodes, [("x", [1, 8, 6, 5])], [("y", None)], [("sizes", np.array([3, 5], np.int64))])
    yield "split_concat", workbench.load(model.SerializeToString())
    consts = [("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)), ("starts", np.array([1, 0], np.int64)),
              ("ends", np.array([7, 9], np.int64)), ("axes", np.array([2, 3], np.int64)),
              ("roi", np.zeros(0, np.float32)), ("scales", np.array([1, 1, 2, 1.5], np.float32))]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
             helper.make_node("Slice", ["p", "starts", "ends", "axes"], ["s"]),
             helper.make_node("Resize", ["s", "roi", "scales"], ["y"], mode="nearest")]
    model = make_model(nodes, [("x", [1, 6, 5, 7])], [("y", None)], consts)
    yield "pad_slice_resize", workbench.load(model.SerializeToString())
    consts = [("W", rng.standard_normal((2, 32, 6)).astype(np.float32)),
              ("R", rng.standard_normal((2, 32, 8)).astype(np.float32)), ("B", rng.standard_normal((2, 64)).astype(np.float32))]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "yh", "yc"], hidden_size=8, direction="bidirectional")]
    model = make_model(nodes, [("x", [5, 2, 6])], [("y", None), ("yh", None), ("yc", None)], consts, opset=14)
    yield "lstm", workbench.load(model.SerializeToString())
    for op, gates, extra in (("GRU", 3, {"linear_before_reset": 1}), ("RNN", 1, {})):
        consts = [("W", rng.standard_normal((2, 8 * gates, 6)).astype(np.float32) * 0.5),
                  ("R", rng.standard_normal((2, 8 * gates, 8)).astype(np.float32) * 0.5),
                  ("B", rng.standard_normal((2, 16 * gates)).astype(np.float32))]
        nodes = [helper.make_node(op, ["x", "W", "R", "B"], ["y", "yh"], hidden_size=8, direction="bidirectional", **extra)]
        model = make_model(nodes, [("x", [5, 2, 6])], [("y", None), ("yh", None)], consts, opset=14)
        yield op.lower(), workbench.load(model.SerializeToString())
    nodes = [helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")]
    model = make_model(nodes, [("x", [1, 8, 5, 7])], [("y", None)],   # whole groups of 4 uint8 channels
                       [("scales", np.array([1, 1, 2, 2], np.float32))], opset=9)
    yield "upsample", workbench.load(model.SerializeToString())
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]), helper.make_node("Softmax", ["t"], ["p"], axis=1),
             helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[1, 1])]
    model = make_model(nodes, [("x", [1, 4, 16, 300])], [("y", None)],
                       [("w", np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1))])
    yield "softmax_dot", workbench.load(model.SerializeToString())
    # an If on a run-time flag: a branch that is a Sigmoid, and one that is a constant
    then = helper.make_graph([helper.make_node("Sigmoid", ["x"], ["s"])], "then", [],
                             [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)])
    other = helper.make_graph([], "else", [], [helper.make_tensor_value_info("half", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.full((2, 7), 0.5, np.float32), "half")])
    nodes = [helper.make_node("If", ["flag"], ["y"], then_branch=then, else_branch=other)]
    model = make_model(nodes, [("x", [2, 7]), ("flag", [], TensorProto.BOOL)], [("y", None)], opset=16)
    yield "if", workbench.load(model.SerializeToString())


GRAPHS = dict(_graphs())


def test_some_routines_bind():
    """The kernels most steps run bind (the list the tests below cover)."""
    descriptors = {d for _, d in BINDING}
    assert {"cpu:float32:nhwc/direct", "cpu:float32:nchw/direct"} <= descriptors
    if cpu.supports("avx512"):
        assert {"cpu:float32:nhwc/gemm1x1_avx512", "cpu:float32:nhwc/depthwise_avx512"} <= descriptors


@pytest.mark.parametrize("op, descriptor", BINDING)
@pytest.mark.parametrize("threads", [1, 2])
def test_bound_steps_match_run_bit_for_bit(monkeypatch, op, descriptor, threads):
    routine = routines.get(op, descriptor)
    isa = getattr(routine, "isa", None)
    if isa is not None and not cpu.supports(isa):
        pytest.skip(f"{descriptor} needs {isa}")
    graphs = [(n, g) for n, g in GRAPHS.items()
              if any(descriptor in routines.routines_for(l.op)
                     and routines.get(l.op, descriptor).bind.__func__ is routine.bind.__func__
                     and (l.op == op or routines.get(l.op, descriptor) is routine)   # the class patched
                     and routines.get(l.op, descriptor).applies(l, g.input_specs(l)) for l in g)]
    assert graphs, f"no test graph has a layer {descriptor} ({op}) takes"
    calls = []
    real_bind = routine.bind.__func__

    def counting_bind(cls, *args):
        call = real_bind(cls, *args)
        calls.append(call)
        return call
    for name, graph in graphs:
        monkeypatch.setattr(routine, "bind", classmethod(counting_bind))
        bound, ref, used = run_with_routine(graph, descriptor, num_threads=threads, seed=3)
        assert used and any(c is not None for c in calls), (name, used)
        monkeypatch.setattr(routine, "bind", classmethod(lambda cls, *a: None))
        unbound, _, _ = run_with_routine(graph, descriptor, num_threads=threads, seed=3)
        for out in ref:
            np.testing.assert_array_equal(bound[out], unbound[out], err_msg=f"{name}: {out}")
            scale = max(float(np.abs(ref[out]).max()), 1e-6)
            # bfloat16 routines: within the tolerance their rounding allows; qint8 ones: the
            # input's 8-bit steps summed over a window, against a peak that a Clip may cut to
            # 0.9 (tests/routines/test_qint8.py checks them to the integer)
            rtol = tolerance(len(used)) if ":bfloat16:" in descriptor else 0.15 if ":qint8:" in descriptor else 1e-4
            assert float(np.abs(bound[out] - ref[out]).max()) / scale < rtol


def test_binding_refuses_arrays_that_do_not_fit():
    k = cpu.kernel_module("eltwise")
    a, out = np.zeros(12, np.float32), np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="out has 12 elements"):
        k.Binary(a, a, out, [1, 1, 2, 3], [0, 0, 3, 1], [0, 0, 3, 1], "Add")
    with pytest.raises(ValueError, match="C == cols"):
        k.ChannelRows(a, out, 3, 4, False, np.ones(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="float32"):
        k.ChannelRows(a.astype(np.float64), out, 3, 4, True)
    dw = cpu.kernel_module("depthwise")
    x = np.zeros((1, 5, 5, 4), np.float32)
    with pytest.raises(ValueError, match="output has shape"):
        dw.Nhwc(x, np.zeros((9, 4), np.float32), np.zeros(4, np.float32), np.zeros((1, 5, 5, 3), np.float32),
                3, (1, 1), (1, 1, 1, 1))
