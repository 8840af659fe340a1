"""Per-tensor quantization parameters: where a qint8 tensor's scale and zero point live.

A format says only a tensor's data type and layout (:class:`~workbench.ir.formats.Format`): the
selection compares formats, and two qint8 routines agree on a tensor whenever they agree on its
format.  The numbers that map its integers to real values belong to the tensor, not to the
routines or the plan: they come from calibration (or from a model that was quantized already)
and are the same whichever routine reads or writes the tensor.  So they live beside the graph,
in its :class:`QuantTable` (``graph.quant``), keyed by tensor name; qint8 routines and quantize
adapts look them up there, and tuned files store the table with the plan.

``real = scale * (q - zero_point)``, as ONNX's QuantizeLinear and DequantizeLinear: one scale and
zero point for the tensor, or one per channel along ``axis`` (weights).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import WorkbenchError

#: Integer ranges of the quantized data types.
RANGES = {"int8": (-128, 127), "uint8": (0, 255)}


class QuantError(WorkbenchError):
    """Quantization parameters that are malformed, or missing where a routine needs them."""


@dataclass(frozen=True)
class QuantParams:
    """How a tensor's values map to 8-bit integers: ``real = scale * (q - zero_point)``.

    ``scale`` and ``zero_point`` are tuples, of one element (per tensor) or one per channel along
    ``axis`` (ONNX order); ``dtype`` ``"int8"`` or ``"uint8"``; ``source`` says where they came
    from (a calibration method and its inputs, or the model), for the user's eyes.
    """

    scale: tuple
    zero_point: tuple
    dtype: str = "int8"
    axis: int = None
    source: str = ""

    def __post_init__(self):
        scale = tuple(float(s) for s in np.atleast_1d(np.asarray(self.scale, np.float64)).ravel())
        zero = tuple(int(z) for z in np.atleast_1d(np.asarray(self.zero_point)).ravel())
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero)
        if self.dtype not in RANGES:
            raise QuantError(f"quantization data type must be one of {', '.join(RANGES)}, got {self.dtype!r}")
        if not scale or len(scale) != len(zero):
            raise QuantError(f"quantization parameters need as many zero points as scales (at least one), got "
                             f"{len(scale)} scale(s) and {len(zero)} zero point(s)")
        bad = [s for s in scale if not (math.isfinite(s) and s > 0)]
        if bad:
            raise QuantError(f"a quantization scale must be positive and finite, got {bad[0]!r}")
        lo, hi = RANGES[self.dtype]
        out = [z for z in zero if not lo <= z <= hi]
        if out:
            raise QuantError(f"zero point {out[0]} lies outside {self.dtype}'s range [{lo}, {hi}]")
        if len(scale) > 1 and self.axis is None:
            raise QuantError(f"{len(scale)} scales (per channel) need the channel axis they run along")

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1

    def _broadcast(self, ndim):
        """scale and zero point shaped to broadcast against an array of ``ndim`` axes."""
        s, z = np.asarray(self.scale, np.float32), np.asarray(self.zero_point, np.float32)
        if not self.per_channel:
            return s[0], z[0]
        axis = self.axis % ndim
        shape = [1] * ndim
        shape[axis] = len(self.scale)
        return s.reshape(shape), z.reshape(shape)

    def quantize(self, x) -> np.ndarray:
        """``x`` rounded to this tensor's integers, as QuantizeLinear (ties to even, saturated)."""
        x = np.asarray(x, np.float32)
        self._check_channels(x)
        s, z = self._broadcast(x.ndim)
        lo, hi = RANGES[self.dtype]
        return np.clip(np.rint(x / s) + z, lo, hi).astype(self.dtype)

    def dequantize(self, q) -> np.ndarray:
        """The real values of integers ``q``, as DequantizeLinear."""
        q = np.asarray(q)
        self._check_channels(q)
        s, z = self._broadcast(q.ndim)
        return ((q.astype(np.float32) - z) * s).astype(np.float32)

    def _check_channels(self, a):
        if self.per_channel and (a.ndim == 0 or not -a.ndim <= self.axis < a.ndim
                                 or a.shape[self.axis] != len(self.scale)):
            raise QuantError(f"{len(self.scale)} per-channel scales along axis {self.axis} do not fit a tensor "
                             f"of shape {a.shape}")

    def to_record(self) -> dict:
        """Plain data (JSON-ready); :meth:`from_record` is the inverse."""
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "dtype": self.dtype,
                "axis": self.axis, "source": self.source}

    @classmethod
    def from_record(cls, record) -> "QuantParams":
        if not isinstance(record, dict) or not {"scale", "zero_point"} <= set(record):
            raise QuantError(f"quantization parameters must be an object with scale and zero_point, got {record!r}")
        unknown = sorted(set(record) - {"scale", "zero_point", "dtype", "axis", "source"})
        if unknown:
            raise QuantError(f"unknown quantization parameter field(s) {unknown}")
        try:
            return cls(record["scale"], record["zero_point"], record.get("dtype", "int8"), record.get("axis"),
                       str(record.get("source", "")))
        except (TypeError, ValueError) as e:
            raise QuantError(f"malformed quantization parameters {record!r}: {e}") from None


def per_tensor(params, who, dtype="uint8"):
    """``(scale, zero point)`` of per-tensor ``dtype`` ``params`` (activations' parameters);
    QuantError naming ``who`` where there are none or they are not such."""
    if params is None:
        raise QuantError(f"{who}: the tensor has no quantization parameters (calibrate first)")
    if params.per_channel or params.dtype != dtype:
        raise QuantError(f"{who}: activations are quantized per tensor to {dtype}, got "
                         f"{len(params.scale)} scale(s) of {params.dtype}")
    return params.scale[0], params.zero_point[0]


class QuantTable:
    """The quantization parameters of a graph's tensors, by tensor name (empty until calibration
    or a quantized model fills it)."""

    def __init__(self, entries=None):
        self._entries = {}
        for tensor, params in dict(entries or {}).items():
            self[tensor] = params

    def __setitem__(self, tensor, params):
        if not isinstance(params, QuantParams):
            raise TypeError(f"quantization parameters of {tensor!r} must be QuantParams, got {type(params).__name__}")
        self._entries[str(tensor)] = params

    def pop(self, tensor, default=None):
        return self._entries.pop(tensor, default)

    def __getitem__(self, tensor) -> QuantParams:
        return self._entries[tensor]

    def __contains__(self, tensor):
        return tensor in self._entries

    def __len__(self):
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def items(self):
        return self._entries.items()

    def get(self, tensor, default=None):
        return self._entries.get(tensor, default)

    def require(self, tensor, who) -> QuantParams:
        """The parameters of ``tensor``; QuantError naming it and ``who`` needs them where none are."""
        if tensor not in self._entries:
            raise QuantError(f"missing calibration data: tensor {tensor!r} (needed by {who}) has no quantization "
                             f"parameters; quantize with calibration inputs that reach it first")
        return self._entries[tensor]

    def to_record(self) -> dict:
        return {t: p.to_record() for t, p in sorted(self._entries.items())}

    @classmethod
    def from_record(cls, record, tensors=None) -> "QuantTable":
        """A table from :meth:`to_record`'s data; ``tensors``: the names it may use (the graph's)."""
        if not isinstance(record, dict):
            raise QuantError(f"a quantization table must be an object of tensor: parameters, got {type(record).__name__}")
        if tensors is not None:
            stray = sorted(set(record) - set(tensors))
            if stray:
                raise QuantError(f"quantization parameters for {stray[:5]}, no tensors of the graph")
        table = cls()
        for tensor, params in record.items():
            try:
                table[tensor] = QuantParams.from_record(params)
            except QuantError as e:
                raise QuantError(f"tensor {tensor!r}: {e}") from None
        return table

    def __repr__(self):
        return f"QuantTable({len(self)} tensor(s))"
