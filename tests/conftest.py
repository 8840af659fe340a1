"""Test set-up: the helper modules (tests/onnx_helpers.py, tests/routine_helpers.py,
tests/ops/_onnx_case.py) are importable
by name from any test file; pytest runs with --import-mode=importlib so test file names may repeat
across folders."""
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(__file__)
for folder in (HERE, os.path.join(HERE, "ops")):
    if folder not in sys.path:
        sys.path.insert(0, folder)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
