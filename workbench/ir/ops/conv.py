"""Conv and ConvTranspose (1-D and 2-D, any group, dilation, padding), with fused epilogues.

Normalised attributes: ``kernel_shape``, ``strides``, ``dilations``, ``pads`` (begin values then
end values, ONNX order; ``auto_pad`` is resolved at import), ``group``; ConvTranspose also
``output_padding``.  A Conv may carry a fused ``activation`` and ``residual`` (input 3 is added
before the activation, or after it with ``residual_after_activation``: a YOLO bottleneck's
``x + silu(conv(x))``).
"""
import math

import numpy as np

from .base import Op, check
from ..graph import TensorSpec
from .activation import epilogue


def residual_after_activation(layer):
    """Whether ``layer``'s fused residual is added after its activation (not before)."""
    return bool(layer.attrs.get("residual") and layer.attrs.get("residual_after_activation"))


def resolve_pads(node, in_spatial, kernel, strides, dilations):
    """Explicit ``pads`` for a sliding-window op, ``auto_pad`` resolved against the input size."""
    n = len(in_spatial)
    auto = node.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(node.attr("pads", [0] * 2 * n))
        if len(pads) != 2 * n:
            node.fail(f"pads has {len(pads)} values, expected {2 * n}")
        return pads
    if auto == "VALID":
        return [0] * 2 * n
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        node.fail(f"unknown auto_pad {auto!r}")
    begin, end = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin + end


def window_attrs(node, kernel, n_spatial):
    strides = list(node.attr("strides", [1] * n_spatial))
    dilations = list(node.attr("dilations", [1] * n_spatial))
    if len(strides) != n_spatial or len(dilations) != n_spatial or len(kernel) != n_spatial:
        node.fail(f"kernel_shape {kernel}, strides {strides}, dilations {dilations} "
                  f"do not all have {n_spatial} spatial values")
    return strides, dilations


def conv_out_size(size, k, s, d, pb, pe):
    return (size + pb + pe - ((k - 1) * d + 1)) // s + 1


def im2col(x, kernel, strides, dilations, pads, out_hw):
    """(N, C, H, W) -> (N, C, KH, KW, OH, OW) patches, zero padded."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    oh, ow = out_hw
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    cols = np.empty(x.shape[:2] + (kh, kw, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                                  j * dw: j * dw + sw * (ow - 1) + 1: sw]
    return cols


def as_2d(attrs, x, w):
    """View 1-D convolutions as 2-D ones with a unit height."""
    if x.ndim == 4:
        return dict(attrs), x, w
    a = dict(attrs)
    for key, pad_value in (("kernel_shape", 1), ("strides", 1), ("dilations", 1)):
        a[key] = [pad_value] + list(attrs[key])
    p = attrs["pads"]
    a["pads"] = [0, p[0], 0, p[1]]
    if "output_padding" in attrs:
        a["output_padding"] = [0] + list(attrs["output_padding"])
    return a, x[:, :, None, :], w[:, :, None, :]


class _Windowed(Op, register=False):
    weight_inputs = (1, 2)
    fusable = True

    @classmethod
    def _spatial_common(cls, node):
        x, w = node.spec(0), node.const_spec(1, "weights")
        n_spatial = len(x.shape) - 2
        if n_spatial not in (1, 2) or len(w.shape) != len(x.shape):
            node.fail(f"only 1-D and 2-D {node.op_type} are supported; input is {x.shape}, weights {w.shape}")
        kernel = list(node.attr("kernel_shape", list(w.shape[2:])))
        strides, dilations = window_attrs(node, kernel, n_spatial)
        return x, w, kernel, strides, dilations, int(node.attr("group", 1))


class Conv(_Windowed):
    @classmethod
    def normalize(cls, node):
        x, w, kernel, strides, dilations, group = cls._spatial_common(node)
        pads = resolve_pads(node, x.shape[2:], kernel, strides, dilations)
        return dict(kernel_shape=kernel, strides=strides, dilations=dilations, pads=pads, group=group)

    @classmethod
    def infer(cls, layer, specs):
        x, w, b = specs[0], specs[1], specs[2] if len(specs) > 2 else None
        a = layer.attrs
        n = len(a["kernel_shape"])
        check(len(x.shape) == n + 2, layer, f"input {x.shape} is not {n}-D spatial")
        check(x.shape[1] == w.shape[1] * a["group"], layer,
              f"input has {x.shape[1]} channels, weights {w.shape} with group={a['group']} expect "
              f"{w.shape[1] * a['group']}")
        check(w.shape[0] % a["group"] == 0, layer, f"{w.shape[0]} output channels not divisible by group")
        check(list(w.shape[2:]) == list(a["kernel_shape"]), layer,
              f"kernel_shape {a['kernel_shape']} disagrees with weights {w.shape}")
        check(b is None or b.shape == (w.shape[0],), layer, f"bias {b and b.shape} for {w.shape[0]} channels")
        out = [conv_out_size(s, k, st, d, a["pads"][i], a["pads"][i + n])
               for i, (s, k, st, d) in enumerate(zip(x.shape[2:], a["kernel_shape"], a["strides"], a["dilations"]))]
        check(all(o > 0 for o in out), layer, f"output spatial size {out} is empty for input {x.shape}")
        spec = TensorSpec((x.shape[0], w.shape[0], *out), x.dtype)
        if a.get("residual"):
            check(specs[3].shape == spec.shape, layer, f"residual {specs[3].shape} != output {spec.shape}")
        return [spec]

    @classmethod
    def compute(cls, layer, args):
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        a, x2, w2 = as_2d(layer.attrs, x, w)
        n, c = x2.shape[:2]
        m, g = w2.shape[0], a["group"]
        oh, ow = (conv_out_size(x2.shape[2 + i], a["kernel_shape"][i], a["strides"][i], a["dilations"][i],
                                a["pads"][i], a["pads"][i + 2]) for i in range(2))
        cols = im2col(x2, a["kernel_shape"], a["strides"], a["dilations"], a["pads"], (oh, ow))
        cols = cols.reshape(n, g, -1, oh * ow)
        y = np.matmul(w2.reshape(g, m // g, -1), cols).reshape(n, m, oh, ow)
        if b is not None:
            y += b.reshape(1, m, 1, 1)
        y = y.reshape((n, m) + ((ow,) if x.ndim == 3 else (oh, ow)))
        after = residual_after_activation(layer)
        if layer.attrs.get("residual") and not after:
            y += args[3]
        y = epilogue(layer, y)
        return [y + args[3] if after else y]

    @classmethod
    def macs(cls, layer, specs):
        w = specs[1].shape
        return int(np.prod(layer.out_specs[0].shape, dtype=np.int64)) * int(np.prod(w[1:]))


class ConvTranspose(_Windowed):
    @classmethod
    def normalize(cls, node):
        x, w, kernel, strides, dilations, group = cls._spatial_common(node)
        n = len(kernel)
        out_pad = list(node.attr("output_padding", [0] * n))
        auto = node.attr("auto_pad", "NOTSET")
        out_shape = node.attr("output_shape", None)
        if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
            out_shape = list(out_shape)[-n:] if out_shape is not None else [s * st for s, st in
                                                                               zip(x.shape[2:], strides)]
            begin, end = [], []
            for size, k, s, d, op, o in zip(x.shape[2:], kernel, strides, dilations, out_pad, out_shape):
                total = s * (size - 1) + op + ((k - 1) * d + 1) - o
                if total < 0:
                    # As ONNX Runtime does: padding is never negative.  An explicit output_shape
                    # beyond the full size gets zeros (+ bias) at the end (a negative end pad
                    # here); SAME with a kernel smaller than the stride keeps the full size.
                    begin.append(0), end.append(total if node.attr("output_shape", None) is not None else 0)
                elif auto == "SAME_UPPER":
                    begin.append(total // 2), end.append(total - total // 2)
                else:  # SAME_LOWER, or output_shape without auto_pad: the odd pixel at the begin
                    begin.append(total - total // 2), end.append(total // 2)
            pads = begin + end
        elif auto == "VALID":
            pads = [0] * 2 * n
        else:
            pads = list(node.attr("pads", [0] * 2 * n))
        return dict(kernel_shape=kernel, strides=strides, dilations=dilations, pads=pads, group=group,
                    output_padding=out_pad)

    @classmethod
    def _out_sizes(cls, layer, x_shape):
        a = layer.attrs
        n = len(a["kernel_shape"])
        return [s * (size - 1) + op + ((k - 1) * d + 1) - a["pads"][i] - a["pads"][i + n]
                for i, (size, k, s, d, op) in enumerate(zip(x_shape[2:], a["kernel_shape"], a["strides"],
                                                           a["dilations"], a["output_padding"]))]

    @classmethod
    def infer(cls, layer, specs):
        x, w = specs[0], specs[1]
        a = layer.attrs
        check(x.shape[1] == w.shape[0], layer, f"input has {x.shape[1]} channels, weights {w.shape} expect {w.shape[0]}")
        check(w.shape[0] % a["group"] == 0, layer, f"{w.shape[0]} input channels not divisible by group")
        out = cls._out_sizes(layer, x.shape)
        check(all(o > 0 for o in out), layer, f"output spatial size {out} is empty")
        return [TensorSpec((x.shape[0], w.shape[1] * a["group"], *out), x.dtype)]

    @classmethod
    def compute(cls, layer, args):
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        out_sizes = cls._out_sizes(layer, x.shape)
        a, x2, w2 = as_2d(layer.attrs, x, w)
        n, c, h, wd = x2.shape
        g, kh, kw = a["group"], *a["kernel_shape"]
        mg = w2.shape[1]
        (sh, sw), (dh, dw), pads = a["strides"], a["dilations"], a["pads"]
        # cols[n, g, (mg, kh, kw), h*w] = W_g^T @ x_g, then scatter-add every kernel tap (col2im).
        cols = np.matmul(w2.reshape(g, c // g, mg * kh * kw).transpose(0, 2, 1), x2.reshape(n, g, c // g, h * wd))
        cols = cols.reshape(n, g * mg, kh, kw, h, wd)
        full_h = max(sh * (h - 1) + (kh - 1) * dh + 1, pads[0] + (out_sizes[-2] if x.ndim == 4 else 1))
        full_w = max(sw * (wd - 1) + (kw - 1) * dw + 1, pads[1] + out_sizes[-1])
        full = np.zeros((n, g * mg, full_h + a["output_padding"][0], full_w + a["output_padding"][1]), x.dtype)
        for i in range(kh):
            for j in range(kw):
                full[:, :, i * dh: i * dh + sh * (h - 1) + 1: sh, j * dw: j * dw + sw * (wd - 1) + 1: sw] += cols[:, :, i, j]
        oh = out_sizes[-2] if x.ndim == 4 else 1
        y = full[:, :, pads[0]: pads[0] + oh, pads[1]: pads[1] + out_sizes[-1]]
        y = np.ascontiguousarray(y)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        if x.ndim == 3:
            y = y[:, :, 0, :]
        return [epilogue(layer, y)]

    @classmethod
    def macs(cls, layer, specs):
        x, w = specs[0].shape, specs[1].shape
        return int(np.prod(x, dtype=np.int64)) * int(np.prod(w[1:]))
