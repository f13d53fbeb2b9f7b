"""Numbers for people: one rule per unit, shared by the terminal tables, the HTML report and the plots."""

from __future__ import annotations

import math


def duration(seconds: float | None) -> str:
    """``4.2 s``, ``42 s``, ``7.5 min``, ``2.1 h``; ``n/a`` when missing or not finite."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def count(value: float) -> str:
    """A count in at most five characters: ``850``, ``4.3k``, ``12k``, ``25.6M`` (parameters, images)."""
    if value < 1e3:
        return f"{value:.0f}"
    if value < 1e6:
        return f"{value / 1e3:.1f}k" if value < 1e4 else f"{value / 1e3:.0f}k"
    return f"{value / 1e6:.1f}M"
