"""The verdict as a picture: each architecture's held-out macro-F1 (its per-fold spread as an interval) and its
difference to the top one with its two paired intervals (bootstrap over images, corrected t over folds); tied
models in the top's colour family."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from classbench.report.plots import BLUE, ORANGE, VERMILLION, _literal, _tick
from classbench.runs import atomic_save_figure

STATUS_COLOURS = {"best": BLUE, "tied": ORANGE, "worse": VERMILLION}


def build_verdict(standings: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Two panels: score with fold interval (left), difference to the top with its 95% CI (right)."""
    fig = Figure(figsize=(8.5, 0.5 * len(standings) + 1.8), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(standings))
    for yi, s in zip(y, standings):
        colour = STATUS_COLOURS.get(str(s.get("status")), BLUE)
        ci = s.get("fold_ci")
        if ci:
            left.plot(ci, [yi, yi], color=colour, lw=2, alpha=0.6)
        left.scatter([s["score"]], [yi], color=colour, edgecolor="black", zorder=3, s=45)
        if s.get("delta_ci"):
            low, high = s["delta_ci"]
            right.plot([low, high], [yi, yi], color=colour, lw=2)
        if s.get("fold_delta_ci"):  # the paired test over folds, drawn just below (thin)
            low, high = s["fold_delta_ci"]
            right.plot([low, high], [yi + 0.2, yi + 0.2], color=colour, lw=1, ls="--")
        right.scatter([s.get("delta") or 0.0], [yi], color=colour, edgecolor="black", zorder=3, s=45)
        right.annotate(_literal(str(s.get("status"))), (1.0, yi), xycoords=("axes fraction", "data"),
                       xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, color=colour)
    right.axvline(0.0, color="grey", ls=":", lw=1)
    left.set_yticks(y, [_tick(s["name"], 28) for s in standings])
    left.invert_yaxis()
    left.set(xlabel="held-out macro-F1 (bar: 95% interval over folds)", xlim=(-0.02, 1.02))
    right.set(xlabel="\u0394 macro-F1 to the top (paired 95% CI: solid over images, dashed over folds)")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(_literal(title), fontsize=10)
    return fig


def plot_verdict(standings: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Write the verdict figure (see :func:`build_verdict`) atomically."""
    return atomic_save_figure(build_verdict(standings, title), path)
