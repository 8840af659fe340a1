"""What a compiled model's runs are made of: the bound steps, and the executor (an arena and the
steps bound to it) that one caller at a time runs them with (:mod:`workbench.runtime.compiled`)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Step:
    """One bound unit of work: a layer under its routine, or an adapt on one tensor."""

    kind: str          # "layer" or "adapt"
    name: str          # layer name, or "adapt:<tensor>:<src>-><dst>"
    what: str          # routine descriptor or adapt name
    run: object        # zero-argument callable
    layer: object = None


@dataclass
class _Executor:
    """What one caller at a time runs: its own arena, the steps bound to it (with their own
    prepared state) and the caller's arrays that adapts read in place during a run."""

    arenas: list
    views: dict
    steps: list = field(default_factory=list)
    fed: dict = field(default_factory=dict)
    threads: int = 1   # this run's thread count, read by every step when it runs
