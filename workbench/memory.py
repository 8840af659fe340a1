"""Buffer planning: every intermediate tensor gets a slot in a few preallocated arenas, reused
once the tensor is dead (liveness over the step list), so steady-state inference allocates nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Value:
    """A tensor in one format: written at step ``first``, last read at step ``last``."""

    key: tuple            # (tensor name, layout)
    shape: tuple          # physical shape
    dtype: str
    first: int
    last: int
    slot: int = -1

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class MemoryPlan:
    values: dict                                   # key -> Value
    slot_sizes: list = field(default_factory=list)  # bytes per slot

    @property
    def total_bytes(self):
        return sum(self.slot_sizes)

    def allocate(self):
        """The arenas, and a ``{key: ndarray view}`` into them."""
        arenas = [np.empty(max(size, 1), np.uint8) for size in self.slot_sizes]
        views = {}
        for key, v in self.values.items():
            # 64-byte aligned start: arenas come from NumPy's allocator, views start at offset 0.
            raw = arenas[v.slot][: v.nbytes]
            views[key] = raw.view(v.dtype).reshape(v.shape)
        return arenas, views


def plan_memory(values) -> MemoryPlan:
    """Assign each :class:`Value` a slot; two values share a slot only if their lives are disjoint.

    A value is live from the step that writes it through the step that last reads it
    (inclusive: a step's outputs never alias its inputs).  Greedy by start time, best fit among
    free slots, growing a free slot when none is large enough.
    """
    values = sorted(values, key=lambda v: (v.first, -v.nbytes, str(v.key)))
    sizes, busy_until = [], []
    for v in values:
        free = [s for s in range(len(sizes)) if busy_until[s] < v.first]
        fitting = [s for s in free if sizes[s] >= v.nbytes]
        if fitting:
            slot = min(fitting, key=lambda s: sizes[s])
        elif free:
            slot = max(free, key=lambda s: sizes[s])
            sizes[slot] = v.nbytes
        else:
            slot = len(sizes)
            sizes.append(v.nbytes)
            busy_until.append(-1)
        v.slot = slot
        busy_until[slot] = v.last
    return MemoryPlan({v.key: v for v in values}, sizes)
