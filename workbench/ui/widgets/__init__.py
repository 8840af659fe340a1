"""The notebook workbench: thin Jupyter views over a :class:`~workbench.session.Session`.

>>> from workbench.widgets import Workbench
>>> Workbench(session)          # in a notebook cell

Every number a view shows comes from :mod:`workbench.ui.views` (plain data computed from the
session) and every action is a Session method; the views hold no state of their own beyond
which layer is selected.  Needs the ``ui`` extra (ipywidgets, plotly, anywidget).
"""
try:
    import ipywidgets  # noqa: F401
    import plotly  # noqa: F401
except ImportError as e:   # pragma: no cover - the ui extra is installed with the project
    from ...errors import WorkbenchError
    raise WorkbenchError(f"the notebook workbench needs the ui extra ({e.name} is missing): "
                         f"pip install 'routine-workbench[ui]'") from None

from .workbench import Workbench

__all__ = ["Workbench"]
