"""Calibration: the one softmax of classbench, the temperature that calibrates it, and how well it is calibrated
(NLL, top-label reliability bins, ECE). numpy in, plain Python out.

scipy gives the bounded 1-D minimiser and ``logsumexp``. Hand-written, because no library does the job: the
temperature objective, the top-label reliability bins and ECE (sklearn's ``calibration_curve`` is binary-only),
and ``softmax`` (see there). scipy is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from classbench.metrics import class_indices


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, list]:
    """Equal-width confidence bins ``(lo, hi]``: mean confidence, accuracy (None when empty) and count."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be [N, C], got shape {probs.shape}")
    t = class_indices(labels, probs.shape[1], "labels")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    conf = probs.max(axis=1) if probs.size else np.zeros(0)
    correct = (probs.argmax(axis=1) == t) if probs.size else np.zeros(0, bool)
    idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    return {
        "bin_edges": edges.tolist(),
        "confidence": [float(s / c) if c else None for s, c in zip(conf_sum, count)],
        "accuracy": [float(s / c) if c else None for s, c in zip(acc_sum, count)],
        "count": count.astype(int).tolist(),
    }


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE: count-weighted mean |accuracy - confidence| over equal-width confidence bins (0 if empty)."""
    bins = reliability_bins(probs, labels, n_bins)
    total = sum(bins["count"])
    if total == 0:
        return 0.0
    return float(sum(c * abs(a - f) for c, a, f in zip(bins["count"], bins["accuracy"], bins["confidence"]) if c)
                 / total)


def softmax(logits: Any, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax over the last axis of ``logits / temperature`` (float64): the one softmax of
    classbench (evaluate, predict and the export parity check all call it).

    Hand-written rather than ``scipy.special.softmax(z / T)``: the shift by the row maximum comes before the
    division by ``T``, so ``[1e308, -1e308, 0]`` at ``T = 1e-3`` or ``[inf, 0, -inf]`` give ``[1, 0, 0]`` where
    scipy's gives NaN. ValueError for ``temperature <= 0``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        m = np.max(z, axis=-1, keepdims=True) if z.size else z
        shifted = np.where(z == m, 0.0, z - m) / temperature  # shift first: never overflows upwards
        e = np.exp(shifted)
        return e / e.sum(axis=-1, keepdims=True)


def nll(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)`` (scipy's ``logsumexp``: exact, no clipping)."""
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64) / temperature
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(labels)), labels]))


def stored_temperature(meta: dict[str, Any]) -> float:
    """The temperature a model's metadata (model.json, an export's metadata) records; 1.0 when it records none."""
    return float(meta.get("temperature") or 1.0)


def fit_temperature(logits: Any, labels: Any, max_iter: int = 200) -> float:
    """Temperature ``T`` in [0.01, 100] minimising the NLL of ``softmax(logits / T)``; 1.0 for empty input,
    non-finite logits or rows that are all equal.

    The NLL is convex in ``1/T``, hence unimodal in ``log T``: scipy's bounded Brent search in log space
    (``minimize_scalar(method="bounded")``) finds the optimum. Only the objective is written here.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    if z.size == 0:
        return 1.0
    if z.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {z.shape}")
    t = class_indices(labels, z.shape[1], "labels")
    if t.size != z.shape[0]:
        raise ValueError(f"logits has {z.shape[0]} rows but labels has {t.size}")
    if not np.isfinite(z).all() or np.ptp(z, axis=1).max() == 0:
        return 1.0
    res = minimize_scalar(lambda log_t: nll(z, t, math.exp(log_t)), bounds=(math.log(0.01), math.log(100.0)),
                          method="bounded", options={"maxiter": max_iter, "xatol": 1e-6})
    return float(math.exp(float(res.x)))
