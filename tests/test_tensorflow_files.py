"""TensorFlow, Keras and TFLite files (onnx_io/tensorflow.py): a small Keras CNN and an LSTM model
saved as .keras, as a SavedModel and as .tflite, each run by ``workbench run --check``, which
converts it through tf2onnx (cached) and checks it against TensorFlow's own outputs; our outputs
are compared with TensorFlow's here too, within 1e-4.  Without tensorflow and tf2onnx these skip
(``.ci/run`` installs the ``tf`` extra), and the missing extra is a clear error."""
import os
import sys

import numpy as np
import pytest

from workbench.cli.main import main

tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed (the tf extra: pip install "
                                              "'routine-workbench[tf]')")
pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (the tf extra)")
keras = pytest.importorskip("keras")


def _cnn():
    inp = keras.Input((24, 24, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.DepthwiseConv2D(3, activation="relu6")(x)
    x = keras.layers.Conv2D(12, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x))


def _lstm():
    seq = keras.Input((9, 4), batch_size=1)
    y = keras.layers.LSTM(6, return_sequences=True)(seq)
    y = keras.layers.Bidirectional(keras.layers.LSTM(5))(y)
    return keras.Model(seq, keras.layers.Dense(3)(y))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    keras.utils.set_random_seed(0)
    out = {}
    root = tmp_path_factory.mktemp("tf")
    for name, build in (("cnn", _cnn), ("lstm", _lstm)):
        m = build()
        x = np.random.default_rng(1).standard_normal(tuple(m.inputs[0].shape)).astype(np.float32)
        np.save(root / f"{name}_x.npy", x)
        want = np.asarray(m(x, training=False))
        m.save(root / f"{name}.keras")
        m.export(str(root / f"{name}_saved"), format="tf_saved_model", verbose=False)
        (root / f"{name}.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(m).convert())
        out[name] = (root, x, want)
    return out


@pytest.mark.parametrize("name", ["cnn", "lstm"])
@pytest.mark.parametrize("form", ["keras", "saved", "tflite"])
def test_run_check_matches_tensorflow(files, name, form, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_CONVERT_CACHE", str(tmp_path / "cache"))
    root, x, want = files[name]
    path = {"keras": root / f"{name}.keras", "saved": root / f"{name}_saved", "tflite": root / f"{name}.tflite"}[form]
    from workbench.onnx_io.read import read_model
    model = read_model(path)   # converted and cached
    first = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}][0]
    err = capsys.readouterr().err
    assert "tf2onnx" in err and "cached at" in err
    argv = ["run", str(path), "--batch", "1", "--input", f"{first}={root / f'{name}_x.npy'}",
            "--output-dir", str(tmp_path / "out"), "--check"]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "TensorFlow's own outputs" in printed.out and "check passed" in printed.out
    assert "cached at" in printed.err and "converting" not in printed.err   # the second read: the cache
    (got,) = [np.load(p) for p in sorted((tmp_path / "out").glob("*.npy"))]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_a_missing_extra_names_the_pip_command(files, monkeypatch, tmp_path):
    from workbench.onnx_io import tensorflow
    monkeypatch.setenv("WORKBENCH_CONVERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "tf2onnx", None)   # as if not installed
    with pytest.raises(tensorflow.MissingExtraError, match=r"pip install 'routine-workbench\[tf\]'"):
        tensorflow.convert(files["cnn"][0] / "cnn.keras")
    assert not os.path.exists(tmp_path / "cache") or not list((tmp_path / "cache").iterdir())
