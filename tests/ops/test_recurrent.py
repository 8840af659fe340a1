"""GRU, RNN and LSTM against ONNX Runtime under hypothesis: directions, sequence lengths, initial
states, batch > 1, both layouts, omitted outputs, clip, GRU's linear_before_reset, and the
activations the ONNX spec lists with their alpha and beta."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import assert_matches_onnxruntime, make_model, relative_error
from workbench.onnx_io.ort import run_onnxruntime

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
PER_DIRECTION = {"LSTM": 3, "GRU": 2, "RNN": 1}
STATES = {"LSTM": 2, "GRU": 1, "RNN": 1}
#: Activations ONNX Runtime's CPU recurrent kernels compute (all the spec lists), with the number
#: of alpha and beta values each consumes.
ACTS = {"Sigmoid": (0, 0), "Tanh": (0, 0), "Relu": (0, 0), "Affine": (1, 1), "LeakyRelu": (1, 0),
        "ThresholdedRelu": (1, 0), "ScaledTanh": (1, 1), "HardSigmoid": (1, 1), "Elu": (1, 0), "Softsign": (0, 0),
        "Softplus": (0, 0)}


def recurrent_model(op, rng, seq, batch, inp, hid, direction, layout, lens, state, bias, outputs, acts=None,
                    scale=0.5, **attrs):
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op] * hid
    inits = [("W", (rng.standard_normal((dirs, g, inp)) * scale).astype(np.float32)),
             ("R", (rng.standard_normal((dirs, g, hid)) * scale).astype(np.float32))]
    names = ["x", "W", "R", "", "", "", "", ""]
    inputs = [("x", [seq, batch, inp] if layout == 0 else [batch, seq, inp])]
    if bias:
        inits.append(("B", (rng.standard_normal((dirs, 2 * g)) * 2 * scale).astype(np.float32)))
        names[3] = "B"
    if lens is not None:
        inits.append(("lens", np.asarray(lens, np.int32)))
        names[4] = "lens"
    if state:
        shape = [dirs, batch, hid] if layout == 0 else [batch, dirs, hid]
        for k, s in enumerate(("h0", "c0")[:STATES[op]]):
            inputs.append((s, shape))
            names[5 + k] = s
    while names[-1] == "":
        names.pop()
    outs = [o if o in outputs else "" for o in ("y", "yh", "yc")[:1 + STATES[op]]]
    while outs[-1] == "":
        outs.pop()
    if acts is not None:
        attrs["activations"] = [a for a, _, _ in acts]
        alphas = [v for _, al, _ in acts for v in al]
        betas = [v for _, _, be in acts for v in be]
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
    node = helper.make_node(op, names, outs, name="rnn", hidden_size=hid, direction=direction, layout=layout, **attrs)
    return make_model([node], inputs, [(o, None) for o in outs if o], inits, opset=14)


@st.composite
def cases(draw, op):
    direction = draw(st.sampled_from(["forward", "reverse", "bidirectional"]))
    batch, seq = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    lens = draw(st.one_of(st.none(), st.lists(st.integers(1, seq), min_size=batch, max_size=batch)))
    outputs = draw(st.sampled_from([("y", "yh", "yc"), ("yh",), ("y",), ("yc",) if op == "LSTM" else ("y", "yh")]))
    return dict(seq=seq, batch=batch, inp=draw(st.integers(1, 5)), hid=draw(st.integers(1, 7)), direction=direction,
                layout=draw(st.sampled_from([0, 1])), lens=lens, state=draw(st.booleans()), bias=draw(st.booleans()),
                outputs=outputs, seed=draw(st.integers(0, 2 ** 16)))


def _check(op, case, **attrs):
    """Against ONNX Runtime; a batch-first (layout 1) model, which ONNX Runtime runs for LSTM
    only, against its sequence-first twin on the transposed inputs, the outputs transposed back."""
    seed = case.pop("seed")
    model = recurrent_model(op, np.random.default_rng(seed), **case, **attrs)
    if case["layout"] == 0:
        assert_matches_onnxruntime(model)
        return
    twin = recurrent_model(op, np.random.default_rng(seed), **{**case, "layout": 0}, **attrs)
    graph = workbench.load(model.SerializeToString())
    feeds = workbench.random_inputs(graph, seed=0)
    ours = workbench.ReferenceExecutor(graph).run(feeds)
    theirs = run_onnxruntime(twin, {k: v.transpose(1, 0, 2) for k, v in feeds.items()})
    assert set(ours) == set(theirs)
    for name, ref in theirs.items():
        ref = ref.transpose(2, 0, 1, 3) if name == "y" else ref.transpose(1, 0, 2)
        assert ours[name].shape == ref.shape and relative_error(ours[name], ref) <= 1e-4, name


@settings(max_examples=40, deadline=None)
@given(case=cases("GRU"), lbr=st.sampled_from([0, 1]), clip=st.sampled_from([None, 0.8]))
def test_gru_matches_onnxruntime(case, lbr, clip):
    _check("GRU", case, linear_before_reset=lbr, **({} if clip is None else {"clip": clip}))


@settings(max_examples=30, deadline=None)
@given(case=cases("RNN"), clip=st.sampled_from([None, 0.8]))
def test_rnn_matches_onnxruntime(case, clip):
    _check("RNN", case, **({} if clip is None else {"clip": clip}))


@settings(max_examples=30, deadline=None)
@given(case=cases("LSTM"), clip=st.sampled_from([None, 0.8]), input_forget=st.sampled_from([0, 1]))
def test_lstm_matches_onnxruntime(case, clip, input_forget):
    _check("LSTM", case, input_forget=input_forget, **({} if clip is None else {"clip": clip}))


@st.composite
def activations(draw, op, dirs):
    acts = []
    for _ in range(PER_DIRECTION[op] * dirs):
        name = draw(st.sampled_from(sorted(ACTS)))
        na, nb = ACTS[name]
        acts.append((name, [draw(st.sampled_from([0.3, 0.7, 1.6]))] * na, [draw(st.sampled_from([-0.2, 0.4]))] * nb))
    return acts


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(["LSTM", "GRU", "RNN"]), direction=st.sampled_from(["forward", "bidirectional"]),
       data=st.data(), seed=st.integers(0, 2 ** 16))
def test_every_activation_with_its_alpha_and_beta(op, direction, data, seed):
    acts = data.draw(activations(op, 2 if direction == "bidirectional" else 1))
    rng = np.random.default_rng(seed)
    # small weights: unbounded activations (affine, softplus) as gates would otherwise let the
    # state grow past float32 within a few steps, where infinities meet in the products
    model = recurrent_model(op, rng, 4, 2, 3, 5, direction, 0, None, True, True, ("y", "yh"), acts=acts, scale=0.15)
    graph = workbench.load(model.SerializeToString())
    feeds = workbench.random_inputs(graph, seed=0)
    ours, theirs = workbench.ReferenceExecutor(graph).run(feeds), run_onnxruntime(model, feeds)
    for name, ref in theirs.items():   # an absolute floor: a gate may scale a state down to ~1e-6
        np.testing.assert_allclose(ours[name], ref, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("op", ["GRU", "RNN"])
def test_default_parameters_of_the_activations(op):
    """Activations named without activation_alpha/beta take their ONNX defaults."""
    rng = np.random.default_rng(5)
    acts = [("LeakyRelu", [], []), ("HardSigmoid", [], [])][:PER_DIRECTION[op]]
    model = recurrent_model(op, rng, 4, 2, 3, 5, "forward", 0, None, False, True, ("y", "yh"), acts=acts)
    assert_matches_onnxruntime(model)


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(["GRU", "RNN"]), case=st.data(), lbr=st.sampled_from([0, 1]), threads=st.sampled_from([1, 2]),
       algo=st.sampled_from(["direct", "steps_dirs", "steps_split"]))
def test_the_fast_routines_match_the_reference(op, case, lbr, threads, algo):
    """``cpu:float32:nchw/direct`` of GRU and RNN (routines/recurrent_gru.py) and the C step
    kernels (``steps_dirs``, ``steps_split``: routines/recurrent_gru_steps.py; the GRU with
    linear_before_reset 1) against the NumPy reference inside a compiled model: directions,
    batch, initial states, omitted outputs, hidden sizes across the kernel's 32-unit blocks."""
    from routine_helpers import assert_routine_matches
    from workbench import routines
    c = case.draw(cases(op))
    c.update(layout=0, lens=None)
    if algo != "direct":
        c["hid"] = case.draw(st.sampled_from([1, 5, 32, 33, 70]))
    rng = np.random.default_rng(c.pop("seed"))
    model = recurrent_model(op, rng, **c, **({"linear_before_reset": lbr} if op == "GRU" else {}))
    graph = workbench.load(model.SerializeToString())
    descriptor = f"cpu:float32:nchw/{algo}"
    layer = graph.layer("rnn")
    applies = routines.get(op, descriptor).applies(layer, graph.input_specs(layer))
    if algo != "direct" and op == "GRU" and lbr == 0:
        assert not applies   # r scales h before its product: not the step kernel's form
        return
    assert applies
    assert_routine_matches(graph, descriptor, expect_layers=["rnn"], num_threads=threads)
