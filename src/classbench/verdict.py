"""The bake-off verdict: rank architectures on held-out predictions that never touch the test split, and
call a difference inside the noise a tie.

Input per architecture: one or more *replicates* of predicted labels for the same images (out-of-fold
predictions of K-fold cross-validation: one replicate per repeat, each covering every non-test image;
``--seeds N``: N replicates on the validation images; a single run: one replicate on validation). The score of an
architecture is macro-F1 on those predictions (averaged over replicates). Each architecture is compared
with the top one by a **paired, stratified cluster bootstrap**: near-duplicate groups are resampled within
their class (a class keeps its number of groups, which macro-F1 on rare classes needs; an image and its
burst twin are not two pieces of evidence), replicates are resampled too when there are several, and every
model gets the same draws (paired). That interval holds the images fixed as a sample and the trainings
fixed as done; it does not see training-to-training variation (another initialisation, another fold).

So a second, paired test runs over the replicates: the per-fold (or per-seed) differences to the top, with
the Nadeau-Bengio corrected t-interval for K-fold (their variance inflated by ``1/n + 1/(K-1)`` for the
overlapping training sets, n = R x K fold scores of R repeats; Nadeau & Bengio 2003, the corrected repeated
K-fold test of Bouckaert & Frank 2004). Fold runs use different seeds
(``classbench.comparison.replicates.plan``), so this interval carries initialisation noise too. A model is
*worse* only when **both** 95% intervals exclude 0; otherwise it is *tied* with the top. Fold-to-fold spread
of each model's own score is shown too (mean, std and the same corrected interval).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_BOOT = 2000
BOOT_CHUNK_WEIGHTS = 2_000_000  # image weights held at once by the bootstrap (float32: 8 MB)


@dataclass(frozen=True)
class Replicates:
    """One architecture's held-out predictions: ``preds[r]`` holds class indices for the images
    ``images`` (shared by all architectures), ``fold_scores`` the per-fold (or per-seed) macro-F1."""

    preds: Sequence[np.ndarray]
    fold_scores: Sequence[float] = ()


@dataclass
class Standing:
    """One architecture's place in the verdict."""

    name: str
    score: float
    fold_mean: float | None
    fold_std: float | None
    fold_ci: tuple[float, float] | None
    delta: float = 0.0  # top's score minus this one's
    delta_ci: tuple[float, float] | None = None  # paired image bootstrap
    fold_delta_ci: tuple[float, float] | None = None  # paired corrected t over folds (or seeds)
    status: str = "best"  # best | tied | worse

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Verdict:
    """Standings best first, the selected architecture and the sentence that states the verdict."""

    standings: list[Standing]
    protocol: str
    n_images: int
    metric: str = "macro-F1"
    unit: str = "folds"  # what the replicates are: folds (cross-validation) or seeds
    sentence: str = ""
    tied: list[str] = field(default_factory=list)

    @property
    def selected(self) -> str:
        return self.standings[0].name

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "n_images": self.n_images, "metric": self.metric,
                "selected": self.selected, "tied": self.tied, "sentence": self.sentence,
                "standings": [s.to_dict() for s in self.standings]}


def weighted_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 of ``y_pred`` under each row of image ``weights`` (``[B, N]`` -> ``[B]``)."""
    from classbench.metrics import macro_f1_from_counts

    eye = np.eye(n_classes, dtype=weights.dtype)
    truth, guess = eye[y_true], eye[y_pred]
    support, predicted = weights @ truth, weights @ guess
    tp = weights @ (truth * (y_true == y_pred)[:, None])
    return macro_f1_from_counts(tp, support, predicted)


def _group_strata(y_true: np.ndarray, groups: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """Each image's group index and each group's class (its majority label, as ``split`` assigns groups)."""
    from classbench.data.split import majority_label

    keys = list(groups) if groups is not None else list(range(len(y_true)))
    ids: dict[Any, int] = {}
    image_group = np.array([ids.setdefault(key, len(ids)) for key in keys], dtype=np.int64)
    members: list[list[str]] = [[] for _ in ids]
    for g, label in zip(image_group, y_true):
        members[g].append(f"{int(label):09d}")
    return image_group, np.array([int(majority_label(m)) for m in members], dtype=np.int64)


def bootstrap_weights(y_true: np.ndarray, groups: Sequence[Any] | None, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, N]`` image weights: groups resampled with replacement within their class (stratified cluster
    bootstrap; a group's class is its majority label), every image of a drawn group counted. With groups of one
    image each class keeps its support exactly; with larger groups the number of groups per class is fixed."""
    image_group, group_class = _group_strata(y_true, groups)
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, len(group_class)), dtype=np.float32)
    for c in np.unique(group_class):
        members = np.flatnonzero(group_class == c)
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=n_boot)
    return counts[:, image_group]


def _bootstrap_scores(results: Mapping[str, Replicates], y_true: np.ndarray, n_classes: int,
                      groups: Sequence[Any] | None, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Each model's macro-F1 under the same ``n_boot`` draws (paired): images resampled as above and, where a
    model has several replicates (repeats or seeds), the replicates resampled too (the same draw for every model), so
    seed-to-seed variation enters the interval. Computed in chunks of draws (memory ~ 2M weights at a time)."""
    rng = np.random.default_rng(seed + 1)
    n_rep = max(len(r.preds) for r in results.values())
    picks = rng.integers(0, n_rep, size=(n_boot, n_rep)) if n_rep > 1 else np.zeros((n_boot, 1), dtype=np.int64)
    out = {name: np.empty(n_boot) for name in results}
    chunk = max(1, min(n_boot, BOOT_CHUNK_WEIGHTS // max(len(y_true), 1)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        weights = bootstrap_weights(y_true, groups, b, seed + start)
        for name, rep in results.items():
            per_rep = np.stack([weighted_macro_f1(y_true, p, weights, n_classes) for p in rep.preds])  # [R, b]
            chosen = picks[start:start + b] % len(rep.preds)
            out[name][start:start + b] = per_rep[chosen, np.arange(b)[:, None]].mean(axis=1)
    return out


def _fold_spread(scores: Sequence[float], folds: int, clip: tuple[float, float] = (0.0, 1.0),
                 ) -> tuple[float | None, float | None, tuple[float, float] | None]:
    """Mean, std and 95% interval of per-fold values: ``folds`` >= 2 is K of (repeated) K-fold, corrected as
    Nadeau-Bengio / Bouckaert-Frank; 0 means the values are seeds on one split (plain t). Clipped to ``clip``
    (a score lies in [0, 1], a difference of scores in [-1, 1])."""
    if len(scores) < 2:
        return (float(scores[0]) if scores else None), None, None
    from scipy.stats import t

    x = np.asarray(scores, dtype=np.float64)
    k, mean, std = len(x), float(x.mean()), float(x.std(ddof=1))
    factor = 1 / k + (1 / (folds - 1) if folds >= 2 else 0.0)  # n_test / n_train = 1 / (K - 1) in K-fold
    half = float(t.ppf(0.975, k - 1)) * std * math.sqrt(factor)
    return mean, std, (max(clip[0], mean - half), min(clip[1], mean + half))


def paired_fold_interval(top: Sequence[float], other: Sequence[float], folds: int) -> tuple[float, float] | None:
    """95% interval of the top's per-fold (or per-seed) advantage over ``other``, paired by fold; None when
    there are fewer than two paired replicates (one run: the image bootstrap is all there is)."""
    if len(top) < 2 or len(top) != len(other):
        return None
    diffs = np.asarray(top, dtype=np.float64) - np.asarray(other, dtype=np.float64)
    return _fold_spread(list(diffs), folds, clip=(-1.0, 1.0))[2]


def decide(results: Mapping[str, Replicates], y_true: np.ndarray, n_classes: int, protocol: str,
           groups: Sequence[Any] | None = None, folds: int = 5, n_boot: int = N_BOOT, seed: int = 0) -> Verdict:
    """Rank ``results`` (name -> replicates on the same images ``y_true``) and compare each with the top.
    ``folds``: K when the replicates are (repeated) K-fold cross-validations and ``fold_scores`` their R x K
    per-fold scores (the same fold order for every model); 0 when they are seeds on one split."""
    if not results:
        raise ValueError("no results to decide between")
    y_true = np.asarray(y_true, dtype=np.int64)
    ones = np.ones((1, len(y_true)))
    point = {}
    for name, rep in results.items():
        if any(len(p) != len(y_true) for p in rep.preds):
            raise ValueError(f"{name}: predictions do not cover the same images")
        point[name] = float(np.mean([weighted_macro_f1(y_true, p, ones, n_classes)[0] for p in rep.preds]))
    boots = _bootstrap_scores(results, y_true, n_classes, groups, n_boot, seed)
    order = sorted(results, key=lambda n: (-point[n], n))
    top = order[0]
    standings = []
    for name in order:
        mean, std, ci = _fold_spread(list(results[name].fold_scores), folds)
        s = Standing(name, point[name], mean, std, ci)
        if name != top:
            diff = boots[top] - boots[name]
            low, high = (float(q) for q in np.quantile(diff, [0.025, 0.975]))
            s.delta, s.delta_ci = point[top] - point[name], (low, high)
            s.fold_delta_ci = paired_fold_interval(results[top].fold_scores, results[name].fold_scores, folds)
            separated = low > 0.0 and (s.fold_delta_ci is None or s.fold_delta_ci[0] > 0.0)
            s.status = "worse" if separated else "tied"
        standings.append(s)
    verdict = Verdict(standings, protocol, len(y_true), unit="folds" if folds >= 2 else "seeds")
    verdict.tied = [s.name for s in standings if s.status == "tied"]
    verdict.sentence = sentence(verdict)
    return verdict


def _ci(s: Standing, unit: str = "folds") -> str:
    low, high = s.delta_ci or (0.0, 0.0)
    text = f"\u0394 macro-F1 {s.delta:.3f}, 95% CI {low:.3f} to {high:.3f}"
    if s.fold_delta_ci:
        text += f" over images, {s.fold_delta_ci[0]:.3f} to {s.fold_delta_ci[1]:.3f} over {unit}"
    return text


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def sentence(verdict: Verdict) -> str:
    """The verdict in one sentence, e.g. "densenet121 and resnet50 are tied (...); mobilenetv2 is worse (...)"."""
    top = verdict.standings[0]
    tied = [s for s in verdict.standings if s.status == "tied"]
    worse = [s for s in verdict.standings if s.status == "worse"]
    where = f"{verdict.protocol}, {verdict.n_images} images"
    if len(verdict.standings) == 1:
        return f"{top.name}: macro-F1 {top.score:.3f} ({where}); nothing to compare it with."
    if tied:
        head = (f"{_names([top.name] + [s.name for s in tied])} are tied "
                f"({'; '.join(f'{s.name}: {_ci(s, verdict.unit)}' for s in tied)})")
    else:
        head = f"{top.name} is best (macro-F1 {top.score:.3f})"
    if worse:
        verb = "is" if len(worse) == 1 else "are"
        head += f"; {_names([s.name for s in worse])} {verb} worse ({'; '.join(f'{s.name}: {_ci(s, verdict.unit)}' for s in worse)})"
    return f"{head} [{where}]."
