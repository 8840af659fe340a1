"""Calibration inputs from files: what ``workbench tune --calibration PATH`` reads.

``PATH`` is one of:

- a directory of ``.npy`` files (a model with one input: each file one sample, or a stack of
  samples along a first axis) and/or ``.npz`` files (one array per input name, likewise), and,
  for a model with one image input, image files (PNG, JPEG, BMP), each one sample preprocessed
  by :func:`workbench.images.load_image` with ``image_options`` (resized to the input's H, W,
  then ``scale``, ``mean``/``std`` per channel and ``bgr``, as its docstring states); read in
  name order;
- one ``.npz`` file, one array per input name, each a stack of samples along its first axis;
- one ``.npy`` file, a stack of samples of a single-input model's input.

Each sample has the input's shape exactly (in the session's io_format).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..runtime.interpreter import io_shape

SUFFIXES = (".npy", ".npz")


def _image(path, inputs, io_format, options):
    from .. import images
    if len(inputs) != 1:
        raise InputError(f"calibration file {path}: an image serves a model with one input; this one has {list(inputs)}")
    (name, spec), = inputs.items()
    x = images.load_image(path, list(spec.shape), dtype=spec.dtype, name=name, **(options or {}))
    if io_format == "nhwc" and x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return [{name: x}]


def _arrays(path):
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path) as npz:
                return {k: npz[k] for k in npz.files}
        return {None: np.load(path)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise InputError(f"calibration file {path}: cannot read it as {path.suffix} ({e})") from None


def _samples(path, arrays, inputs, io_format):
    """The feeds one file holds: a sample, or a stack of them along a first axis."""
    names = list(inputs)
    if None in arrays:
        if len(names) != 1:
            raise InputError(f"calibration file {path}: a .npy file serves a model with one input; this one has "
                             f"{names} (use .npz files, one array per input name)")
        arrays = {names[0]: arrays[None]}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(f"calibration file {path}: no array for input(s) {missing} (it holds {sorted(arrays)})")
    counts = set()
    for name in names:
        want, got = io_shape(inputs[name], io_format), arrays[name].shape
        if tuple(got) == tuple(want):
            counts.add(None)
        elif tuple(got[1:]) == tuple(want) and got[0] > 0:
            counts.add(got[0])
        else:
            raise InputError(f"calibration file {path}: array {name!r} has shape {got}; expected {want} "
                             f"(one sample) or (samples, {', '.join(map(str, want))})")
    if len(counts) != 1:
        raise InputError(f"calibration file {path}: its arrays hold different numbers of samples")
    count = counts.pop()
    if count is None:
        return [{n: np.ascontiguousarray(arrays[n]) for n in names}]
    return [{n: np.ascontiguousarray(arrays[n][i]) for n in names} for i in range(count)]


def load(path, inputs, io_format="nchw", image_options=None):
    """The calibration feeds at ``path`` (see the module doc) for a model with ``inputs``
    (``{name: TensorSpec}``); ``image_options``: :func:`workbench.images.load_image`'s ``mean``,
    ``std``, ``scale``, ``bgr``.  :class:`~workbench.errors.InputError` naming the file and the
    problem where one does not fit."""
    from ..images import is_image
    path = Path(path)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and (f.suffix.lower() in SUFFIXES or is_image(f)))
        if not files:
            raise InputError(f"calibration directory {path} holds no .npy, .npz or image files")
    elif path.is_file():
        if path.suffix.lower() not in SUFFIXES and not is_image(path):
            raise InputError(f"calibration file {path}: expected a .npz, .npy or image file, or a directory of them")
        files = [path]
    else:
        raise InputError(f"calibration data {path}: no such file or directory")
    feeds = []
    for f in files:
        feeds += (_image(f, inputs, io_format, image_options) if is_image(f)
                  else _samples(f, _arrays(f), inputs, io_format))
    return feeds
