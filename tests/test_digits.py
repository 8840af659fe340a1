"""workbench.zoo.digits: the small CNN trained on scikit-learn's digits for the mixed-precision
notebook trains to a real accuracy, and its ONNX export computes what NumPy's forward pass does
(ONNX Runtime as the judge)."""
import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the digits come from scikit-learn (the ui extra installs it)")
ort = pytest.importorskip("onnxruntime")

from workbench.zoo import digits  # noqa: E402


@pytest.fixture(scope="module")
def trained():
    return digits.build(epochs=8)


def test_it_learns_the_digits(trained):
    assert len(trained.y_test) == 540 and trained.x_test.shape == (540, 1, 16, 16)
    assert trained.test_accuracy > 0.9 and trained.train_accuracy > 0.9


def test_the_onnx_model_computes_numpys_forward_pass(trained):
    sess = ort.InferenceSession(trained.model.SerializeToString(), providers=["CPUExecutionProvider"])
    hits = 0
    for i in range(0, 540, 27):
        logits = sess.run(["logits"], {"image": trained.x_test[i:i + 1]})[0]
        hits += int(logits.argmax() == trained.y_test[i])
    assert hits >= 18   # 20 images, at the accuracy NumPy measured on all 540 (> 0.9)


def test_the_gradient_is_the_loss_slope():
    """One weight's gradient against a central difference of the loss (float64 in the check)."""
    rng = np.random.default_rng(0)
    params = digits._init(rng)
    x = rng.standard_normal((4, 8, 8, 1)).astype(np.float32)
    y = np.array([1, 3, 5, 7])
    _, grads = digits._backward(params, x, y)
    for key, idx in (("w0", (4, 3)), ("w2", (10, 5)), ("wf", (2, 7))):
        eps = 1e-2
        plus = {k: v.copy() for k, v in params.items()}
        minus = {k: v.copy() for k, v in params.items()}
        plus[key][idx] += eps
        minus[key][idx] -= eps
        slope = (digits._backward(plus, x, y)[0] - digits._backward(minus, x, y)[0]) / (2 * eps)
        assert grads[key][idx] == pytest.approx(slope, rel=0.05, abs=1e-4)
