"""What every view module needs: milliseconds, the plan or a clear error, the colour floor."""
from __future__ import annotations

import math

from ...session import NotTunedError

#: The smallest time a view colours or divides by: a reshape that is a view of its input
#: costs 0, and neither log10(0) nor x/0 draws.
FLOOR_MS = 1e-4


def ms(seconds):
    return seconds * 1e3


def need_plan(session):
    if session.plan is None:
        raise NotTunedError("no plan yet: call tune() first")
    return session.plan


def missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))
