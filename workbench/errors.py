"""Errors that name what went wrong and where (file, node, op, input, field).

Every error the package raises on bad input derives from :class:`WorkbenchError`, so the CLI can
turn them into a one-line message and exit code 2 instead of a traceback.
"""


class WorkbenchError(Exception):
    """Base class of every error raised on bad input."""


class ModelFileError(WorkbenchError):
    """The model file is missing, not ONNX, truncated or otherwise unreadable."""


class UnsupportedOpsError(WorkbenchError):
    """The model uses operators the importer does not support.

    Attributes
    ----------
    ops : dict[str, list[str]]
        Op type (with domain when not the default one) -> names of the nodes that use it.
    """

    def __init__(self, ops):
        self.ops = {op: list(nodes) for op, nodes in sorted(ops.items())}
        lines = [f"  {op}: {', '.join(nodes[:8])}" + (f" (+{len(nodes) - 8} more)" if len(nodes) > 8 else "")
                 for op, nodes in self.ops.items()]
        super().__init__(f"model uses {len(self.ops)} unsupported op type(s):\n" + "\n".join(lines))


class ModelImportError(WorkbenchError):
    """A supported op is used in a way the importer cannot take (attribute, dynamic input, ...)."""


class ShapeError(WorkbenchError):
    """Static shape inference failed: inconsistent shapes or missing dimension values."""


class InputError(WorkbenchError):
    """Inputs given at run time do not match the model (unknown name, shape, dtype)."""


def where(layer):
    """Describe a layer for an error message: ``node 'conv_12' (Conv)``."""
    return f"node {layer.name!r} ({layer.op})"


class PinError(WorkbenchError):
    """A pin that names an unknown layer, an unknown routine or precision, or one that does not apply."""
