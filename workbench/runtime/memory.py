"""Buffer planning: every intermediate tensor gets a slot in one preallocated arena, reused once
the tensor is dead (liveness over the step list), so steady-state inference allocates nothing.
Slots are laid out at staggered cache-set alignments (:meth:`MemoryPlan.slot_offsets`), so that a
compiled model's speed does not depend on where the allocator happened to put its buffers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PAGE = 4096
STAGGER = 17 * 64   # bytes: an odd number of cache lines between slots' cache-set alignments


@dataclass
class Value:
    """A tensor in one format: written at step ``first``, last read at step ``last``."""

    key: tuple            # (tensor name, Format)
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

    def slot_offsets(self):
        """Byte offset of each slot in the one arena: page aligned, then slot ``k`` shifted by
        ``k * STAGGER`` bytes (mod a page), so that tensors of different slots do not start on
        the same cache sets.  Separate allocations start wherever the allocator puts them, and
        the same plan compiled twice ran MobileNetV2 2.6% apart (a depthwise layer whose input
        and output landed on the same L1/L2 sets 20% slower)."""
        offsets, end = [], 0
        for k, size in enumerate(self.slot_sizes):
            start = -(-end // PAGE) * PAGE + (k * STAGGER) % PAGE
            offsets.append(start)
            end = start + size
        return offsets, end

    def allocate(self):
        """The arena (one array, page aligned), and a ``{key: ndarray view}`` into it."""
        offsets, total = self.slot_offsets()
        raw = np.empty(total + PAGE, np.uint8)
        base = -raw.ctypes.data % PAGE
        arena = raw[base: base + max(total, 1)]
        views = {}
        for key, v in self.values.items():
            start = offsets[v.slot]
            views[key] = arena[start: start + v.nbytes].view(v.dtype).reshape(v.shape)
        return [arena], views


def plan_memory(values, resident=()) -> MemoryPlan:
    """Assign each :class:`Value` a slot; two values share a slot only if their lives are disjoint.

    A value is live from the step that writes it through the step that last reads it
    (inclusive: a step's outputs never alias its inputs).  Greedy by start time, best fit among
    free slots, growing a free slot when none is large enough.  Each of ``resident`` (live
    throughout: the routines' shared workspace) gets a slot of its own after all the others, so
    that it moves no tensor's slot (nor its cache-set alignment).
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
    for v in resident:
        v.slot = len(sizes)
        sizes.append(v.nbytes)
    return MemoryPlan({v.key: v for v in list(values) + list(resident)}, sizes)
