"""workbench.onnx_io.ort.compare: the elementwise rule, NaN/Inf, cosine, top-1 and the failure message,
each against a NumPy formula; and a detector-like graph (outputs ~1e-7) through our engine vs
ONNX Runtime, passing, and failing when ONNX Runtime runs a perturbed copy."""
import numpy as np
import pytest
from onnx import helper

import workbench
from workbench.onnx_io.ort import compare, compare_all, oracle_noise, magnitude, relative_error, run_onnxruntime
from onnx_helpers import make_model


def _rule(ours, ref, rtol, atol):
    """The pass rule, written out: per element |o - r| <= atol + rtol |r|."""
    return np.abs(ours.astype(np.float64) - ref) > atol + rtol * np.abs(ref.astype(np.float64))


def test_elementwise_rule_with_max_scaled_atol(rng):
    ref = rng.standard_normal((3, 5, 7)).astype(np.float32)
    ours = ref + (rng.standard_normal(ref.shape) * 2e-4).astype(np.float32)
    c = compare(ours, ref, rtol=1e-4, name="y")
    scale = float(np.abs(ref.astype(np.float64)).max())
    expected = _rule(ours, ref, 1e-4, 1e-4 * scale)
    assert 0 < expected.sum() < ref.size     # the noise puts some elements on each side
    assert c.failed_count == expected.sum() and not c.passed
    assert c.atol == pytest.approx(1e-4 * scale) and c.size == ref.size
    excess = np.abs(ours.astype(np.float64) - ref) - (1e-4 * scale + 1e-4 * np.abs(ref))
    order = np.argsort(-excess.ravel())[:5]
    assert [m.index for m in c.worst] == [np.unravel_index(i, ref.shape) for i in order]
    w = c.worst[0]
    assert w.ours == ours[w.index] and w.ref == ref[w.index]
    assert w.allowed == pytest.approx(1e-4 * scale + 1e-4 * abs(float(ref[w.index])))
    assert c.max_abs == pytest.approx(np.abs(ours.astype(np.float64) - ref).max())
    assert c.max_rel == pytest.approx(relative_error(ours, ref))
    # needed_atol is the smallest atol that passes: just above it passes, just below fails.
    assert compare(ours, ref, rtol=1e-4, atol=c.needed_atol * 1.000001).passed
    assert not compare(ours, ref, rtol=1e-4, atol=c.needed_atol * 0.99).passed


def test_explicit_atol_and_oracle_noise(rng):
    ref = rng.standard_normal((4, 6)).astype(np.float32)
    ours = ref + np.float32(3e-3)
    assert not compare(ours, ref, rtol=1e-4).passed
    c = compare(ours, ref, rtol=1e-4, atol=4e-3)
    assert c.passed and c.atol == 4e-3 and c.atol_from == "--atol"
    # The oracle's own spread raises the floor, never lowers it; --atol overrides both.
    assert compare(ours, ref, rtol=1e-4, noise=4e-3).passed
    assert compare(ours, ref, rtol=1e-4, noise=1e-12).atol == pytest.approx(1e-4 * magnitude(ref))
    assert not compare(ours, ref, rtol=1e-4, atol=1e-3, noise=4e-3).passed
    b = ref.copy()
    b[1, 2] += 0.25
    assert oracle_noise({"y": ref}, {"y": b}) == {"y": pytest.approx(0.25)}


def test_nan_and_inf():
    nan, inf = np.nan, np.inf
    ref = np.array([nan, nan, 1.0, inf, inf, -inf, inf, 2.0, 3.0], np.float32)
    ours = np.array([nan, 0.0, nan, inf, -inf, -inf, 5.0, inf, 3.0], np.float32)
    c = compare(ours, ref)
    # matches: NaN/NaN, +inf/+inf, -inf/-inf, 3/3; every other pair fails
    assert c.failed_count == 5 and not c.passed
    assert sorted(m.index[0] for m in c.worst) == [1, 2, 4, 6, 7]
    assert c.needed_atol == np.inf and all(m.off_by == np.inf for m in c.worst)
    ok = compare(np.array([nan, inf, 1.0], np.float32), np.array([nan, inf, 1.0], np.float32))
    assert ok.passed and ok.cosine == pytest.approx(1.0)


def test_cosine_and_top1_against_numpy(rng):
    ref = rng.standard_normal((5, 11)).astype(np.float32)
    ours = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.5
    c = compare(ours, ref)
    o, r = ours.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    assert c.cosine == pytest.approx(o @ r / (np.linalg.norm(o) * np.linalg.norm(r)), rel=1e-12)
    agree = np.mean(np.argmax(ours, 1) == np.argmax(ref, 1))
    assert 0 < agree < 1 and c.top1 == pytest.approx(agree) and c.top1_rows == 5
    # (N, C, 1, 1) counts as a classifier; (N, 1), (N, C, H, W) and 1-D do not.
    assert compare(ours[:, :, None, None], ref[:, :, None, None]).top1 == pytest.approx(agree)
    assert compare(ours[:, :1], ref[:, :1]).top1 is None
    assert compare(ours.reshape(5, 11, 1, 1).repeat(2, 3), ref.reshape(5, 11, 1, 1).repeat(2, 3)).top1 is None
    assert compare(ours[0], ref[0]).top1 is None


def test_integers_shapes_and_missing_outputs():
    a = np.array([[1, 2, 3]], np.int64)
    assert compare(a, a).passed
    c = compare(a, a + np.array([[0, 1, 0]]))
    assert c.failed_count == 1 and c.worst[0].index == (0, 1)
    bad = compare(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), name="y")
    assert not bad.passed and "shape (2, 3)" in bad.summary() and "(3, 2)" in bad.summary()
    checks = compare_all({"a": a}, {"a": a, "b": a})
    assert checks["a"].passed and not checks["b"].passed and "missing" in checks["b"].summary()


def test_failure_message_names_the_elements(rng):
    ref = rng.standard_normal((2, 3, 4)).astype(np.float32)
    ours = ref.copy()
    ours[1, 2, 3] += 0.5
    ours[0, 1, 0] -= 0.01
    c = compare(ours, ref, name="boxes")
    text = "\n".join([c.summary(), *c.details()])
    assert "check boxes: FAILED, 2 of 24 element(s)" in text
    first, second = c.details()[:2]
    assert first.startswith("  [1,2,3]") and f"ours {ours[1, 2, 3]:.9g}" in first and f"ort {ref[1, 2, 3]:.9g}" in first
    assert "off by 0.5" in first and second.startswith("  [0,1,0]")
    assert "would pass with --atol" in text


def detector(seed=3, perturb=1.0):
    """A small detector head: two 3x3 Convs with ReLU, then a 1x1 Conv with tiny weights (a map of
    mixed sign, about 1e-7) and a Sigmoid scaled by 2e-7 (a probability map, about 1e-7).
    ``perturb`` multiplies one weight of the map's Conv."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2
    w3 = (rng.standard_normal((2, 8, 1, 1)) * 1e-8).astype(np.float32)
    w3[1, 5] *= perturb
    w4 = rng.standard_normal((1, 8, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["maps"], name="head.maps"),
             helper.make_node("Conv", ["r2", "w4"], ["logit"], name="head.logit"),
             helper.make_node("Sigmoid", ["logit"], ["s"], name="sigmoid"),
             helper.make_node("Mul", ["s", "k"], ["prob"], name="scale")]
    return make_model(nodes, [("x", [1, 3, 24, 40])], [("maps", None), ("prob", None)],
                      [("w1", w1), ("w2", w2), ("w3", w3), ("w4", w4), ("k", np.float32(2e-7))])


def test_detector_outputs_near_1e_7_pass_against_onnxruntime(rng):
    model = detector()
    graph = workbench.load(model.SerializeToString())
    feeds = {"x": rng.uniform(0, 1, (1, 3, 24, 40)).astype(np.float32)}
    ours = workbench.ReferenceExecutor(graph).run(feeds)
    theirs = run_onnxruntime(model, feeds)
    for name in ("maps", "prob"):
        assert 1e-8 < np.abs(theirs[name]).max() < 1e-6, name
    noise = oracle_noise(theirs, run_onnxruntime(model, feeds, optimize=False))
    checks = compare_all(ours, theirs, rtol=1e-4, noise=noise)
    assert all(c.passed for c in checks.values()), [c.summary() for c in checks.values()]
    assert checks["prob"].cosine > 1 - 1e-9 and checks["maps"].cosine > 1 - 1e-9
    # ONNX Runtime on a copy with one head weight 1% off: channel 1 of the map fails, channel 0 not.
    bad = run_onnxruntime(detector(perturb=1.01), feeds)
    c = compare_all(ours, bad, rtol=1e-4)
    assert c["prob"].passed and not c["maps"].passed
    expected = _rule(ours["maps"], bad["maps"], 1e-4, 1e-4 * magnitude(bad["maps"]))
    assert c["maps"].failed_count == expected.sum() > 0 and not expected[:, 0].any()
    assert all(m.index[1] == 1 for m in c["maps"].worst)


def test_never_stricter_than_the_max_relative_standard(rng):
    # A mostly-near-zero map (a detector's background) with errors at 0.9e-4 of its peak: the
    # project's float32 standard (max|ours-ref| <= 1e-4 max|ref|) holds, so the check must pass,
    # though most elements' own values are far smaller than their errors.
    ref = (rng.random((1, 1, 64, 64)) ** 8 * 0.065).astype(np.float32)
    ours = (ref + np.sign(rng.standard_normal(ref.shape)) * 0.9e-4 * 0.065).astype(np.float32)
    assert relative_error(ours, ref) <= 1e-4
    assert np.mean(np.abs(ours - ref) > 1e-4 * np.abs(ref)) > 0.5
    assert compare(ours, ref, rtol=1e-4).passed
    assert not compare(ours * np.float32(1.01), ref, rtol=1e-4).passed
