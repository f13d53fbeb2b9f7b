"""The bake-off: several architectures on the same folds (or seeds) of one split, a verdict decided on
held-out predictions (never on test), the selected model refit and tested once, a leaderboard and a report.

Names load lazily, so ``classbench.comparison.folder`` (the CLI's defaults) imports nothing heavy."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_NAMES = {
    "DEMO_MODELS": "core", "PRESETS": "core", "REPORT_MODELS": "core", "Leaderboard": "core", "compare": "core",
    "demo": "core", "LEADERBOARD_COLUMNS": "leaderboard", "measure_inference": "leaderboard",
    "render_leaderboard": "leaderboard",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'classbench.comparison' has no attribute {name!r}")
    value = getattr(import_module(f"classbench.comparison.{_NAMES[name]}"), name)
    globals()[name] = value
    return value
