"""The package's modules import each other one way: no cycle, counting the imports inside functions
too (a lazy import hides a cycle, it does not cut it)."""
import ast
from pathlib import Path

import networkx as nx

import workbench

ROOT = Path(workbench.__file__).parent


def _modules():
    """``{dotted name: (path, is package)}`` of every Python module of the package."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _edges(modules):
    for name, (path, package) in modules.items():
        base = name.split(".") if package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    head = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    head = node.module or ""
                # "from package import module" imports the module; "from module import name", the module
                targets = [f"{head}.{a.name}" if f"{head}.{a.name}" in modules else head for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in modules:   # "import workbench.x.y" of a module; names inside it
                    t = t.rpartition(".")[0]
                if t and t != name:
                    yield name, t


def test_the_walk_sees_the_imports():
    """The walk finds the imports it should (a walk that saw none would pass the test below)."""
    edges = set(_edges(_modules()))
    assert ("workbench.session", "workbench.runtime.compiled") in edges
    assert ("workbench.runtime.compiled", "workbench.routines") in edges
    assert ("workbench.cli.tune", "workbench.cli.common") in edges   # inside a function
    assert len(edges) > 150


def test_no_import_cycle():
    graph = nx.DiGraph(_edges(_modules()))
    cycles = sorted(nx.simple_cycles(graph), key=len)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:20])
