"""Routine Workbench: layer/routine separated CNN inference, tuned on the machine it runs on.

>>> import workbench
>>> graph = workbench.load("resnet50.onnx")          # import + fusion passes
>>> outputs = workbench.ReferenceExecutor(graph).run(workbench.random_inputs(graph))
"""
import os

from ._version import __version__
from .errors import (InputError, ModelFileError, ModelImportError, ShapeError, UnsupportedOpsError,
                     WorkbenchError)
from .ir.graph import Graph, Layer, TensorSpec
from .ir.passes import optimize
from .onnx_io.read import import_onnx
from .runtime.interpreter import Interpreter, ReferenceExecutor, random_inputs
from .session import Session


def load(source, batch=None, resolution=None, shapes=None, fuse=True, num_threads=None, constants=None):
    """Import an ONNX model and (by default) run the fusion pipeline; a tuned file (written by
    :meth:`Session.export` / ``workbench tune``) comes back ready to run instead.

    Parameters
    ----------
    source : str, Path, bytes or onnx.ModelProto
    batch, resolution, shapes
        Values for symbolic input dimensions; see :func:`workbench.onnx_io.read.import_onnx`.
    constants : dict, optional
        Values of inputs fixed for this use (they fold at load; an ``If`` on them takes its branch).
    fuse : bool
        Run :func:`workbench.ir.passes.optimize` (folding, BatchNorm/activation/residual fusion).
    num_threads : int, optional
        For a tuned file: threads to run with (default: those it was tuned with).

    Returns
    -------
    Graph, or Session for a tuned file (``.run(inputs)``; warns when tuned on another machine)
    """
    from .onnx_io.read import read_model
    from .tuned_file import is_tuned
    model = read_model(source)
    if is_tuned(model):
        return Session.load(model, num_threads=num_threads, name=_name(source), stacklevel=3)
    graph = import_onnx(model, batch=batch, resolution=resolution, shapes=shapes, constants=constants)
    if fuse:
        optimize(graph)
    return graph


def _name(source):
    return str(source) if isinstance(source, (str, os.PathLike)) else None


__all__ = ["load", "Session", "import_onnx", "optimize", "Graph", "Layer", "TensorSpec", "Interpreter", "ReferenceExecutor",
           "random_inputs", "WorkbenchError", "ModelFileError", "ModelImportError", "UnsupportedOpsError",
           "ShapeError", "InputError"]
