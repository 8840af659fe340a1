"""The op base class and registry: :class:`Op`, ``OPS`` by op type, and the shape checks every op uses."""
from __future__ import annotations

from typing import ClassVar

from ...errors import ShapeError, where
from ..graph import TensorSpec

OPS: dict = {}


class Op:
    """Base class; subclasses register themselves under ``op_type`` (default: the class name)."""

    op_type: ClassVar[str] = ""
    #: Inputs that must be constant after folding (kept as ``Layer.consts``), e.g. Conv weights.
    weight_inputs: ClassVar[tuple] = ()
    #: The layer can absorb a following activation into its epilogue.
    fusable: ClassVar[bool] = False

    def __init_subclass__(cls, register=True, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.op_type = cls.__dict__.get("op_type") or cls.__name__
        if register:
            OPS[cls.op_type] = cls

    @classmethod
    def normalize(cls, node) -> dict:
        return {}

    @classmethod
    def infer(cls, layer, specs):
        # Ops without a shape function (Range, ConstantOfShape, ...) are only taken when their
        # inputs are constant, so that import folds them away.
        raise ShapeError(f"{where(layer)}: its output shape depends on values known only at run time "
                         f"(non-constant inputs {layer.activation_inputs}); only static shapes are supported")

    @classmethod
    def compute(cls, layer, args):
        raise NotImplementedError(cls.op_type)

    @classmethod
    def macs(cls, layer, specs) -> int:
        """Multiply-accumulates of one run (0 for ops that are not MAC-bound)."""
        return 0


def check(condition, layer, message):
    """Raise a :class:`ShapeError` naming ``layer`` unless ``condition`` holds."""
    if not condition:
        raise ShapeError(f"{where(layer)}: {message}")


def same_as_input(layer, specs, index=0):
    return [TensorSpec(specs[index].shape, specs[index].dtype)]


def get(op_type: str):
    """The :class:`Op` class for ``op_type``, or None when unsupported."""
    return OPS.get(op_type)
