"""Likely label errors from out-of-fold predicted probabilities (confident learning).

The method is the confident-learning rule of Northcutt, Jiang and Chuang (2021), "Confident Learning:
Estimating Uncertainty in Dataset Labels" (JAIR 70), written here from the paper. The well-known
implementation, cleanlab, is AGPL-licensed; classbench is MIT, so it neither imports nor copies it.

Each probability vector must come from a model that never trained on that image (K-fold out-of-fold
predictions); otherwise the model has memorised the given label and nothing is flagged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classbench.data.manifest import normpath
from classbench.runs import atomic_write_csv

COLUMNS = ["rank", "path", "given", "suggested", "margin", "self_confidence", "source"]
OUT_OF_FOLD, CHECK, BOTH = "out-of-fold", "check: label conflict", "out-of-fold + check"
_TOL = 1e-12  # rounding slack: a probability equal to its class mean (up to float error) clears it
_SUM_TOL = 1e-2  # rows must be probability vectors; the slack admits float16/float32 softmax output


@dataclass(frozen=True)
class LabelIssue:
    """One flagged sample: ``index`` into the inputs, class indices ``given``/``suggested``,
    ``margin`` = max over j != given of p_j minus p_given, ``self_confidence`` = p_given."""

    index: int
    given: int
    suggested: int
    margin: float
    self_confidence: float


def _validate(labels: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = np.asarray(labels), np.asarray(probs)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (one class index per sample), got shape {labels.shape}")
    if labels.size == 0:
        if probs.size:
            raise ValueError(f"labels is empty but probs has shape {probs.shape}")
        return labels.astype(np.int64), np.zeros((0, probs.shape[1] if probs.ndim == 2 else 0))
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (samples x classes), got shape {probs.shape}")
    if len(probs) != len(labels):
        raise ValueError(f"labels has {len(labels)} samples but probs has {len(probs)} rows")
    if probs.dtype == bool or not (np.issubdtype(probs.dtype, np.integer) or np.issubdtype(probs.dtype, np.floating)):
        raise ValueError(f"probs must be real numbers, got dtype {probs.dtype}")
    probs = probs.astype(np.float64)
    k = probs.shape[1]
    if not np.isfinite(probs).all():
        raise ValueError(f"probs holds {int((~np.isfinite(probs)).sum())} NaN/infinite value(s)")
    if (probs < 0).any() or (probs > 1).any():
        raise ValueError("probs must lie in [0, 1] (predicted probabilities, not logits)")
    worst = float(np.abs(probs.sum(axis=1) - 1).max())
    if worst > _SUM_TOL:
        raise ValueError(f"each probs row must sum to 1 (a row is off by {worst:.3g}); pass softmax output")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in [0, {k - 1}] for {k} classes, got {labels.min()}..{labels.max()}")
    return labels.astype(np.int64), probs


def class_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """t_j = mean p_j over the samples labelled j; ``inf`` for a class nobody is labelled with (never cleared)."""
    k = probs.shape[1]
    counts = np.bincount(labels, minlength=k)
    sums = np.bincount(labels, weights=probs[np.arange(len(labels)), labels], minlength=k)
    return np.divide(sums, counts, out=np.full(k, np.inf), where=counts > 0)


def find_label_issues(labels: np.ndarray, probs: np.ndarray) -> list[LabelIssue]:
    """Samples whose given label is likely wrong, most suspicious first.

    ``labels``: (n,) integer class indices in [0, k); ``probs``: (n, k) out-of-fold probabilities (finite, in
    [0, 1], rows summing to 1 within 1e-2). Bad input raises ``ValueError``; n = 0 (or k < 2) returns ``[]``.

    With t_j the per-class threshold of ``class_thresholds``, sample i (given y) is flagged when p_iy < t_y and
    either some j != y has p_ij >= t_j (confident learning's off-diagonal count) or the most likely class among
    those anyone is labelled with is not y (cleanlab's "predicted differs from given", under the threshold;
    comparisons allow 1e-12 of float rounding). ``suggested`` is the j != y that clears its threshold with the
    highest p_ij, else that most likely class (the lower index on a tie). Issues are ordered by
    ``self_confidence`` = p_iy, lowest first, then by ``margin`` = max_{j != y} p_ij - p_iy, largest first,
    then by index, so the order is deterministic.

    Why this rule and order (``benchmarks/label_noise.py``; simulated 5% flips on the out-of-fold probabilities
    of the drone_maritime bake-off, 3 seeds x 5 flips x 3 model mixes): precision at k = number flipped was
    0.40 on average with the threshold rule alone ranked by margin, 0.49 ranked by self-confidence, and 0.57
    with the predicted-differs rule added (a flip into a large, confident class rarely clears that class's
    high threshold, yet its given label has a low probability).
    """
    labels, probs = _validate(labels, probs)
    n, k = probs.shape
    if n == 0 or k < 2:
        return []
    t = class_thresholds(labels, probs)
    rows = np.arange(n)
    p_given = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -np.inf
    clearing = np.where(others >= t - _TOL, others, -np.inf)
    clears = np.isfinite(clearing.max(axis=1))
    predicted = np.where(np.isfinite(t), probs, -np.inf).argmax(axis=1)  # among classes someone is labelled with
    flagged = (clears | (predicted != labels)) & (p_given < t[labels] - _TOL)
    margin = others.max(axis=1) - p_given
    idx = np.flatnonzero(flagged)
    idx = idx[np.lexsort((idx, -margin[idx], p_given[idx]))]
    suggested = np.where(clears, clearing.argmax(axis=1), predicted)
    return [LabelIssue(int(i), int(labels[i]), int(suggested[i]), float(margin[i]), float(p_given[i])) for i in idx]


def label_issue_rows(paths: Sequence[str], classes: Sequence[str], labels: Any, probs: Any,
                     conflicts: Sequence[Mapping[str, Sequence[str]]] = ()) -> list[dict[str, Any]]:
    """CSV-ready rows (``COLUMNS``): the finder's issues ranked 1.. (source ``out-of-fold``), then files of
    ``check``'s label conflicts (``{"labels": [...], "files": [...]}``) not already listed (source
    ``check: label conflict``, rank empty). A file in both keeps the finder's row with source ``out-of-fold + check``.

    A conflict-only file among ``paths`` gets its given class and its margin/self-confidence; elsewhere (e.g. a
    test image) those are empty. Its ``suggested`` is the group's other label when there is exactly one, else empty.
    """
    labels, probs = _validate(labels, probs)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    if len(labels) and len(classes) != probs.shape[1]:
        raise ValueError(f"{len(classes)} class names but probs has {probs.shape[1]} columns")
    rows = [{"rank": r, "path": str(paths[it.index]), "given": classes[it.given], "suggested": classes[it.suggested],
             "margin": round(it.margin, 6), "self_confidence": round(it.self_confidence, 6), "source": OUT_OF_FOLD}
            for r, it in enumerate(find_label_issues(labels, probs), start=1)]
    listed = {normpath(row["path"]): row for row in rows}
    position = {normpath(p): i for i, p in enumerate(paths)}
    for conflict in conflicts:
        for file in conflict["files"]:
            key = normpath(file)
            if key in listed:
                if listed[key]["source"] == OUT_OF_FOLD:
                    listed[key]["source"] = BOTH
                continue
            listed[key] = _conflict_row(str(file), position.get(key), list(conflict["labels"]), classes, labels, probs)
            rows.append(listed[key])
    return rows


def _conflict_row(file: str, i: int | None, group: list[str], classes: Sequence[str], labels: np.ndarray,
                  probs: np.ndarray) -> dict[str, Any]:
    row: dict[str, Any] = {"rank": "", "path": file, "given": "", "suggested": "", "margin": "", "self_confidence": "",
                           "source": CHECK}
    if i is not None:
        y = int(labels[i])
        p_given = float(probs[i, y])
        p_other = float(np.delete(probs[i], y).max()) if probs.shape[1] > 1 else p_given
        row.update(given=classes[y], margin=round(p_other - p_given, 6), self_confidence=round(p_given, 6))
    other = [c for c in group if c != row["given"]] if row["given"] else []
    if len(other) == 1:
        row["suggested"] = other[0]
    return row


def write_label_issues(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` to ``path`` as CSV (``COLUMNS``, UTF-8) atomically; returns the path."""
    return atomic_write_csv(path, rows, COLUMNS)


def plot_label_issues(rows: Sequence[Mapping[str, Any]], out_png: str | os.PathLike, limit: int = 24) -> Path:
    """Contact sheet of the first ``limit`` rows, captioned with the given and the suggested label and p, the
    most likely other class's probability (self_confidence + margin; the suggested class's unless that one
    missed its threshold). Rows read back from the CSV (strings) work too."""
    from classbench.formatting import finite
    from classbench.report.plots import contact_sheet

    items = []
    for row in list(rows)[: max(0, limit)]:
        conf, margin = finite(row.get("self_confidence")), finite(row.get("margin"))
        p = conf + margin if conf is not None and margin is not None else float("nan")
        items.append((row["path"], str(row.get("given", "")), str(row.get("suggested", "")), p))
    return contact_sheet(items, out_png, captions=("given", "suggested"), empty="no likely label errors found")
