"""The op base class and registries: :class:`Op`; ``OPS`` by the op type layers carry;
``IMPORTS`` by what a model file names, (domain, op type) with the first opset version of that
domain each class reads (:func:`lookup`), so that ops of other domains (``com.microsoft``'s
QLinearAdd, say) and later versions of an op are added beside the others; the shape checks every
op uses."""
from __future__ import annotations

from typing import ClassVar

from ...errors import ShapeError, where
from ..graph import TensorSpec

OPS: dict = {}       # layer op type -> Op
IMPORTS: dict = {}   # (domain, ONNX op type) -> [(first opset version, Op)]
#: The names of the default domain.
DEFAULT_DOMAINS = ("", "ai.onnx")


class Op:
    """Base class; subclasses register themselves under ``op_type`` (default: the class name)."""

    op_type: ClassVar[str] = ""
    #: The domain a model file names the op in ("" for the default, ai.onnx) and the first
    #: version of that domain's opset this class reads (a later version may register its own).
    domain: ClassVar[str] = ""
    since: ClassVar[int] = 1
    #: Inputs that must be constant after folding (kept as ``Layer.consts``), e.g. Conv weights.
    weight_inputs: ClassVar[tuple] = ()
    #: The layer can absorb a following activation into its epilogue.
    fusable: ClassVar[bool] = False

    def __init_subclass__(cls, register=True, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.op_type = cls.__dict__.get("op_type") or cls.__name__
        if register:
            OPS[cls.op_type] = cls
            versions = IMPORTS.setdefault((cls.domain, cls.__dict__.get("onnx_type") or cls.op_type), [])
            versions[:] = sorted([v for v in versions if v[1].__qualname__ != cls.__qualname__] + [(cls.since, cls)],
                                 key=lambda v: -v[0])

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
    """The :class:`Op` class of layers of ``op_type``, or None when unsupported."""
    return OPS.get(op_type)


def lookup(domain: str, op_type: str, opset: int):
    """The :class:`Op` class that reads ONNX op ``op_type`` of ``domain`` in a model importing
    that domain at version ``opset``, or None when none does."""
    domain = "" if domain in DEFAULT_DOMAINS else domain
    return next((cls for since, cls in IMPORTS.get((domain, op_type), ()) if opset >= since), None)
