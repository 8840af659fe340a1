"""The ``workbench`` command: one module per command group (main: info, run, routines, zoo, demo;
tune: profile and tune; bench), the shared helpers in one place."""
from .main import main

__all__ = ["main"]
