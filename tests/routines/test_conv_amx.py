"""The AMX convolutions (``cpu:bfloat16:nhwc/gemm1x1_amx``, ``im2col_amx``, ``implicit_amx`` and
their float32-edged forms) on whole Conv layers: within the tolerance of their rounding of the reference, and within
float32 summation-order error of the VDPBF16PS routine with the same edges (the same bfloat16
operands and float32 sums, added in another order); NaN and infinity reach their pixels."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from routine_helpers import assert_routine_matches, conv_graph, run_with_routine
from workbench import routines
from workbench.runtime import cpu

AMX = cpu.kernel_module("gemm_bf16", "amx")
pytestmark = pytest.mark.skipif(AMX is None or not AMX.available, reason="this CPU (or kernel) lacks AMX-BF16")
EDGES = ["", "_f32out", "_f32in", "_f32io"]


def test_every_form_is_registered_and_available():
    conv = {d for d in routines.routines_for("Conv") if "_amx" in d and ":bfloat16:" in d}
    assert conv == {f"cpu:bfloat16:nhwc/{a}{e}" for a in ("gemm1x1_amx", "im2col_amx", "implicit_amx") for e in EDGES}
    assert all(routines.get("Conv", d).available() for d in conv)


def _compare_with_vnni(g, algo, edge):
    ours, _, used = run_with_routine(g, f"cpu:bfloat16:nhwc/{algo}_amx{edge}", layers=["conv"])
    assert used == ["conv"]
    vnni, _, _ = run_with_routine(g, f"cpu:bfloat16:nhwc/{algo}_bf16{edge}", layers=["conv"])
    for name, v in vnni.items():
        a, b = ours[name].astype(np.float64), v.astype(np.float64)
        # float32 sums in another order; a bfloat16 output may round to the neighbouring value
        step = 1e-5 if edge in ("_f32out", "_f32io") else 2.0 ** -7
        assert np.abs(a - b).max() <= step * np.abs(b).max() + 1e-6, (name, np.abs(a - b).max())


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(edge=st.sampled_from(EDGES), c=st.integers(1, 80), m=st.integers(1, 70), h=st.integers(1, 12),
       w=st.integers(1, 40), activation=st.sampled_from([None, "Relu", "HardSwish", "Sigmoid"]),
       residual=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_1x1_matches_the_reference_and_the_vnni_routine(edge, c, m, h, w, activation, residual, seed):
    rng = np.random.default_rng(seed)
    wt = (rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    g = conv_graph((1, c, h, w), wt, rng.standard_normal(m).astype(np.float32), activation=activation,
                   residual=residual)
    assert_routine_matches(g, f"cpu:bfloat16:nhwc/gemm1x1_amx{edge}", expect_layers=["conv"], seed=seed)
    _compare_with_vnni(g, "gemm1x1", edge)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(edge=st.sampled_from(EDGES), c=st.integers(1, 40), m=st.integers(1, 50), h=st.integers(3, 14),
       k=st.sampled_from([1, 2, 3, 5]), s=st.sampled_from([1, 2]), pad=st.integers(0, 2), d=st.sampled_from([1, 2]),
       activation=st.sampled_from([None, "Relu", "Clip"]), seed=st.integers(0, 2 ** 16))
def test_im2col_matches_the_reference_and_the_vnni_routine(edge, c, m, h, k, s, pad, d, activation, seed):
    if h + 2 * pad < d * (k - 1) + 1 or (k == 1 and s == 1 and pad == 0):
        return
    rng = np.random.default_rng(seed)
    wt = (rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    g = conv_graph((1, c, h, h + 3), wt, rng.standard_normal(m).astype(np.float32),
                   attrs=dict(strides=[s, s], pads=[pad] * 4, dilations=[d, d]), activation=activation)
    assert_routine_matches(g, f"cpu:bfloat16:nhwc/im2col_amx{edge}", expect_layers=["conv"], seed=seed)
    _compare_with_vnni(g, "im2col", edge)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(edge=st.sampled_from(EDGES), c=st.sampled_from([2, 6, 12, 16, 24, 32, 48, 64, 96]), m=st.integers(1, 50),
       h=st.integers(3, 12), w=st.integers(3, 40), k=st.sampled_from([2, 3, 5]), s=st.sampled_from([1, 2]),
       pad=st.sampled_from([0, 1, 2, (0, 0, 1, 1)]), d=st.sampled_from([1, 1, 2]), residual=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_implicit_matches_the_reference_and_the_vnni_routine(edge, c, m, h, w, k, s, pad, d, residual, seed):
    """Rows of 3 to 40 pixels: tiles that end inside a row, and a batch of two images (the last
    tile's rows past the image read the workspace's slack, or are copied).  Channel counts not a
    multiple of 32 read runs of kernel rows, in place from a bfloat16 image: the border pixels'
    tiles copied, kernel rows in the padding skipped."""
    pads = list(pad) if isinstance(pad, tuple) else [pad] * 4
    if min(h + pads[0] + pads[2], w + pads[1] + pads[3]) < d * (k - 1) + 1:
        return
    rng = np.random.default_rng(seed)
    wt = (rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    g = conv_graph((2, c, h, w), wt, rng.standard_normal(m).astype(np.float32),
                   attrs=dict(strides=[s, s], pads=pads, dilations=[d, d]), activation="Relu", residual=residual)
    if c % 32 and d > 1:
        layer = g.layer("conv")
        assert not routines.get("Conv", f"cpu:bfloat16:nhwc/implicit_amx{edge}").applies(layer, g.input_specs(layer))
        return
    assert_routine_matches(g, f"cpu:bfloat16:nhwc/implicit_amx{edge}", expect_layers=["conv"], seed=seed)
    _compare_with_vnni(g, "implicit", edge)


@pytest.mark.parametrize("c, k, d, offered", [(32, 3, 2, True), (64, 3, 1, True), (12, 2, 1, True), (48, 3, 1, True),
                                              (16, 3, 2, False), (40, 7, 1, True), (400, 3, 1, False),
                                              (320, 3, 1, True)])
def test_implicit_takes_whole_tiles_of_channels_or_runs_of_kernel_rows(c, k, d, offered):
    """Runs of KW x C words need no dilation across and fit the kernel's copy buffer (1024 words)."""
    g = conv_graph((1, c, 16, 16), np.ones((4, c, k, k), np.float32), attrs=dict(dilations=[d, d]))
    layer = g.layer("conv")
    assert routines.get("Conv", "cpu:bfloat16:nhwc/implicit_amx").applies(layer, g.input_specs(layer)) == offered


@pytest.mark.parametrize("algo, c, k, pads, edge", [("gemm1x1_amx", 64, 1, [0] * 4, "_f32io"),
                                                     ("im2col_amx", 64, 3, [1] * 4, "_f32io"),
                                                     ("implicit_amx", 64, 3, [1] * 4, "_f32io"),
                                                     ("implicit_amx", 12, 2, [0, 0, 1, 1], "_f32out"),
                                                     ("implicit_amx", 24, 3, [1] * 4, "_f32out")])
def test_nan_and_inf_reach_their_pixels(algo, c, k, pads, edge):
    """Runs of kernel rows (12 and 24 channels, a bfloat16 image read in place) read no word past
    a run: a NaN reaches only the outputs whose windows hold it."""
    rng = np.random.default_rng(2)
    g = conv_graph((1, c, 9, 11), (rng.standard_normal((24, c, k, k)) / 10).astype(np.float32),
                   attrs=dict(pads=pads))
    x = rng.standard_normal((1, c, 9, 11)).astype(np.float32)
    x[0, 5, 2, 3], x[0, c - 1, 7, 10] = np.nan, np.inf
    ours, ref, used = run_with_routine(g, f"cpu:bfloat16:nhwc/{algo}{edge}", feeds={"x": x})
    assert used == ["conv"]
    (name, r), = ref.items()
    got = ours[name].astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(r))
    assert np.isnan(r).any()
