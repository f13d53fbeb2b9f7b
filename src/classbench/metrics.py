"""Classification metrics and their intervals (numpy in, plain Python out; calibration: ``classbench.calibration``).

Conventions:
- ``y_true``/``y_pred`` are integer class indices into ``classes``; ``probs`` is ``[N, C]``.
- Division by zero gives 0 (precision of a never-predicted class, recall of an absent class).
- ``macro_f1`` averages F1 over the classes that occur in ``y_true`` or ``y_pred`` (the same as
  ``sklearn.metrics.f1_score(average="macro", labels=<those classes>)``): a class that is neither in
  the evaluated data nor ever predicted says nothing about the model and is left out.
- ``balanced_accuracy`` is the mean recall over classes with support (as sklearn's).
- Intervals: ``proportion_interval`` (Clopper-Pearson exact by default) for accuracy, per-class precision and
  recall; ``balanced_accuracy_interval`` (Clopper-Pearson per class, Bonferroni-combined); ``bootstrap_ci`` for
  macro-F1, whose percentile interval collapses to a point when every resample scores the same
  (``is_degenerate_interval`` tells).

Libraries do what they do: scikit-learn computes the confusion matrix, the per-class precision/recall/F1 and
the top-k accuracy; scipy gives the beta quantiles and the Wilson interval. Hand-written, because no library
does the job: the bootstrap over per-class counts (one ``bincount`` per chunk of resamples instead of ``n_boot``
metric calls) and the Bonferroni-combined balanced accuracy interval. sklearn and scipy are imported inside the
functions: importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TOP_K = (1, 3, 5)
BOOTSTRAP_METRICS = ("accuracy", "macro_f1", "balanced_accuracy")
PROPORTION_METHODS = ("clopper-pearson", "wilson")


def class_indices(y: Any, n_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(y).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0):
        raise ValueError(f"{name} must hold integer class indices")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name} holds class indices outside 0..{n_classes - 1}")
    return arr


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise num/den with 0 where den == 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """``[C, C]`` int64 counts, rows = true class, columns = predicted class (sklearn's, over ``range(C)``);
    all zeros for empty input. ValueError for indices outside ``0..C-1`` or unequal lengths."""
    t, p = class_indices(y_true, n_classes, "y_true"), class_indices(y_pred, n_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0 or n_classes == 1:  # sklearn refuses empty input and warns about a 1x1 matrix
        return np.full((n_classes, n_classes), t.size, dtype=np.int64)
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    return sk_confusion_matrix(t, p, labels=np.arange(n_classes)).astype(np.int64)


def top_k_accuracy(probs: Any, y_true: Any, k: int) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores (``sklearn.metrics.top_k_accuracy_score``
    over ``range(C)``); 0.0 for empty input, 1.0 for ``k >= C`` (sklearn's value, without its warning).

    Ties are sklearn's: with ``C > 2`` the scores are sorted stably and reversed, so among tied scores the higher
    class index ranks first; with ``C == 2`` (sklearn's binary rule) class 1 is the top-1 only when its score is
    strictly higher, so a tie counts as class 0, as ``argmax`` does. ValueError for ``k < 1``.
    """
    scores = np.asarray(probs, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"probs must be [N, C], got shape {scores.shape}")
    n_classes = scores.shape[1]
    t = class_indices(y_true, n_classes, "y_true")
    if t.size != scores.shape[0]:
        raise ValueError(f"probs has {scores.shape[0]} rows but y_true has {t.size}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if t.size == 0:
        return 0.0
    if k >= n_classes:
        return 1.0
    from sklearn.metrics import top_k_accuracy_score

    if n_classes == 2:  # sklearn's binary form: one score per sample, thresholded at 0.5 for scores in [0, 1]
        scores = (scores[:, 1] > scores[:, 0]).astype(np.float64)
    return float(top_k_accuracy_score(t, scores, k=k, labels=np.arange(n_classes)))


def _per_class(t: np.ndarray, p: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's per-class ``(precision, recall, f1)`` over ``range(C)``, 0 where a denominator is 0."""
    if t.size == 0:
        return np.zeros(n_classes), np.zeros(n_classes), np.zeros(n_classes)
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, _ = precision_recall_fscore_support(t, p, labels=np.arange(n_classes), zero_division=0)
    return np.asarray(precision, np.float64), np.asarray(recall, np.float64), np.asarray(f1, np.float64)


def classification_summary(y_true: Any, y_pred: Any, probs: Any | None, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class and overall metrics as a JSON-ready dict (see the module docstring for conventions).

    Each ``per_class`` row also holds ``precision_ci`` / ``recall_ci``: the 95% Clopper-Pearson interval
    ``[low, high]`` of ``tp / predicted`` and ``tp / support``, or None where that denominator is 0.
    """
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    if n_classes == 0:
        raise ValueError("classes is empty")
    cm = confusion_matrix(y_true, y_pred, n_classes)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    t = class_indices(y_true, n_classes, "y_true")
    precision, recall, f1 = _per_class(t, class_indices(y_pred, n_classes, "y_pred"), n_classes)
    has_support, present = support > 0, (support + predicted) > 0

    def ci(k: float, total: int) -> list[float] | None:
        return list(proportion_interval(int(k), int(total))) if total else None

    per_class = [
        {"class": c, "precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
         "support": int(support[i]), "predicted": int(predicted[i]),
         "precision_ci": ci(tp[i], predicted[i]), "recall_ci": ci(tp[i], support[i])}
        for i, c in enumerate(classes)
    ]
    worst = worst_class(recall, support)
    top_k: dict[str, float] = {}
    if probs is not None:
        scores = np.asarray(probs, dtype=np.float64)
        if scores.shape != (n, n_classes):
            raise ValueError(f"probs has shape {scores.shape}, expected ({n}, {n_classes})")
        top_k = {str(k): top_k_accuracy(scores, t, k) for k in TOP_K if k < n_classes}
    return {
        "n_samples": n,
        "n_classes": n_classes,
        "classes": classes,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "balanced_accuracy": float(recall[has_support].mean()) if has_support.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "macro_precision": float(precision[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "macro_labels": [c for c, p in zip(classes, present) if p],
        "top_k_accuracy": top_k,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "zero_recall": [c for i, c in enumerate(classes) if support[i] > 0 and tp[i] == 0],
        "never_predicted": [c for i, c in enumerate(classes) if predicted[i] == 0],
        "worst_class_recall": float(recall[worst]) if worst is not None else None,
        "worst_class": classes[worst] if worst is not None else None,
    }


def worst_class(recall: Any, support: Any) -> int | None:
    """Index of the class with images (``support`` > 0) whose recall is lowest; None when no class has images."""
    recall, has_support = np.asarray(recall, dtype=np.float64), np.asarray(support) > 0
    return int(np.argmin(np.where(has_support, recall, np.inf))) if has_support.any() else None


def macro_f1_from_counts(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Macro-F1 over the classes present (support or predictions) from ``[..., C]`` counts (weights allowed)."""
    present = (support + predicted) > 0
    return (_div(2 * tp, support + predicted) * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def _stat_from_counts(metric: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Metric from per-resample ``tp, support, predicted`` arrays of shape ``[B, C]``."""

    def accuracy(tp: np.ndarray, sup: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return tp.sum(axis=1) / sup.sum(axis=1)

    def balanced_accuracy(tp: np.ndarray, sup: np.ndarray, pred: np.ndarray) -> np.ndarray:
        has = sup > 0
        return (_div(tp, sup) * has).sum(axis=1) / has.sum(axis=1)

    funcs = {"accuracy": accuracy, "macro_f1": macro_f1_from_counts, "balanced_accuracy": balanced_accuracy}
    if metric not in funcs:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(BOOTSTRAP_METRICS)}")
    return funcs[metric]


def bootstrap_ci(y_true: Any, y_pred: Any, metric: str = "accuracy", n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap ``(low, high)`` interval of ``metric``; ``(nan, nan)`` for empty input.

    Each resample is reduced to per-class counts with one ``bincount`` per chunk of resamples, so the
    cost is ``O(n_boot * n)`` with bounded memory. Hand-written: ``scipy.stats.bootstrap`` would call the metric
    once per resample (``n_boot`` sklearn calls), and its default BCa interval is not the percentile interval.
    """
    stat = _stat_from_counts(metric)
    t, p = np.asarray(y_true).reshape(-1).astype(np.int64), np.asarray(y_pred).reshape(-1).astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    n = t.size
    if n == 0 or n_boot < 1:
        return (math.nan, math.nan)
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    _, codes = np.unique(np.concatenate([t, p]), return_inverse=True)
    t, p = codes[:n], codes[n:]
    n_classes = int(codes.max()) + 1
    correct = t == p
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 4_000_000 // n))
    stats = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        offset = (np.arange(b) * n_classes)[:, None]
        size = b * n_classes
        sup = np.bincount((offset + t[idx]).ravel(), minlength=size).reshape(b, n_classes)
        pred = np.bincount((offset + p[idx]).ravel(), minlength=size).reshape(b, n_classes)
        tp = np.bincount((offset + t[idx]).ravel(), weights=correct[idx].ravel(), minlength=size)
        stats[start:start + b] = stat(tp.reshape(b, n_classes), sup, pred)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return (float(low), float(high))


def is_degenerate_interval(interval: Sequence[float], tol: float = 1e-12) -> bool:
    """True when ``interval`` is finite and (almost) zero wide, e.g. a percentile bootstrap of a test set
    where every prediction is right: every resample scores the same and the interval claims a certainty
    the data cannot give. NaN intervals (no data) are not degenerate, just undefined."""
    low, high = (float(x) if x is not None else math.nan for x in interval)
    return math.isfinite(low) and math.isfinite(high) and high - low <= tol


def proportion_interval(k: int, n: int, confidence: float = 0.95,
                        method: str = "clopper-pearson") -> tuple[float, float]:
    """Two-sided ``confidence`` interval ``(low, high)`` of a binomial proportion from ``k`` successes in ``n``.

    ``"clopper-pearson"`` (default): the exact interval from beta quantiles,
    ``low = Beta(a/2; k, n-k+1)``, ``high = Beta(1-a/2; k+1, n-k)`` with ``a = 1 - confidence``
    (``low = 0`` at ``k = 0``, ``high = 1`` at ``k = n``). It covers the true rate with probability
    ``>= confidence`` for every rate and every ``n`` (conservative), and its width is positive for any
    ``n > 0``: 2 of 2 right gives (0.158, 1.0), 71 of 71 gives (0.949, 1.0).
    ``"wilson"``: the score interval (scipy's ``binomtest(...).proportion_ci(method="wilson")``); shorter on
    average, but it can cover below the nominal level for small ``n``.
    ``(nan, nan)`` when ``n == 0``; ValueError for ``k`` outside ``0..n``, a ``confidence`` outside (0, 1)
    or an unknown ``method``. Both methods match statsmodels' ``proportion_confint`` ("beta" / "wilson").
    """
    if method not in PROPORTION_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(PROPORTION_METHODS)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if int(k) != k or int(n) != n or not 0 <= k <= n:
        raise ValueError(f"need integers 0 <= k <= n, got k={k}, n={n}")
    k, n = int(k), int(n)
    if n == 0:
        return (math.nan, math.nan)
    alpha = 1.0 - confidence
    if method == "wilson":
        from scipy.stats import binomtest

        ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
        return (float(max(ci.low, 0.0)), float(min(ci.high, 1.0)))
    from scipy.stats import beta

    low = float(beta.ppf(alpha / 2, k, n - k + 1)) if k > 0 else 0.0
    high = float(beta.ppf(1 - alpha / 2, k + 1, n - k)) if k < n else 1.0
    return (low, high)


def balanced_accuracy_interval(correct_per_class: Any, support_per_class: Any,
                               confidence: float = 0.95) -> tuple[float, float]:
    """``confidence`` interval ``(low, high)`` of the balanced accuracy (mean per-class recall) with guaranteed
    coverage: Clopper-Pearson per class, Bonferroni-combined.

    Each of the ``m`` classes with support (``n > 0``; classes without support are left out, as in
    ``balanced_accuracy``) gets its Clopper-Pearson interval (``proportion_interval``) for ``k`` of ``n`` right
    at the level ``1 - (1 - confidence) / m``; the interval is ``(mean of the per-class lows, mean of the
    per-class highs)``. By the union bound all ``m`` class intervals hold together with probability
    ``>= confidence``, and the mean is monotone in every recall, so the interval covers the true balanced
    accuracy with probability ``>= confidence`` for every set of true recalls and class sizes. It always
    contains the sample balanced accuracy and never has zero width (at 100% correct it is ``(low, 1.0)``
    with ``low < 1``). ``(nan, nan)`` when no class has support; ValueError for mismatched shapes, ``k``
    outside ``0..n`` or a ``confidence`` outside (0, 1).

    Conservative: wider than nominal (Clopper-Pearson is already conservative, and the Bonferroni level
    grows with ``m``), so its coverage is usually well above ``confidence``; with one class it is exactly
    ``proportion_interval(k, n, confidence)``.
    """
    k = np.asarray(correct_per_class, dtype=np.float64).reshape(-1)
    n = np.asarray(support_per_class, dtype=np.float64).reshape(-1)
    if k.shape != n.shape:
        raise ValueError(f"{k.size} correct counts but {n.size} support counts")
    if ((k < 0) | (k > n) | (np.mod(k, 1) != 0) | (np.mod(n, 1) != 0)).any():
        raise ValueError("need integer counts with 0 <= correct <= support for every class")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    has = n > 0
    m = int(has.sum())
    if m == 0:
        return (math.nan, math.nan)
    level = 1.0 - (1.0 - confidence) / m
    bounds = np.array([proportion_interval(int(kc), int(nc), level) for kc, nc in zip(k[has], n[has])])
    low, high = bounds.mean(axis=0)
    return (float(low), float(high))


def class_probability_matrix(probs: Any, y_true: Any, n_classes: int) -> np.ndarray:
    """``[C, C]``: row ``i`` is the mean predicted probability vector over samples of true class ``i``
    (a NaN row when class ``i`` has no samples)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, n_classes)
    t = class_indices(y_true, n_classes, "y_true")
    if t.size != probs.shape[0]:
        raise ValueError(f"probs has {probs.shape[0]} rows but y_true has {t.size}")
    sums = np.zeros((n_classes, n_classes))
    np.add.at(sums, t, probs)
    counts = np.bincount(t, minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None]
