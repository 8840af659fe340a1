"""Resize (and the older Upsample): nearest and N-linear, every coordinate transformation mode.

Scales on the batch and channel axes must be 1; interpolation is separable, done axis by axis.
"""
import math

import numpy as np

from .base import Op, check
from ..graph import TensorSpec

NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
               "half_pixel_symmetric")


class Resize(Op):
    @classmethod
    def normalize(cls, node):
        x = node.spec(0)
        if node.op_type == "Upsample" or node.opset < 11:
            scales = node.take(1, "scales") if len(node.inputs) > 1 else node.attr("scales", None)
            sizes, coord = None, "asymmetric"
            mode = node.attr("mode", "nearest")
            # No nearest_mode before opset 11; ONNX Runtime rounds down when upsampling and up
            # when downsampling (its "simple" mode), so we do the same.
            nearest = "simple"
        else:
            node.take(1, "roi")
            scales, sizes = node.take(2, "scales"), node.take(3, "sizes")
            mode = node.attr("mode", "nearest")
            coord = node.attr("coordinate_transformation_mode", "half_pixel")
            nearest = node.attr("nearest_mode", "round_prefer_floor")
        mode = {"bilinear": "linear"}.get(mode, mode)
        if mode not in ("nearest", "linear"):
            node.fail(f"mode {mode!r} is not supported (nearest and linear are)")
        if coord not in COORD_MODES:
            node.fail(f"coordinate_transformation_mode {coord!r} is not supported")
        if nearest not in NEAREST_MODES + ("simple",):
            node.fail(f"nearest_mode {nearest!r} is not supported")
        if node.attr("antialias", 0):
            node.fail("antialias=1 is not supported")
        if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
            node.fail("keep_aspect_ratio_policy other than 'stretch' is not supported")
        rank = len(x.shape)
        axes = [int(a) % rank for a in node.attr("axes", list(range(rank)))]
        full_scales = [1.0] * rank
        full_sizes = list(x.shape)
        if sizes is not None and np.asarray(sizes).size:
            for a, s in zip(axes, np.asarray(sizes).reshape(-1)):
                full_sizes[a] = int(s)
                full_scales[a] = float(np.float32(int(s)) / np.float32(x.shape[a]))
        elif scales is not None and np.asarray(scales).size:
            for a, s in zip(axes, np.asarray(scales, np.float64).reshape(-1)):
                full_scales[a] = float(np.float32(s))
                full_sizes[a] = int(math.floor(x.shape[a] * float(np.float32(s))))
        else:
            node.fail("neither scales nor sizes is given")
        if full_sizes[:2] != list(x.shape[:2]) and rank >= 3:
            node.fail(f"resizing the batch or channel axis ({x.shape} -> {full_sizes}) is not supported")
        return {"mode": mode, "coordinate_transformation_mode": coord, "nearest_mode": nearest,
                "scales": full_scales, "sizes": full_sizes}

    @classmethod
    def infer(cls, layer, specs):
        sizes = layer.attrs["sizes"]
        check(len(sizes) == len(specs[0].shape), layer, f"sizes {sizes} for input {specs[0].shape}")
        check(all(s > 0 for s in sizes), layer, f"output size {sizes} is empty")
        return [TensorSpec(tuple(sizes), specs[0].dtype)]

    @staticmethod
    def source_coords(mode, out_len, in_len, scale):
        # In float32, in ONNX Runtime's order of operations: where a coordinate is an integer in
        # exact arithmetic (4.5 / 0.6 - 0.5 = 7), float32 gives 6.9999995 and ORT floors to 6.
        x = np.arange(out_len, dtype=np.float32)
        scale, out_len, in_len = np.float32(scale), np.float32(out_len), np.float32(in_len)
        if mode == "half_pixel":
            return (x + 0.5) / scale - 0.5
        if mode == "pytorch_half_pixel":
            return (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(x)
        if mode == "align_corners":
            return np.zeros_like(x) if out_len == 1 else x * (in_len - 1) / (out_len - 1)
        if mode == "asymmetric":
            return x / scale
        if mode == "tf_half_pixel_for_nn":
            return (x + 0.5) / scale
        adjustment = out_len / (scale * in_len)  # half_pixel_symmetric
        offset = in_len / np.float32(2) * (1 - adjustment)
        return (offset + (x.astype(np.float64) + 0.5) / scale - 0.5).astype(np.float32)  # ORT: in double

    @staticmethod
    def nearest_index(coords, mode, in_len, scale=1.0):
        if mode == "simple":  # before opset 11 (see normalize)
            mode = "ceil" if scale < 1 else "floor"
        if mode in ("round_prefer_floor", "round_prefer_ceil"):
            # A float32 coordinate within rounding noise of a half is a tie (1 / (2/7) = 3.5
            # comes out 3.4999998): ONNX Runtime breaks such ties by the mode, so we do too.
            tie = np.abs(coords % 1 - 0.5) <= 1e-6 * np.maximum(np.abs(coords), 1)
            half = np.floor(coords) + 0.5
            idx = np.where(tie, np.floor(half) if mode == "round_prefer_floor" else np.ceil(half), np.round(coords))
        elif mode == "floor":
            idx = np.floor(coords)
        else:
            idx = np.ceil(coords)
        return np.clip(idx, 0, in_len - 1).astype(np.int64)

    @classmethod
    def compute(cls, layer, args):
        x = args[0]
        a = layer.attrs
        if tuple(a["sizes"]) == x.shape:
            # ONNX Runtime copies the input whenever the output shape equals it, even where a
            # scale != 1 (e.g. 3 * 1.25 -> 3) would move the sampling points; we match it.
            return [x.copy()]
        y = x
        for axis in range(x.ndim):
            out_len, in_len = a["sizes"][axis], x.shape[axis]
            if out_len == in_len and a["scales"][axis] == 1.0:
                continue
            coords = cls.source_coords(a["coordinate_transformation_mode"], out_len, in_len, a["scales"][axis])
            if a["mode"] == "nearest":
                y = np.take(y, cls.nearest_index(coords, a["nearest_mode"], in_len, a["scales"][axis]), axis=axis)
                continue
            coords = np.clip(coords, 0, in_len - 1)
            lo = np.floor(coords).astype(np.int64)
            hi = np.minimum(lo + 1, in_len - 1)
            w = (coords - lo).reshape((-1,) + (1,) * (x.ndim - axis - 1))
            y = np.take(y, lo, axis=axis) * (1 - w) + np.take(y, hi, axis=axis) * w
        return [np.ascontiguousarray(y).astype(x.dtype, copy=False)]


class Upsample(Resize):
    pass
