"""Report figures. Built on ``matplotlib.figure.Figure`` objects (never pyplot: no global state, no
windows, safe from threads) and written atomically. Each public ``plot_*`` has a ``_build_*`` twin that
returns the Figure, so tests can inspect its text.

User text (class and model names) is always shown literally: see ``classbench.report.style._literal``. The
image grids (``contact_sheet``: misclassified images, labels to check) are drawn with Pillow in
``classbench.report.sheets`` and importable from here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from classbench.formatting import count, duration, finite, time_unit
from classbench.report.sheets import _thumbnail, contact_sheet  # noqa: F401 - re-exported: callers import it from here
from classbench.report.style import (  # noqa: F401 - re-exported, as above
    BLUE,
    GREEN,
    ORANGE,
    PALETTE,
    TICK_CHARS,
    VERMILLION,
    _literal,
    _short,
    _tick,
)
from classbench.runs import atomic_save_figure

ACC_SERIES = [("train_acc", "train accuracy", BLUE, "-"), ("val_acc", "val accuracy", ORANGE, "-"),
              ("val_macro_f1", "val macro-F1", GREEN, "--"), ("val_balanced_acc", "val balanced acc.", VERMILLION, "--")]
LOSS_SERIES = [("train_loss", "train loss", BLUE, "-"), ("val_loss", "val loss", ORANGE, "-")]


def _colors(n: int) -> list:
    return PALETTE[:n] if n <= len(PALETTE) else [matplotlib.colormaps["viridis"](x) for x in np.linspace(0, 0.92, n)]


def _fmt_prob(v: float) -> str:
    return f"{v:.2f}"


def _no_data(ax: Any, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="grey")


def _xticks(ax: Any, labels: Sequence[str], fontsize: float = 9) -> None:
    longest = max((len(s) for s in labels), default=0)
    rot = 0 if len(labels) * max(longest, 3) <= 40 else (45 if len(labels) <= 20 else 90)
    ax.set_xticks(range(len(labels)), [_tick(c) for c in labels], fontsize=fontsize, rotation=rot,
                  ha="right" if rot else "center", rotation_mode="anchor" if rot else "default")


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(rows):
        y = finite(row.get(key))
        if y is not None:
            epoch = finite(row.get("epoch"))
            xs.append(epoch if epoch is not None else float(i + 1))
            ys.append(y)
    return xs, ys


def _draw_curves(ax_acc: Any, ax_loss: Any, rows: Sequence[Mapping[str, Any]], best_epoch: Any, small: bool) -> None:
    for ax, series, ylabel in ((ax_acc, ACC_SERIES, "accuracy / F1"), (ax_loss, LOSS_SERIES, "loss")):
        drawn = False
        for key, label, color, style in series:
            xs, ys = _series(rows, key)
            if ys:
                ax.plot(xs, ys, style, color=color, label=label, lw=1.2 if small else 1.8,
                        marker="o" if len(xs) <= 30 else None, ms=2.5 if small else 3.5)
                drawn = True
        if not drawn:
            _no_data(ax)
        if (best := finite(best_epoch)) is not None:
            ax.axvline(best, color="grey", ls=":", lw=1.2, label=f"best epoch ({best_epoch})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        fs = 7 if small else 10
        ax.set_xlabel("epoch", fontsize=fs)
        ax.set_ylabel(ylabel, fontsize=fs)
        ax.tick_params(labelsize=fs - 1)
        if small and ax is ax_acc and drawn:
            ax.set_ylim(0, 1.02)
        elif not small:
            ax.set_title("Accuracy" if ax is ax_acc else "Loss")
            if drawn:
                ax.legend(fontsize=8, loc="best")


def _build_curves(rows: Sequence[Mapping[str, Any]], title: str = "", best_epoch: int | None = None) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    _draw_curves(ax_acc, ax_loss, rows, best_epoch, small=False)
    if title:
        fig.suptitle(_literal(title), fontsize=13)
    return fig


def plot_curves(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "",
                best_epoch: int | None = None) -> Path:
    """Accuracy (train/val, val macro-F1 and balanced accuracy dashed) and loss panels per epoch."""
    return atomic_save_figure(_build_curves(rows, title, best_epoch), path)


def _build_curves_grid(runs: Mapping[str, Sequence[Mapping[str, Any]]],
                       best_epochs: Mapping[str, int] | None = None) -> Figure:
    n = len(runs)
    per_row = 1 if n <= 1 else 2
    nrows = max(1, math.ceil(n / per_row))
    fig = Figure(figsize=(6.5 * per_row, 2.7 * nrows + 0.6), layout="constrained")
    if n == 0:
        _no_data(fig.add_subplot(), "no runs")
        return fig
    subfigs = fig.subfigures(nrows, per_row, squeeze=False).ravel()
    for sf, (name, rows) in zip(subfigs, runs.items()):
        ax_acc, ax_loss = sf.subplots(1, 2)
        _draw_curves(ax_acc, ax_loss, rows, (best_epochs or {}).get(name), small=True)
        sf.suptitle(_tick(name, 48), fontsize=10, fontweight="bold")
    labels = ["train", "val", "val macro-F1", "val balanced acc."]  # loss panels reuse train/val colours
    handles = [Line2D([], [], color=c, ls=s, label=lab) for (_, _, c, s), lab in zip(ACC_SERIES, labels)]
    fig.legend(handles=handles, loc="outside upper center", ncols=4, fontsize=9, frameon=False)
    return fig


def plot_curves_grid(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path,
                     best_epochs: Mapping[str, int] | None = None) -> Path:
    """One small accuracy + loss panel pair per model (train = blue, val = orange), two models a row."""
    return atomic_save_figure(_build_curves_grid(runs, best_epochs), path)


def _matrix_panel(fig: Figure, ax: Any, data: np.ndarray, classes: Sequence[str], vmax: float, cmap: str,
                  fmt: Callable[[float], str], cbar_label: str, xlabel: str = "predicted class") -> None:
    c = len(classes)
    im = ax.imshow(np.ma.masked_invalid(data), cmap=matplotlib.colormaps[cmap].with_extremes(bad="#e8e8e8"),
                   vmin=0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label=cbar_label)
    tick_fs = float(np.clip(11 - 0.12 * c, 5, 10))
    _xticks(ax, classes, tick_fs)
    ax.set_yticks(range(c), [_tick(x) for x in classes], fontsize=tick_fs)
    ax.set(xlabel=xlabel, ylabel="true class")
    annot_fs = float(np.clip(11 - 0.22 * c, 5.5, 10))
    for (i, j), v in np.ndenumerate(data if c <= 25 else np.zeros((0, 0))):  # no annotations above 25 classes
        if np.isfinite(v):
            color = "white" if v > 0.55 * vmax else ("#777777" if v == 0 else "black")
            ax.text(j, i, fmt(v), ha="center", va="center", fontsize=annot_fs, color=color)


def _build_confusion(cm: Any, classes: Sequence[str], title: str = "") -> Figure:
    cm = np.asarray(cm, dtype=np.float64)
    c = len(classes)
    if cm.shape != (c, c):
        raise ValueError(f"confusion matrix has shape {cm.shape} but there are {c} classes")
    support = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, support, out=np.full_like(cm, np.nan), where=support > 0)
    panel = float(np.clip(0.24 * c + 3.4, 4.2, 11))
    fig = Figure(figsize=(2 * panel + 0.6, panel + 1.0), layout="constrained")
    ax_counts, ax_norm = fig.subplots(1, 2)
    _matrix_panel(fig, ax_counts, cm, classes, max(cm.max(initial=0), 1.0), "Blues", count, "images")
    _matrix_panel(fig, ax_norm, norm, classes, 1.0, "Blues", _fmt_prob, "fraction of the true class")
    ax_counts.set_title("Counts")
    ax_norm.set_title("Recall (row-normalised)")
    fig.suptitle(_literal(title) if title else "Confusion matrix", fontsize=13)
    return fig


def plot_confusion(cm: Any, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Counts and row-normalised confusion matrices side by side (rows = true class)."""
    return atomic_save_figure(_build_confusion(cm, classes, title), path)


def _build_class_probabilities(matrix: Any, classes: Sequence[str], title: str = "") -> Figure:
    m = np.asarray(matrix, dtype=np.float64)
    c = len(classes)
    if m.shape != (c, c):
        raise ValueError(f"probability matrix has shape {m.shape} but there are {c} classes")
    head = _literal(title) if title else "Mean predicted probability per true class"
    if c > 12:
        size = float(np.clip(0.3 * c + 2.5, 5, 14))
        fig = Figure(figsize=(size + 1.5, size), layout="constrained")
        ax = fig.subplots()
        _matrix_panel(fig, ax, m, classes, 1.0, "Blues", _fmt_prob, "mean predicted probability",
                      xlabel="predicted class (mean probability)")
        ax.set_title(head)
        return fig
    fig = Figure(figsize=(float(np.clip(1.1 * c + 4, 6.5, 17)), 4.6), layout="constrained")
    ax = fig.subplots()
    colors, width = _colors(c), 0.8 / c
    handles = []
    for j in range(c):
        x = np.arange(c) + (j - (c - 1) / 2) * width
        edge = ["black" if i == j else "none" for i in range(c)]
        handles.append(ax.bar(x, np.nan_to_num(m[:, j]), width, color=colors[j], edgecolor=edge, linewidth=1.2))
    for i in range(c):
        if not np.isfinite(m[i]).all():
            ax.text(i, 0.03, "no samples", ha="center", va="bottom", rotation=90, color="grey", fontsize=9)
        else:
            x = i + (i - (c - 1) / 2) * width
            ax.text(x, m[i, i] + 0.01, f"{m[i, i]:.2f}", ha="center", va="bottom", fontsize=8)
    _xticks(ax, classes)
    ax.set(ylim=(0, 1.08), xlabel="true class", ylabel="mean predicted probability")
    ax.set_title(f"{head}\n(outlined bar = the true class)", fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(handles, [_tick(x) for x in classes], title="predicted class", loc="outside right upper", fontsize=8)
    return fig


def plot_class_probabilities(matrix: Any, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Per true class, the mean predicted probability of every class: grouped bars, heatmap above 12 classes."""
    return atomic_save_figure(_build_class_probabilities(matrix, classes, title), path)


def _build_reliability(bins: Mapping[str, Sequence[Any]], ece: float, title: str = "") -> Figure:
    edges = np.asarray(bins["bin_edges"], dtype=np.float64)
    conf = np.array(bins["confidence"], dtype=np.float64)  # None (empty bin) -> nan
    acc = np.array(bins["accuracy"], dtype=np.float64)
    count = np.asarray(bins["count"], dtype=np.float64)
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    ok = (count > 0) & np.isfinite(conf) & np.isfinite(acc)
    fig = Figure(figsize=(5.6, 6.2), layout="constrained")
    ax, ax_hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.bar(centers[ok], acc[ok], widths[ok], color=BLUE, edgecolor="white", label="accuracy")
    ax.bar(centers[ok], np.abs(conf - acc)[ok], widths[ok], bottom=np.minimum(conf, acc)[ok], color=VERMILLION,
           alpha=0.3, hatch="//", edgecolor=VERMILLION, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="accuracy")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    head = f"{_literal(title)}\n" if title else "Reliability diagram\n"
    ax.set_title(f"{head}ECE = {ece:.3f} ({100 * ece:.1f}%)")
    ax_hist.bar(centers, count, widths, color="grey", edgecolor="white")
    ax_hist.set(xlabel="confidence (max predicted probability)", ylabel="images")
    ax_hist.grid(axis="y", alpha=0.3)
    return fig


def plot_reliability(bins: Mapping[str, Sequence[Any]], ece: float, path: str | Path, title: str = "") -> Path:
    """Reliability diagram (accuracy per confidence bin vs the diagonal) above a confidence histogram."""
    return atomic_save_figure(_build_reliability(bins, ece, title), path)


def _build_training_time(names: Sequence[str], seconds: Sequence[Any]) -> Figure:
    secs = np.array([np.nan if (x := finite(s)) is None else x for s in seconds], dtype=np.float64)
    unit, scale = time_unit(float(np.nanmax(secs, initial=0)) if np.isfinite(secs).any() else 0.0)
    fig = Figure(figsize=(7.5, 0.45 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(secs / scale), color=BLUE, height=0.6)
    for yi, s in zip(y, secs):
        ax.text(0 if not np.isfinite(s) else s / scale, yi, "  " + duration(float(s)), va="center", fontsize=9)
    ax.set_yticks(y, [_tick(n, 32) for n in names])
    ax.invert_yaxis()
    ax.margins(x=0.18)
    ax.grid(axis="x", alpha=0.3)
    ax.set(xlabel=f"training time ({unit})", title="Training time per model")
    return fig


def plot_training_time(names: Sequence[str], seconds: Sequence[Any], path: str | Path) -> Path:
    """Horizontal bars of training time per model, labelled in s / min / h."""
    return atomic_save_figure(_build_training_time(names, seconds), path)


def _build_score_vs_time(names: Sequence[str], scores: Sequence[Any], seconds: Sequence[Any],
                         score_label: str = "test macro-F1") -> Figure:
    pts = [(str(n), finite(sc), finite(se)) for n, sc, se in zip(names, scores, seconds)]
    pts = [(n, sc, se) for n, sc, se in pts if sc is not None and se is not None]
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    label = _literal(score_label)
    ax.set_title(f"{label} vs training time")
    if not pts:
        _no_data(ax, "no finished models")
        return fig
    unit, scale = time_unit(max(se for _, _, se in pts))
    for (name, sc, se), color in zip(pts, _colors(len(pts))):
        ax.scatter(se / scale, sc, s=60, color=color, edgecolor="black", zorder=3)
        ax.annotate(_tick(name, 32), (se / scale, sc), xytext=(6, 4), textcoords="offset points", fontsize=8)
    front, best = [], -math.inf  # Pareto front: better score than every faster model
    for _, sc, se in sorted(pts, key=lambda p: (p[2], -p[1])):
        if sc > best:
            front.append((se / scale, sc))
            best = sc
    if len(front) > 1:
        ax.step(*zip(*front), where="post", color="grey", ls=":", lw=1.2, label="best score for its time")
        ax.legend(loc="lower right", fontsize=8)
    times = [se for _, _, se in pts]
    if min(times) > 0 and max(times) / min(times) > 50:
        ax.set_xscale("log")
    ax.margins(x=0.12, y=0.1)
    ax.grid(alpha=0.3)
    ax.set(xlabel=f"training time ({unit})", ylabel=label)
    return fig


def plot_score_vs_time(names: Sequence[str], scores: Sequence[Any], seconds: Sequence[Any], path: str | Path,
                       score_label: str = "test macro-F1") -> Path:
    """Scatter of score against training time, one labelled point per model, Pareto front dotted."""
    return atomic_save_figure(_build_score_vs_time(names, scores, seconds, score_label), path)


def _build_class_counts(counts: Mapping[str, int], split_counts: Mapping[str, Mapping[str, int]] | None = None) -> Figure:
    split_counts = split_counts or {}
    classes = list(dict.fromkeys([*counts, *(c for sc in split_counts.values() for c in sc)]))
    totals = np.array([counts[c] if c in counts else sum(sc.get(c, 0) for sc in split_counts.values())
                       for c in classes], dtype=np.float64)
    n = len(classes)
    fig = Figure(figsize=(float(np.clip(0.35 * n + 2.5, 6, 28)), 4.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(n)
    if split_counts:
        known = ["train", "val", "test"]
        order = sorted(split_counts, key=lambda s: (known.index(s) if s in known else 3, str(s)))
        bottom = np.zeros(n)
        for split, color in zip(order, _colors(len(order))):
            vals = np.array([split_counts[split].get(c, 0) for c in classes], dtype=np.float64)
            ax.bar(x, vals, 0.75, bottom=bottom, color=color, label=_literal(split))
            bottom += vals
        ax.legend(title="split", fontsize=8)
    else:
        ax.bar(x, totals, 0.75, color=BLUE)
    if 0 < n <= 40:
        for xi, t in zip(x, totals):
            ax.text(xi, t, count(t), ha="center", va="bottom", fontsize=float(np.clip(10 - 0.12 * n, 6, 9)))
    _xticks(ax, classes, float(np.clip(10 - 0.08 * n, 5, 9)))
    nonzero = totals[totals > 0]
    ratio = f"imbalance {nonzero.max() / nonzero.min():.1f}:1" if nonzero.size else "no images"
    empty = int((totals == 0).sum())
    ax.set_title(f"Class counts: {n} classes, {totals.sum():.0f} images, {ratio}"
                 + (f", {empty} empty" if empty else ""))
    ax.set(xlabel="class", ylabel="images")
    ax.margins(y=0.1)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_class_counts(counts: Mapping[str, int], path: str | Path,
                      split_counts: Mapping[str, Mapping[str, int]] | None = None) -> Path:
    """Images per class (stacked by split when given); the title gives the max/min imbalance ratio."""
    return atomic_save_figure(_build_class_counts(counts, split_counts), path)
