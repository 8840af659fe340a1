"""The notebook widgets' public import path (``from workbench.widgets import Workbench``); they
live in :mod:`workbench.ui.widgets`, beside the views they draw."""
from .ui.widgets import *  # noqa: F401,F403
from .ui.widgets import __all__  # noqa: F401
