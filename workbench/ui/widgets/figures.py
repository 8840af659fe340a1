"""What every figure view needs: values plotly can send as JSON, and a scrolling pane."""
from __future__ import annotations

import math

import ipywidgets as w
import numpy as np


def finite(values):
    """``values`` (scalars, nested sequences or arrays) as plain lists with None for NaN and
    infinities: plotly serialises NaN as-is, which is not JSON, and the kernel then warns
    "Out of range float values are not JSON compliant" above the widget."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [finite(v) for v in values]
    if isinstance(values, float) and not math.isfinite(values):
        return None
    return values


def pane(child, max_height, css):
    """``child`` in a block that scrolls past ``max_height``, as wide as the output area, so a
    figure of hundreds of rows neither stretches the notebook nor gets cut off."""
    box = w.Box([child], layout=w.Layout(display="block", overflow="auto", max_height=max_height, width="100%"))
    box.add_class(css)
    return box
