"""The bake-off: several architectures on the same folds (or seeds) of one split, a verdict decided on
held-out predictions (never on test), the selected model refit and tested once, a leaderboard and a report."""

from classbench.comparison.core import DEMO_MODELS, PRESETS, REPORT_MODELS, Leaderboard, compare, demo
from classbench.comparison.leaderboard import LEADERBOARD_COLUMNS, measure_inference, render_leaderboard

__all__ = ["DEMO_MODELS", "LEADERBOARD_COLUMNS", "PRESETS", "REPORT_MODELS", "Leaderboard", "compare", "demo",
           "measure_inference", "render_leaderboard"]
