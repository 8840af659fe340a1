"""Choosing routines: timing them, the profile database, the selection problem and its pure
search, in-context timing, routine filters and comparisons."""
