"""Forms of a routine that differ from it only in the data type of their edges.

A bfloat16 routine comes in up to four forms: its tensors in bfloat16, or its input, its output
or both in float32 (rounded as the kernel reads it, written from the float32 sums), so that the
selection can enter or leave bfloat16 inside a layer instead of through a cast adapt.  What a
form changes is a mixin of its family (the formats it declares, the data type its kernel is
given); :func:`edge_forms` makes the registered subclasses from a table of them.
"""
from __future__ import annotations

#: The class-name part of each form's algo suffix.
_NAMES = {"f32out": "F32Out", "f32in": "F32In", "f32io": "F32IO"}


def edge_forms(base, namespace, forms):
    """For each ``(suffix, mixins, priority)`` of ``forms``: a subclass of ``base`` with ``mixins``
    in front, algo ``base.algo + "_" + suffix`` (so registered as such), put in ``namespace`` (a
    module's ``globals()``) as ``base.__name__`` + the suffix's name.  Returns the classes."""
    made = []
    for suffix, mixins, priority in forms:
        name = base.__name__ + _NAMES[suffix]
        cls = type(name, tuple(mixins) + (base,), {"algo": f"{base.algo}_{suffix}", "priority": priority,
                                                   "__module__": base.__module__, "__qualname__": name,
                                                   "__doc__": f"{base.__name__} with its {suffix[3:]} in float32."})
        namespace[name] = cls
        made.append(cls)
    return made
