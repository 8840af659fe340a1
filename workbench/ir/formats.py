"""Tensor formats: a data type and a memory layout, the unit routines read and write, adapts
convert between and the selection chooses among.

``Format("float32", "nhwc")`` prints as ``float32:nhwc``; :meth:`Format.parse` reads that back,
and a bare layout (``"nhwc"``, as tuned files before data types were part of formats wrote it)
as float32.  bfloat16 arrays are NumPy arrays of ``ml_dtypes.bfloat16`` (two bytes, the upper
half of a float32): ONNX already depends on ml_dtypes, and with it ``np.dtype("bfloat16")``,
casts and reductions work as for any NumPy type, so the references and tests need no
conversions of their own.

qint8 is a data type of routines, not of arrays: a float tensor that qint8 routines pass between
them is held as ``uint8`` (:data:`QUANTIZED`), its scale and zero point in the graph's
:class:`~workbench.ir.quant.QuantTable`, so its format is ``uint8:nhwc``; :func:`storage` maps a
routine's data type to the arrays it holds floats in.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes  # noqa: F401  (registers bfloat16 with NumPy: np.dtype("bfloat16"))
import numpy as np

#: The data types routines compute floats in, by name (a plan's precisions).
DTYPES = ("float32", "bfloat16", "qint8")
#: The array type of a quantized float tensor: asymmetric 8-bit, the activations' type on
#: VNNI's u8 x s8 multiply-add.
QUANTIZED = "uint8"


def storage(dtype) -> str:
    """The NumPy type holding floats computed in ``dtype`` (a :data:`DTYPES` name)."""
    return QUANTIZED if dtype == "qint8" else dtype


@dataclass(frozen=True, order=True)
class Format:
    """A data type (``DTYPES``, or the tensor's own type for indices and shapes) and a layout
    (``nchw``, ``nhwc``; tensors that are not images keep their native order, named ``nchw``)."""

    dtype: str
    layout: str

    def __str__(self):
        return f"{self.dtype}:{self.layout}"

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @classmethod
    def parse(cls, text) -> "Format":
        """``"float32:nhwc"`` -> Format; a bare layout is float32; a Format is returned as is."""
        if isinstance(text, Format):
            return text
        dtype, _, layout = str(text).rpartition(":")
        if not layout:
            raise ValueError(f"malformed tensor format {text!r}: expected DTYPE:LAYOUT")
        return cls(np.dtype(dtype or "float32").name, layout)


#: Short names accepted wherever a data type is asked for.
ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "int8": "qint8", "q8": "qint8"}


def parse_precisions(values) -> tuple:
    """The data types a plan may compute in: float32 first (layers no other routine serves keep
    it), then each of ``values`` (names or :data:`ALIASES`; a comma-separated string too) once.
    ValueError naming an unknown one."""
    if isinstance(values, str):
        values = values.split(",")
    out = ["float32"]
    for v in values:
        name = ALIASES.get(str(v).strip().lower(), str(v).strip().lower())
        if name not in DTYPES:
            raise ValueError(f"unknown precision {v!r}: expected one of {', '.join(DTYPES)} "
                             f"(or {', '.join(ALIASES)})")
        if name not in out:
            out.append(name)
    return tuple(out)
