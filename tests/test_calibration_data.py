"""Calibration inputs from files (workbench.tuning.calibration_data): directories of .npy and
.npz samples or stacks, single files, and a clear error for each way a file can fail to fit."""
import numpy as np
import pytest

from workbench.errors import InputError
from workbench.ir.graph import TensorSpec
from workbench.tuning import calibration_data

ONE = {"x": TensorSpec((1, 3, 4, 4), "float32")}
TWO = {"img": TensorSpec((1, 3, 4, 4), "float32"), "scale": TensorSpec((1, 2), "float32")}


def _arr(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_a_directory_of_npy_samples_and_stacks_in_name_order(tmp_path, rng):
    a, b, stack = _arr(rng, 1, 3, 4, 4), _arr(rng, 1, 3, 4, 4), _arr(rng, 3, 1, 3, 4, 4)
    np.save(tmp_path / "b.npy", b)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "c_stack.npy", stack)
    (tmp_path / "notes.txt").write_text("ignored")
    feeds = calibration_data.load(tmp_path, ONE)
    want = [a, b] + list(stack)
    assert len(feeds) == 5
    for f, w in zip(feeds, want):
        assert list(f) == ["x"]
        np.testing.assert_array_equal(f["x"], w)
    one = calibration_data.load(tmp_path / "c_stack.npy", ONE)
    assert len(one) == 3 and np.array_equal(one[2]["x"], stack[2])


def test_npz_files_give_every_input(tmp_path, rng):
    imgs, scales = _arr(rng, 2, 1, 3, 4, 4), _arr(rng, 2, 1, 2)
    np.savez(tmp_path / "batch.npz", img=imgs, scale=scales)
    single = {"img": _arr(rng, 1, 3, 4, 4), "scale": _arr(rng, 1, 2)}
    np.savez(tmp_path / "z_one.npz", **single)
    feeds = calibration_data.load(tmp_path, TWO)
    assert len(feeds) == 3
    np.testing.assert_array_equal(feeds[1]["img"], imgs[1])
    np.testing.assert_array_equal(feeds[1]["scale"], scales[1])
    np.testing.assert_array_equal(feeds[2]["scale"], single["scale"])
    # channels-last sessions read channels-last samples
    with pytest.raises(InputError, match=r"'img' has shape \(1, 3, 4, 4\); expected \(1, 4, 4, 3\)"):
        calibration_data.load(tmp_path / "z_one.npz", {"img": TWO["img"]}, io_format="nhwc")


def test_each_misfit_is_a_clear_error(tmp_path, rng):
    with pytest.raises(InputError, match="no such file or directory"):
        calibration_data.load(tmp_path / "missing", ONE)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no .npy, .npz or image files"):
        calibration_data.load(empty, ONE)
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="expected a .npz, .npy or image file"):
        calibration_data.load(tmp_path / "x.txt", ONE)
    np.save(tmp_path / "s.npy", _arr(rng, 1, 3, 4, 4))
    with pytest.raises(InputError, match=r"s.npy: a .npy file serves a model with one input; this one has \['img', 'scale'\]"):
        calibration_data.load(tmp_path / "s.npy", TWO)
    np.savez(tmp_path / "m.npz", img=_arr(rng, 1, 3, 4, 4))
    with pytest.raises(InputError, match=r"m.npz: no array for input\(s\) \['scale'\]"):
        calibration_data.load(tmp_path / "m.npz", TWO)
    np.savez(tmp_path / "n.npz", img=_arr(rng, 2, 1, 3, 4, 4), scale=_arr(rng, 3, 1, 2))
    with pytest.raises(InputError, match="n.npz: its arrays hold different numbers of samples"):
        calibration_data.load(tmp_path / "n.npz", TWO)
    np.save(tmp_path / "w.npy", _arr(rng, 1, 4, 4, 4))
    with pytest.raises(InputError, match=r"w.npy: array 'x' has shape \(1, 4, 4, 4\); expected \(1, 3, 4, 4\)"):
        calibration_data.load(tmp_path / "w.npy", ONE)
    (tmp_path / "t.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match="t.npz: cannot read it"):
        calibration_data.load(tmp_path / "t.npz", ONE)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="o.npy: cannot read it"):
        calibration_data.load(tmp_path / "o.npy", ONE)


def test_a_directory_of_images_preprocessed_as_stated(tmp_path, rng):
    from PIL import Image
    pixels = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(2)]
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / f"img{i}.png")
    np.save(tmp_path / "z.npy", np.zeros((1, 3, 6, 5), np.float32))
    spec = {"x": TensorSpec((1, 3, 6, 5), "float32")}
    feeds = calibration_data.load(tmp_path, spec, image_options=dict(scale=1 / 255, mean=(0.5, 0.4, 0.3),
                                                                         std=(0.2, 0.25, 0.3), bgr=True))
    assert len(feeds) == 3
    for f, p in zip(feeds, pixels):
        want = ((p[..., ::-1].astype(np.float32) / 255 - np.array([0.5, 0.4, 0.3], np.float32))
                / np.array([0.2, 0.25, 0.3], np.float32)).transpose(2, 0, 1)[None]
        np.testing.assert_allclose(f["x"], want, rtol=1e-5, atol=1e-6)
    nhwc = calibration_data.load(tmp_path / "img0.png", spec, io_format="nhwc")   # a channels-last session
    np.testing.assert_allclose(nhwc[0]["x"], pixels[0][None].astype(np.float32))
    with pytest.raises(InputError, match="an image serves a model with one input"):
        calibration_data.load(tmp_path, TWO)
