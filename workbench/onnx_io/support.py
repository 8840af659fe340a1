"""Which of a model's nodes the importer takes: each node's op looked up by its domain, op type and
that domain's opset version in the model (:func:`workbench.ir.ops.lookup`), and every node no
class reads listed at once (:func:`unsupported_ops`)."""
from __future__ import annotations

from ..ir import ops

#: Ops handled by the importer itself rather than by an :class:`~workbench.ir.ops.Op` (an If
#: whose condition folds is its branch, a Loop whose trip count folds and a Scan are their
#: iterations: ``control_flow.py``).
STRUCTURAL_OPS = ("Constant", "If", "Loop", "Scan")
#: Our own ops: valid inside a Graph, never accepted from a file.
INTERNAL_OPS = ("ChannelAffine",)


def _opsets(model):
    """``{domain: version}`` the model imports, the default domain as ""."""
    return {("" if imp.domain in ("", "ai.onnx") else imp.domain): imp.version for imp in model.opset_import}


def _default_opset(model):
    return _opsets(model).get("", 1)


def _domain(node):
    return "" if node.domain in ("", "ai.onnx") else node.domain


def unsupported_ops(model):
    """Op type (``domain.op`` outside the default domain) -> node names for every node the
    importer cannot take, in the graph or in an If's branches (empty dict if none)."""
    from .control_flow import all_nodes
    bad, opsets = {}, _opsets(model)
    for i, node in enumerate(all_nodes(model.graph)):
        name = node.name or f"{node.op_type}_{i}"
        domain = _domain(node)
        if not domain and node.op_type in STRUCTURAL_OPS:
            continue
        op = ops.lookup(domain, node.op_type, opsets.get(domain, 1))
        if op is None or op.op_type in INTERNAL_OPS:
            bad.setdefault(f"{domain}.{node.op_type}" if domain else node.op_type, []).append(name)
    return bad
