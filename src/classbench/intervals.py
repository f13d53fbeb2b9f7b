"""The confidence intervals of ``eval.json`` and its class-level warnings.

``eval_intervals`` computes ``ci95`` (accuracy: Clopper-Pearson exact; balanced accuracy: Clopper-Pearson per
class, Bonferroni-combined; macro-F1: percentile bootstrap) with ``ci_method`` naming each method, and plain
warnings for a zero-width macro-F1 bootstrap and for every class with fewer than ``SMALL_CLASS`` images.
``class_warnings`` gives the loud (critical) lines for classes with zero recall or zero predictions.
The numbers themselves come from ``classbench.metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from classbench import metrics as M
from classbench.formatting import METRIC_LABELS

CONFIDENCE = 0.95
SMALL_CLASS = 5  # a class with 1..SMALL_CLASS-1 evaluated images gets a warning with its recall interval
DEGENERATE_F1 = ("macro-F1 bootstrap interval has zero width: every resample scores the same; "
                 "read the accuracy/recall intervals instead")


def ci_methods(n_boot: int) -> dict[str, str]:
    """Human-readable method per ``ci95`` metric (stored as ``ci_method`` in ``eval.json``)."""
    return {"accuracy": "Clopper-Pearson exact", "balanced_accuracy": "Clopper-Pearson per class, Bonferroni-combined",
            "macro_f1": f"bootstrap, {n_boot} resamples"}


def eval_intervals(summary: dict[str, Any], y_true: np.ndarray, y_pred: np.ndarray,
                   n_boot: int = 1000) -> tuple[dict[str, list[float]], dict[str, str], list[str]]:
    """``(ci95, ci_method, warnings)`` for a ``classification_summary`` of ``y_true`` vs ``y_pred``.

    ``ci95`` maps accuracy, balanced_accuracy and macro_f1 to ``[low, high]`` 95% intervals (NaN for empty
    input); ``warnings`` holds the degenerate-bootstrap note and ``small_class_warnings``.
    """
    cm = np.asarray(summary["confusion_matrix"], dtype=np.int64)
    correct, support = np.diag(cm), cm.sum(axis=1)
    ci95 = {
        "accuracy": list(M.proportion_interval(int(correct.sum()), int(cm.sum()), CONFIDENCE)),
        "balanced_accuracy": list(M.balanced_accuracy_interval(correct, support, CONFIDENCE)),
        "macro_f1": list(M.bootstrap_ci(y_true, y_pred, "macro_f1", n_boot=n_boot, alpha=1 - CONFIDENCE, seed=0)),
    }
    warnings = [DEGENERATE_F1] if M.is_degenerate_interval(ci95["macro_f1"]) else []
    return ci95, ci_methods(n_boot), warnings + small_class_warnings(summary["per_class"])


def class_warnings(summary: dict[str, Any], what: str) -> list[str]:
    """One loud line per class of ``summary["zero_recall"]`` (``metrics.classification_summary``): never
    predicted, or recognised on none of its images (naming what it was taken for)."""
    cm = np.asarray(summary["confusion_matrix"])
    classes = summary["classes"]
    out = []
    for name in summary["zero_recall"]:
        i = classes.index(name)
        support, predicted = summary["per_class"][i]["support"], summary["per_class"][i]["predicted"]
        if not predicted:
            out.append(f"class '{name}' was never predicted (0 of {support} {what} images)")
        else:
            confused = classes[int(np.argmax(np.where(np.arange(len(classes)) == i, -1, cm[i])))]
            out.append(f"class '{name}' has zero recall: none of its {support} {what} images was recognised "
                       f"(mostly predicted as '{confused}')")
    return out


def small_class_warnings(per_class: Sequence[dict[str, Any]], min_support: int = SMALL_CLASS) -> list[str]:
    """One line per class with ``1 <= support < min_support``, e.g.
    ``recall of 'car' rests on 2 images (95% CI 0.16-1.00)`` (Clopper-Pearson, from the row's ``recall_ci``)."""
    out = []
    for row in per_class:
        support = int(row.get("support") or 0)
        if not 0 < support < min_support:
            continue
        low, high = row.get("recall_ci") or M.proportion_interval(round(row["recall"] * support), support)
        images = "image" if support == 1 else "images"
        out.append(f"recall of '{row['class']}' rests on {support} {images} "
                   f"({CONFIDENCE:.0%} CI {low:.2f}-{high:.2f})")
    return out


def interval_text(interval: Sequence[float | None] | None, digits: int = 2, sep: str = "-") -> str:
    """``"0.16-1.00"`` for a ``[low, high]`` of finite numbers (``sep`` between them); ``""`` when the interval is
    missing, not two numbers, or NaN: the one formatter of intervals for the CLI, Markdown and HTML."""
    try:
        low, high = (float(x) for x in interval)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return ""
    return f"{low:.{digits}f}{sep}{high:.{digits}f}" if np.isfinite(low) and np.isfinite(high) else ""


HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1")


def headline_lines(metrics: dict[str, Any], ci95: dict[str, Any], ci_method: dict[str, str]) -> list[str]:
    """``accuracy          0.917  95% CI 0.775-0.982  Clopper-Pearson exact``: one plain-text line per headline
    metric (accuracy, balanced accuracy, macro-F1), its interval and method when known."""
    lines = []
    for key in HEADLINE:
        label = METRIC_LABELS[key]
        ci = interval_text(ci95.get(key), 3)
        method = f"  {ci_method[key]}" if ci and ci_method.get(key) else ""
        lines.append(f"{label:<17} {metrics[key]:.3f}" + (f"  {CONFIDENCE:.0%} CI {ci}{method}" if ci else ""))
    return lines
