"""Numbers for people: one rule per unit, shared by the terminal tables, the HTML report and the plots."""

from __future__ import annotations

import math
from typing import Any

# a run's metric (eval.json's key) -> its name for people: the one table of the CLI, the report and the model card
METRIC_LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1",
                 "weighted_f1": "weighted F1", "worst_class_recall": "worst-class recall", "ece": "ECE (calibrated)",
                 "ece_uncalibrated": "ECE (uncalibrated)", "temperature": "temperature", "nll": "NLL"}


def time_unit(seconds: float) -> tuple[str, float]:
    """The unit a duration is shown in and its length in seconds: ``s`` below 2 min, ``min`` below 2 h, else ``h``
    (also a plot axis's unit, from its longest bar)."""
    return ("s", 1.0) if seconds < 120 else ("min", 60.0) if seconds < 7200 else ("h", 3600.0)


def duration(seconds: float | None) -> str:
    """``0.35 s``, ``4.2 s``, ``42 s``, ``7.5 min``, ``2.1 h``; ``n/a`` when missing or not finite."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    unit, scale = time_unit(seconds)
    if seconds < 10:
        return f"{seconds:.{2 if seconds < 1 else 1}f} s"
    return f"{seconds / scale:.{0 if unit == 's' else 1}f} {unit}"


def count(value: float) -> str:
    """A count in at most five characters: ``850``, ``4.3k``, ``12k``, ``25.6M`` (parameters, images)."""
    if value < 1e3:
        return f"{value:.0f}"
    if value < 1e6:
        return f"{value / 1e3:.1f}k" if value < 1e4 else f"{value / 1e3:.0f}k"
    return f"{value / 1e6:.1f}M"


def rate(value: float) -> str:
    """A rate (images/s): one decimal below 100, none from 100 up, thousands separated (``42.5``, ``1,234``)."""
    return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"


def percent(value: float) -> str:
    """A fraction as a percentage: ``100%`` only when exactly 1, else one decimal (``99.6%`` must not read as
    100%, nor ``99.96%``: that is ``99.9%``); whole percentages without a decimal (``80%``)."""
    if abs(value * 100 - round(value * 100)) < 1e-9:
        return f"{value:.0%}"
    return "99.9%" if 0.999 <= value < 1.0 else f"{value:.1%}"


def finite(value: Any) -> float | None:
    """A finite float from a CSV cell or JSON value, else None (for None, ``""``, ``"nan"``, junk)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# number kind -> its text; ``fmt`` picks one
FORMATS = {
    "params": count, "sec": duration, "rate": rate, "pct": percent, "ms": "{:.2f}".format, "ratio": "{:.2f}".format,
    "int": "{:,.0f}".format, "score": "{:.3f}".format,
}


def fmt(value: Any, kind: str = "score", missing: str = "\u2013") -> str:
    """Display text for a number of the given kind: ``missing`` (an en dash in the report, ``-`` in the terminal)
    for None or junk, text as it is."""
    x = finite(value)
    if kind == "text" or (x is None and value not in (None, "")):
        return str(value)
    return missing if x is None else FORMATS.get(kind, FORMATS["score"])(x)


def md(text: Any) -> str:
    """``text`` as literal Markdown inline text (a model card, leaderboard.md): HTML and Markdown syntax
    characters escaped, on one line; ``None`` is empty."""
    plain = "" if text is None else str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join("".join("\\" + c if c in "\\`*_[]|#~!" else c for c in plain).split())
