"""Routine Workbench: layer/routine separated CNN inference, tuned on the machine it runs on.

>>> import workbench
>>> graph = workbench.load("resnet50.onnx")          # import + fusion passes
>>> outputs = workbench.ReferenceExecutor(graph).run(workbench.random_inputs(graph))
"""
from .errors import (InputError, ModelFileError, ModelImportError, ShapeError, UnsupportedOpsError,
                     WorkbenchError)
from .execute import Interpreter, ReferenceExecutor, random_inputs
from .graph import Graph, Layer, TensorSpec
from .onnx_import import import_onnx
from .passes import optimize

__version__ = "0.1.0"


def load(source, batch=None, resolution=None, shapes=None, fuse=True):
    """Import an ONNX model and (by default) run the fusion pipeline.

    Parameters
    ----------
    source : str, Path, bytes or onnx.ModelProto
    batch, resolution, shapes
        Values for symbolic input dimensions; see :func:`workbench.onnx_import.import_onnx`.
    fuse : bool
        Run :func:`workbench.passes.optimize` (folding, BatchNorm/activation/residual fusion).

    Returns
    -------
    Graph
    """
    graph = import_onnx(source, batch=batch, resolution=resolution, shapes=shapes)
    if fuse:
        optimize(graph)
    return graph


__all__ = ["load", "import_onnx", "optimize", "Graph", "Layer", "TensorSpec", "Interpreter", "ReferenceExecutor",
           "random_inputs", "WorkbenchError", "ModelFileError", "ModelImportError", "UnsupportedOpsError",
           "ShapeError", "InputError"]
