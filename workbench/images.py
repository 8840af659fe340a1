"""Images as model inputs (``workbench run --input x=page.png``), so a check runs on real data.

The preprocessing, in this order (:func:`load_image`):

1. read the file with Pillow (PNG, JPEG, BMP) and convert it to the model's channel count:
   1 -> grayscale (``L``), 3 -> ``RGB``, 4 -> ``RGBA``;
2. resize (bilinear) to the input's H, W when the model fixes them, else to ``resolution`` when
   given, else keep the image's own size;
3. ``bgr=True`` reverses the channel order (RGB -> BGR);
4. pixels as float32 in 0..255, ``x = x * scale`` (default 1, e.g. ``1/255``), then
   ``x = (x - mean) / std`` per channel, in the model's channel order (BGR after ``bgr``):
   ``mean`` and ``std`` are in the units *after* ``scale`` (0..255 without it, 0..1 with
   ``scale=1/255``);
5. layout NCHW, or NHWC when the model's input is ``(N, H, W, C)`` with C fixed to 1, 3 or 4 and
   dim 1 not (see :func:`layout_of`); the image is repeated over the batch.

A ``uint8`` input takes the raw pixels (steps 3-4 other than ``bgr`` are an error there).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def is_image(path) -> bool:
    """Whether ``path`` names an image by its suffix."""
    return Path(os.fspath(path)).suffix.lower() in IMAGE_SUFFIXES


def parse_floats(text, what):
    """``"0.485,0.456,0.406"`` (or one value, or ``a/b``) -> tuple of floats."""
    try:
        return tuple(_fraction(v) for v in str(text).split(","))
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{what}: expected comma-separated numbers (a/b allowed), got {text!r}") from None


def _fraction(v):
    num, slash, den = v.strip().partition("/")
    return float(num) / float(den) if slash else float(num)


def layout_of(dims) -> str:
    """``"NHWC"`` when a 4-D input's last dim is fixed to 1, 3 or 4 and dim 1 is not fixed to one of
    those, else ``"NCHW"`` (``dims``: ints, None for a symbolic dim)."""
    if len(dims) == 4 and dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4):
        return "NHWC"
    return "NCHW"


def load_image(path, dims, dtype="float32", name="input", batch=None, resolution=None, mean=None, std=None,
               scale=None, bgr=False) -> np.ndarray:
    """Read and preprocess an image for a model input (see the module docstring for the steps).

    Parameters
    ----------
    path : str or Path
    dims : sequence of int or None
        The input's declared dims (None where symbolic); must be 4-D.
    dtype : str
        The input's element type: a float type, or ``uint8`` for raw pixels.
    name : str
        The input's name, for error messages.
    batch : int, optional
        Batch size when the model leaves it symbolic (default 1).
    resolution : int or (int, int), optional
        H, W when the model leaves them symbolic.
    mean, std : sequence of float, optional
        Per channel (or one value for all), in the units after ``scale``.
    scale : float, optional
        Multiplies the 0..255 pixels before ``mean``/``std``.
    bgr : bool
        Reverse the channel order.
    """
    where = f"--input {name}={path}"
    dims = [None if d is None or d <= 0 else int(d) for d in dims]
    if len(dims) != 4:
        raise InputError(f"{where}: input {name!r} has rank {len(dims)}; an image fills a 4-D (N, C, H, W) or "
                         f"(N, H, W, C) input only (give a .npy instead)")
    layout = layout_of(dims)
    channels = dims[3] if layout == "NHWC" else dims[1]
    channels = 3 if channels is None else channels
    if channels not in _MODES:
        raise InputError(f"{where}: input {name!r} has {channels} channels; an image gives 1 (grayscale), "
                         f"3 (RGB) or 4 (RGBA)")
    h, w = (dims[1], dims[2]) if layout == "NHWC" else (dims[2], dims[3])
    if h is None or w is None:
        if resolution is not None:
            rh, rw = (resolution, resolution) if isinstance(resolution, int) else resolution
            h, w = h or rh, w or rw
    n = dims[0] or batch or 1
    if dims[0] and batch and batch != dims[0]:
        raise InputError(f"{where}: the batch dim of {name!r} is fixed to {dims[0]}, --batch {batch} given")

    pixels = _read(path, where, _MODES[channels], h, w)
    if bgr:   # before mean/std, so their values are given in the model's channel order
        pixels = pixels[..., ::-1]
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        if mean is not None or std is not None or scale is not None:
            raise InputError(f"{where}: input {name!r} is uint8 (raw pixels); --mean/--std/--scale do not apply")
        x = pixels
    elif dtype.kind == "f":
        x = pixels.astype(np.float32)
        if scale is not None:
            x = x * np.float32(scale)
        x = (x - _per_channel(mean, channels, "--mean", where, 0.0)) / _per_channel(std, channels, "--std", where, 1.0)
        x = x.astype(dtype)
    else:
        raise InputError(f"{where}: input {name!r} is {dtype.name}; an image fills float or uint8 inputs only")
    if layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(np.broadcast_to(x[None], (n, *x.shape)))


def _read(path, where, mode, h, w):
    from PIL import Image, UnidentifiedImageError
    p = Path(os.fspath(path))
    if not p.is_file():
        raise InputError(f"{where}: no such file")
    try:
        with Image.open(p) as img:
            img.load()
            if img.mode not in ("L", "LA", "RGB", "RGBA", "P", "1", "I;16", "I"):
                raise InputError(f"{where}: image mode {img.mode} (e.g. CMYK) is not supported; save it as RGB")
            if mode in ("RGB", "L") and img.mode in ("RGBA", "LA"):
                img = img.convert(mode)   # alpha dropped: the model takes no alpha channel
            elif mode == "RGBA" and img.mode not in ("RGBA",):
                raise InputError(f"{where}: the input takes 4 channels (RGBA) but the image is {img.mode}")
            img = img.convert(mode)
            if h is not None and w is not None and img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
            a = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{where}: not a readable image ({e})") from None
    return a[..., None] if a.ndim == 2 else a


def _per_channel(values, channels, flag, where, default):
    if values is None:
        return np.float32(default)
    v = np.asarray(values, np.float32)
    if v.size == 1:
        v = np.repeat(v, channels)
    if v.size != channels:
        raise InputError(f"{where}: {flag} has {v.size} values, the input has {channels} channel(s)")
    if flag == "--std" and np.any(v == 0):
        raise InputError(f"{where}: --std has a zero")
    return v
