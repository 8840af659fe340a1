"""LSTM against ONNX Runtime: directions, bias, initial state, sequence lengths, peepholes,
input_forget, clip, batch-first layout, omitted outputs; and the errors for what is not supported."""
import numpy as np
import pytest
from onnx import helper

import workbench
from onnx_helpers import assert_matches_onnxruntime, make_model
from workbench.onnx_io.ort import run_onnxruntime
from workbench.errors import ModelImportError


def lstm_model(rng, seq=5, batch=3, inp=4, hid=6, direction="forward", bias=True, state=False, lens=None,
               peep=False, layout=0, outputs=("y", "yh", "yc"), **attrs):
    dirs = 2 if direction == "bidirectional" else 1
    inits = [("W", (rng.standard_normal((dirs, 4 * hid, inp)) * 0.5).astype(np.float32)),
             ("R", (rng.standard_normal((dirs, 4 * hid, hid)) * 0.5).astype(np.float32))]
    names = ["x", "W", "R", "", "", "", "", ""]
    inputs = [("x", [seq, batch, inp] if layout == 0 else [batch, seq, inp])]
    if bias:
        inits.append(("B", rng.standard_normal((dirs, 8 * hid)).astype(np.float32)))
        names[3] = "B"
    if lens is not None:
        inits.append(("lens", np.asarray(lens, np.int32)))
        names[4] = "lens"
    if state:
        shape = [dirs, batch, hid] if layout == 0 else [batch, dirs, hid]
        inputs += [("h0", shape), ("c0", shape)]
        names[5], names[6] = "h0", "c0"
    if peep:
        inits.append(("P", rng.standard_normal((dirs, 3 * hid)).astype(np.float32)))
        names[7] = "P"
    while names[-1] == "":
        names.pop()
    outs = [o if o in outputs else "" for o in ("y", "yh", "yc")]
    while outs[-1] == "":
        outs.pop()
    node = helper.make_node("LSTM", names, outs, name="lstm", hidden_size=hid, direction=direction, layout=layout,
                            **attrs)
    return make_model([node], inputs, [(o, None) for o in outs if o], inits, opset=14)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_directions(direction):
    rng = np.random.default_rng(0)
    assert_matches_onnxruntime(lstm_model(rng, direction=direction, state=True), rtol=1e-5)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_batch_first_layout_is_the_transposed_sequence_first_one(direction):
    """ONNX Runtime refuses layout 1: ORT on the layout-0 model with the same weights, fed and
    read transposed, is the reference."""
    seq_first = lstm_model(np.random.default_rng(4), direction=direction, state=True)
    batch_first = lstm_model(np.random.default_rng(4), direction=direction, state=True, layout=1)
    rng = np.random.default_rng(5)
    x, h0, c0 = (rng.standard_normal(s).astype(np.float32) for s in ((3, 5, 4), (3, 2 if direction != "forward" else 1, 6),
                                                                       (3, 2 if direction != "forward" else 1, 6)))
    ours = workbench.ReferenceExecutor(workbench.load(batch_first.SerializeToString())).run(
        {"x": x, "h0": h0, "c0": c0})
    ref = run_onnxruntime(seq_first, {"x": x.transpose(1, 0, 2), "h0": h0.transpose(1, 0, 2),
                                      "c0": c0.transpose(1, 0, 2)})
    np.testing.assert_allclose(ours["y"], ref["y"].transpose(2, 0, 1, 3), rtol=1e-5, atol=1e-6)
    for k in ("yh", "yc"):
        np.testing.assert_allclose(ours[k], ref[k].transpose(1, 0, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_sequence_lengths_stop_each_sequence_where_it_ends(direction):
    rng = np.random.default_rng(1)
    assert_matches_onnxruntime(lstm_model(rng, direction=direction, lens=[5, 2, 4], state=True), rtol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(peep=True), dict(input_forget=1), dict(clip=0.7), dict(bias=False),
                                    dict(outputs=("yh",)), dict(outputs=("y",))])
def test_lstm_options(kwargs):
    rng = np.random.default_rng(2)
    assert_matches_onnxruntime(lstm_model(rng, direction="bidirectional", **kwargs), rtol=1e-5)


def test_lstm_unknown_activations_are_named():
    rng = np.random.default_rng(3)
    model = lstm_model(rng, activations=["Swish", "Tanh", "Tanh"])
    with pytest.raises(ModelImportError, match=r"'lstm' \(LSTM\).*activation.*swish"):
        workbench.load(model.SerializeToString())
    model = lstm_model(rng, activations=["Sigmoid", "Tanh"])
    with pytest.raises(ModelImportError, match=r"'lstm' \(LSTM\).*3 function\(s\) per direction"):
        workbench.load(model.SerializeToString())


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("batch, state, outputs", [(1, False, ("y", "yh", "yc")), (3, True, ("y", "yh", "yc")),
                                                   (2, True, ("yh",)), (1, False, ("y",))])
@pytest.mark.parametrize("threads", [1, 2])
def test_lstm_routine_matches_the_reference(direction, batch, state, outputs, threads):
    from routine_helpers import assert_routine_matches
    rng = np.random.default_rng(6)
    model = lstm_model(rng, seq=7, batch=batch, inp=5, hid=16, direction=direction, state=state, outputs=outputs)
    graph = workbench.load(model.SerializeToString())
    assert_routine_matches(graph, "cpu:float32:nchw/direct", rtol=1e-5, expect_layers=["lstm"], num_threads=threads)


STEPS = ["cpu:float32:nchw/steps_dirs", "cpu:float32:nchw/steps_split", "cpu:bfloat16:nchw/steps_dirs_f32io",
         "cpu:bfloat16:nchw/steps_split_f32io"]


def _offered(descriptor):
    from workbench import routines
    routines.load_all()
    return routines.get("LSTM", descriptor).available()


@pytest.mark.parametrize("descriptor", STEPS)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("batch, state, outputs, hid", [(1, False, ("y", "yh", "yc"), 16), (3, True, ("y", "yh", "yc"), 40),
                                                        (2, True, ("yh",), 33), (1, False, ("y",), 96)])
@pytest.mark.parametrize("threads", [1, 2])
def test_lstm_step_kernels_match_the_reference(descriptor, direction, batch, state, outputs, hid, threads):
    """The whole recurrence in C, one direction per thread or each step's blocks of units split
    over the threads: hidden sizes that fill no block (16), end inside one (40, 33: odd, so the
    bfloat16 pairs end in padding) and span several (96)."""
    if not _offered(descriptor):
        pytest.skip(f"{descriptor} is not offered on this machine")
    from routine_helpers import assert_routine_matches
    rng = np.random.default_rng(9)
    model = lstm_model(rng, seq=7, batch=batch, inp=5, hid=hid, direction=direction, state=state, outputs=outputs)
    graph = workbench.load(model.SerializeToString())
    kwargs = dict(rtol=1e-5) if ":float32:" in descriptor else {}
    assert_routine_matches(graph, descriptor, expect_layers=["lstm"], num_threads=threads, **kwargs)


def test_lstm_step_kernel_packs_and_checks_its_arguments():
    """pack_steps' layout read back by a NumPy loop of the same recurrence; bad arrays refused
    with their names before any kernel runs."""
    from workbench.routines.recurrent_steps import _steps_kernel
    k = _steps_kernel(False)
    if k is None:
        pytest.skip("no AVX-512 build of the recurrent kernels")
    rng = np.random.default_rng(10)
    hid, seq, batch = 37, 4, 2
    r = rng.standard_normal((4 * hid, hid)).astype(np.float32) * 0.3
    xw = rng.standard_normal((seq, batch, 4 * hid)).astype(np.float32)
    h0, c0 = rng.standard_normal((batch, hid)).astype(np.float32), rng.standard_normal((batch, hid)).astype(np.float32)
    h, c, y = h0.copy(), c0.copy(), np.zeros((seq, batch, hid), np.float32)
    k.LstmSteps([dict(r=k.pack_steps(r, False), xw=xw, h=h, c=c, y=y, reverse=True)], False).steps(1)
    sig = lambda v: 1 / (1 + np.exp(-v.astype(np.float64)))
    hh, cc = h0.astype(np.float64), c0.astype(np.float64)
    for s in reversed(range(seq)):
        g = hh @ r.T.astype(np.float64) + xw[s]
        i, o, f, cn = sig(g[:, :hid]), sig(g[:, hid:2 * hid]), sig(g[:, 2 * hid:3 * hid]), np.tanh(g[:, 3 * hid:])
        cc = f * cc + i * cn
        hh = o * np.tanh(cc)
        np.testing.assert_allclose(y[s], hh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, hh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, cc, rtol=1e-5, atol=1e-6)
    good = dict(r=k.pack_steps(r, False), xw=xw, h=h, c=c, y=y)
    with pytest.raises(ValueError, match="r must be a C-contiguous float32 array"):
        k.LstmSteps([dict(good, r=np.zeros((2, 3), np.float32))], False)
    with pytest.raises(ValueError, match="c must have shape"):
        k.LstmSteps([dict(good, c=np.zeros((batch, hid + 1), np.float32))], False)
    with pytest.raises(ValueError, match="y must have shape"):
        k.LstmSteps([dict(good, y=np.zeros((seq + 1, batch, hid), np.float32))], False)
    with pytest.raises(ValueError, match="one or two directions"):
        k.LstmSteps([good] * 3, False)
    with pytest.raises(ValueError, match=r"R must have shape \(4 hidden, hidden\)"):
        k.pack_steps(r[:, :-1], False)


def test_gru_step_kernel_against_a_numpy_loop_and_its_checks():
    """The GRU (linear_before_reset 1) on the LSTM's step kernel: 3 gates a unit, Rb's h rows
    apart, against a float64 NumPy loop; what it refuses (bfloat16, a missing rb, an unknown
    kind) named before any kernel runs."""
    from workbench.routines.recurrent_steps import _steps_kernel
    k = _steps_kernel(False)
    if k is None:
        pytest.skip("no AVX-512 build of the recurrent kernels")
    rng = np.random.default_rng(11)
    hid, seq, batch = 45, 5, 3
    r = rng.standard_normal((3 * hid, hid)).astype(np.float32) * 0.3
    xw = rng.standard_normal((seq, batch, 3 * hid)).astype(np.float32)
    rb = rng.standard_normal(hid).astype(np.float32)
    h0 = rng.standard_normal((batch, hid)).astype(np.float32)
    h, y = h0.copy(), np.zeros((seq, batch, hid), np.float32)
    k.RecurrentSteps([dict(r=k.pack_steps(r, False, 3), xw=xw, h=h, rb=rb, y=y)], False, "gru").steps(2, True)
    sig = lambda v: 1 / (1 + np.exp(-v))
    hh = h0.astype(np.float64)
    for s in range(seq):
        p = hh @ r.T.astype(np.float64)
        z, rr = sig(xw[s][:, :hid] + p[:, :hid]), sig(xw[s][:, hid:2 * hid] + p[:, hid:2 * hid])
        n = np.tanh(xw[s][:, 2 * hid:] + rr * (p[:, 2 * hid:] + rb))
        hh = (1 - z) * n + z * hh
        np.testing.assert_allclose(y[s], hh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, hh, rtol=1e-5, atol=1e-6)
    good = dict(r=k.pack_steps(r, False, 3), xw=xw, h=h, rb=rb, y=y)
    with pytest.raises(ValueError, match="no bfloat16 steps for kind 'gru'"):
        k.RecurrentSteps([good], True, "gru")
    with pytest.raises(ValueError, match="no steps for kind 'lru'"):
        k.RecurrentSteps([good], False, "lru")
    with pytest.raises(ValueError, match="rb must have shape"):
        k.RecurrentSteps([dict(good, rb=np.zeros(hid + 1, np.float32))], False, "gru")
    with pytest.raises(ValueError, match=r"xw must have shape"):
        k.RecurrentSteps([dict(good, xw=np.zeros((seq, batch, 4 * hid), np.float32))], False, "gru")
    with pytest.raises(ValueError, match="3 gates in bfloat16 are not packed"):
        k.pack_steps(r, True, 3)


def test_lstm_routine_leaves_sequence_lengths_and_peepholes_to_the_reference():
    from workbench import routines
    rng = np.random.default_rng(7)
    for kwargs in (dict(lens=[5, 2, 4]), dict(peep=True), dict(clip=0.5), dict(input_forget=1),
                   dict(activations=["HardSigmoid", "Tanh", "Tanh"])):
        graph = workbench.load(lstm_model(rng, **kwargs).SerializeToString())
        layer = graph.layer("lstm")
        assert [r.algo for r in routines.applicable(graph, layer)] == ["reference"], kwargs


def test_lstm_cell_kernel_checks_its_arguments():
    from workbench.routines.eltwise import kernels
    k = kernels("recurrent")
    g, c, h, t = np.zeros((2, 16), np.float32), np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32), \
        np.zeros((2, 4), np.float32)
    y = np.zeros((3, 2, 4), np.float32)
    cell = k.LstmCell(g, c, h, t, y)
    cell(2)   # all gates 0: i = o = f = 0.5, c~ = 0 -> c stays 0, h = 0.5 tanh(0) = 0
    np.testing.assert_array_equal(y, 0)
    with pytest.raises(IndexError, match="step 3"):
        cell(3)
    with pytest.raises(ValueError, match="g must have shape"):
        k.LstmCell(np.zeros((2, 15), np.float32), c, h, t, y)
    with pytest.raises(TypeError, match="float32"):
        k.LstmCell(g, c.astype(np.float64), h, t, y)
    with pytest.raises(ValueError, match="y must have shape"):
        k.LstmCell(g, c, h, t, np.zeros((3, 1, 4), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        k.LstmCell(g, c, h, t, np.zeros((3, 2, 8), np.float32)[:, :, ::2])


BF16_NATIVE = __import__("workbench.routines.conv_bf16", fromlist=["_kernels"])._kernels() is not None


@pytest.mark.skipif(not BF16_NATIVE, reason="this CPU lacks AVX512-BF16")
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("batch, state, outputs, hid", [(1, False, ("y", "yh", "yc"), 16), (3, True, ("y", "yh", "yc"), 40),
                                                        (2, True, ("yh",), 16), (1, False, ("y",), 96)])
@pytest.mark.parametrize("threads", [1, 2])
def test_bfloat16_lstm_routine_matches_the_reference(direction, batch, state, outputs, hid, threads):
    """The products on the bfloat16 GEMM, gates and states in float32: within the tolerance of the
    rounding its error weight declares (W, R, x and each step's h rounded)."""
    from routine_helpers import assert_routine_matches
    rng = np.random.default_rng(8)
    model = lstm_model(rng, seq=7, batch=batch, inp=5, hid=hid, direction=direction, state=state, outputs=outputs)
    graph = workbench.load(model.SerializeToString())
    assert_routine_matches(graph, "cpu:bfloat16:nchw/direct_f32io", expect_layers=["lstm"], num_threads=threads)
