"""Buffer planning: values whose lives overlap never share a slot; dead buffers are reused."""
import numpy as np
from hypothesis import given, settings, strategies as st

from workbench.runtime.memory import PAGE, STAGGER, Value, plan_memory


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(-1, 30), st.integers(0, 12), st.integers(1, 5000)), min_size=1, max_size=40))
def test_slots_in_one_arena_are_disjoint_and_staggered(spans):
    """Each slot's view lies inside the one arena, apart from every other slot's, and starts
    ``slot * STAGGER`` bytes past a page boundary (mod a page): slots never share cache-set
    alignment, whatever addresses the allocator returns."""
    values = [Value(("t%d" % i, "nchw"), (size,), "float32", first, first + length)
              for i, (first, length, size) in enumerate(spans)]
    plan = plan_memory(values)
    (arena,), views = plan.allocate()
    lo, hi = arena.ctypes.data, arena.ctypes.data + arena.nbytes
    spans_of = {}
    for v in values:
        addr = views[v.key].ctypes.data
        assert lo <= addr and addr + v.nbytes <= hi
        assert addr % PAGE == (v.slot * STAGGER) % PAGE
        spans_of.setdefault(v.slot, (addr, addr + plan.slot_sizes[v.slot]))
    ordered = sorted(spans_of.values())
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(ordered, ordered[1:]))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(-1, 30), st.integers(0, 12), st.integers(1, 5000)), min_size=1, max_size=40))
def test_overlapping_lives_never_share_a_slot(spans):
    values = [Value(("t%d" % i, "nchw"), (size,), "float32", first, first + length)
              for i, (first, length, size) in enumerate(spans)]
    plan = plan_memory(values)
    for a in values:
        assert plan.slot_sizes[a.slot] >= a.nbytes
        for b in values:
            if a is not b and a.slot == b.slot:
                assert a.last < b.first or b.last < a.first, (a, b)
    # Never more memory than one buffer per value.
    assert plan.total_bytes <= sum(v.nbytes for v in values)


def test_views_are_disjoint_while_live():
    values = [Value(("a", "nchw"), (4, 5), "float32", 0, 1), Value(("b", "nchw"), (3,), "float32", 1, 2),
              Value(("c", "nchw"), (20,), "float32", 2, 3)]
    plan = plan_memory(values)
    arenas, views = plan.allocate()
    assert plan.values[("a", "nchw")].slot == plan.values[("c", "nchw")].slot   # a is dead when c is written
    views[("a", "nchw")][...] = 1
    views[("b", "nchw")][...] = 2
    assert np.all(views[("a", "nchw")] == 1)
    assert views[("c", "nchw")].shape == (20,) and views[("c", "nchw")].dtype == np.float32
