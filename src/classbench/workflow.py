"""The user-level steps that span layers. Training a run ends with its curves drawn by ``report/`` (so
``training/`` never imports upward); the public ``classbench.train``, the CLI and every compare run go here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from classbench.training.config import DEFAULTS


def train(data: str | os.PathLike, model: str = DEFAULTS["model"], **options: Any) -> Any:
    """``classbench.training.train`` (same arguments, same ``TrainResult``), then ``curves.png``."""
    from classbench.training import train as fit

    result = fit(data, model=model, **options)
    draw_curves(result)
    return result


def resume(run_dir: str | os.PathLike, progress: bool = True) -> Any:
    """``classbench.training.resume``, then ``curves.png`` of the whole run."""
    from classbench.training import resume as fit_again

    result = fit_again(run_dir, progress=progress)
    draw_curves(result)
    return result


def draw_curves(result: Any) -> Path | None:
    """``curves.png`` from the run folder's ``metrics.csv`` (nothing on a DDP worker, which has no summary)."""
    from classbench.report.plots import plot_curves
    from classbench.runs import read_metrics

    if not result.summary:
        return None
    rows = read_metrics(result.path)
    title = f"{result.summary.get('model')} ({Path(result.path).name})"
    return plot_curves(rows, Path(result.path) / "curves.png", title=title, best_epoch=result.best_epoch)
