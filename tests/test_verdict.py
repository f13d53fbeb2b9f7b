"""The verdict: paired stratified cluster bootstrap, ties called ties, fold spread, the sentence."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from classbench.verdict import Replicates, bootstrap_weights, decide, weighted_macro_f1

N_CLASSES = 4


def _labels(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(N_CLASSES, size=n, p=[0.5, 0.3, 0.15, 0.05])


def _noisy(y: np.ndarray, error_rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y)) < error_rate
    return np.where(wrong, (y + rng.integers(1, N_CLASSES, len(y))) % N_CLASSES, y)


def test_weighted_macro_f1_with_unit_weights_is_sklearns() -> None:
    y = _labels()
    pred = _noisy(y, 0.3, seed=1)
    present = sorted(set(y) | set(pred))
    expected = f1_score(y, pred, average="macro", labels=present)
    assert weighted_macro_f1(y, pred, np.ones((1, len(y))), N_CLASSES)[0] == pytest.approx(expected)


def test_bootstrap_is_stratified_and_keeps_groups_together() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    groups = ["g0", "g0", "a", "b", "g1", "g1", "c", "d", "e", "f"]
    w = bootstrap_weights(y, groups, n_boot=500, seed=0)
    assert w.shape == (500, 10)
    assert np.array_equal(w[:, 0], w[:, 1]) and np.array_equal(w[:, 4], w[:, 5])  # a group is drawn whole
    # groups are resampled within their class: class 2 (3 singleton groups) always weighs exactly 3
    assert np.all(w[:, 7:].sum(axis=1) == 3)
    assert w[:, :4].sum(axis=1).std() > 0  # class 0 mixes a pair and singles: its weight varies
    singles = bootstrap_weights(y, None, n_boot=200, seed=0)
    for c in range(3):
        assert np.all(singles[:, y == c].sum(axis=1) == (y == c).sum())


def test_identical_models_are_tied_and_a_clearly_better_one_is_not() -> None:
    y = _labels()
    good = _noisy(y, 0.15, seed=2)
    verdict = decide({"a": Replicates([good]), "b": Replicates([good.copy()]), "c": Replicates([_noisy(y, 0.6, 3)])},
                     y, N_CLASSES, "test protocol", folds=0)
    status = {s.name: s.status for s in verdict.standings}
    assert status == {"a": "best", "b": "tied", "c": "worse"}
    tied = verdict.standings[1]
    assert tied.delta == 0.0 and tied.delta_ci[0] <= 0.0 <= tied.delta_ci[1]
    worse = verdict.standings[2]
    assert worse.delta_ci[0] > 0.1 and verdict.tied == ["b"]
    assert verdict.sentence.startswith("a and b are tied (b: \u0394 macro-F1 0.000, 95% CI")
    assert "c is worse (c: \u0394 macro-F1" in verdict.sentence and "[test protocol, 200 images]" in verdict.sentence


def test_a_small_difference_on_few_images_is_a_tie() -> None:
    y = _labels(60, seed=4)
    a = _noisy(y, 0.20, seed=5)
    b = a.copy()
    b[:3] = (y[:3] + 1) % N_CLASSES  # three more mistakes
    verdict = decide({"a": Replicates([a]), "b": Replicates([b])}, y, N_CLASSES, "p")
    assert verdict.standings[1].status == "tied" and verdict.standings[1].delta > 0


def test_replicates_average_and_fold_spread_uses_the_nadeau_bengio_correction() -> None:
    y = _labels(100, seed=6)
    reps = [_noisy(y, 0.2, seed=s) for s in range(3)]
    scores = [0.70, 0.74, 0.78, 0.72, 0.76]
    verdict = decide({"m": Replicates(reps, scores)}, y, N_CLASSES, "p", folds=5)
    s = verdict.standings[0]
    ones = np.ones((1, len(y)))
    assert s.score == pytest.approx(np.mean([weighted_macro_f1(y, r, ones, N_CLASSES)[0] for r in reps]))
    from scipy.stats import t

    std = np.std(scores, ddof=1)
    half = t.ppf(0.975, 4) * std * math.sqrt(1 / 5 + 1 / 4)
    assert s.fold_mean == pytest.approx(0.74) and s.fold_std == pytest.approx(std)
    assert s.fold_ci == pytest.approx((0.74 - half, 0.74 + half))
    naive = decide({"m": Replicates(reps, scores)}, y, N_CLASSES, "p", folds=0).standings[0].fold_ci
    assert naive[1] - naive[0] < s.fold_ci[1] - s.fold_ci[0]  # the correction widens the interval
    assert "nothing to compare it with" in verdict.sentence


def test_predictions_must_cover_the_same_images() -> None:
    y = _labels(50)
    with pytest.raises(ValueError, match="same images"):
        decide({"a": Replicates([y]), "b": Replicates([y[:-1]])}, y, N_CLASSES, "p")


def test_seed_to_seed_variation_enters_the_interval() -> None:
    """With several replicates the bootstrap resamples them too: two seeds that disagree widen the interval."""
    from classbench.verdict import _bootstrap_scores

    y = _labels(120, seed=7)
    wrong = (y + 1) % N_CLASSES
    boots = _bootstrap_scores({"m": Replicates([y.copy(), wrong])}, y, N_CLASSES, None, n_boot=400, seed=0)["m"]
    assert boots.std() > 0.3  # draws that pick the good seed twice, the bad one twice, or one of each
    steady = _bootstrap_scores({"m": Replicates([y.copy(), y.copy()])}, y, N_CLASSES, None, n_boot=400, seed=0)["m"]
    assert steady.std() == 0.0


def test_bootstrap_in_small_chunks_decides_the_same(monkeypatch) -> None:
    """Large data is bootstrapped in chunks of draws (bounded memory); the decision does not depend on it."""
    from classbench import verdict

    y = _labels(80, seed=8)
    results = {"a": Replicates([_noisy(y, 0.1, 9)]), "b": Replicates([_noisy(y, 0.1, 9)]),
               "c": Replicates([_noisy(y, 0.7, 10)])}
    groups = [i // 2 for i in range(len(y))]
    whole = decide(results, y, N_CLASSES, "p", groups=groups, n_boot=300)
    monkeypatch.setattr(verdict, "BOOT_CHUNK_WEIGHTS", 80 * 7)  # 7 draws per chunk
    chunked = decide(results, y, N_CLASSES, "p", groups=groups, n_boot=300)
    assert [s.status for s in chunked.standings] == [s.status for s in whole.standings] == ["best", "tied", "worse"]
    assert chunked.standings[2].delta_ci[0] > 0.2


def test_a_model_the_images_separate_but_the_folds_do_not_is_tied() -> None:
    # the bootstrap over images alone calls c clearly worse; its per-fold differences to the top swing around 0
    # (one training went well, another badly), so the paired fold test keeps it tied
    y = _labels()
    good, bad = _noisy(y, 0.15, seed=2), _noisy(y, 0.6, seed=3)
    top_folds, c_folds = [0.80, 0.60, 0.82, 0.58, 0.81], [0.62, 0.79, 0.57, 0.80, 0.60]
    verdict = decide({"a": Replicates([good], top_folds), "c": Replicates([bad], c_folds)}, y, N_CLASSES, "p", folds=5)
    c = verdict.standings[1]
    assert c.delta_ci[0] > 0.1  # the images alone would separate them
    low, high = c.fold_delta_ci
    assert low < 0 < high and c.status == "tied"
    assert "over images" in verdict.sentence and "over folds" in verdict.sentence
    # consistent per-fold wins: both tests separate, so c is worse
    steady = decide({"a": Replicates([good], [0.80, 0.81, 0.79, 0.82, 0.80]),
                     "c": Replicates([bad], [0.60, 0.62, 0.59, 0.61, 0.60])}, y, N_CLASSES, "p", folds=5)
    assert steady.standings[1].status == "worse" and steady.standings[1].fold_delta_ci[0] > 0.1


def test_paired_fold_interval_matches_the_corrected_t_by_hand() -> None:
    from scipy.stats import t

    from classbench.verdict import paired_fold_interval

    top, other = [0.70, 0.75, 0.72, 0.78, 0.74], [0.68, 0.70, 0.73, 0.71, 0.69]
    d = np.subtract(top, other)
    half = t.ppf(0.975, 4) * d.std(ddof=1) * np.sqrt(1 / 5 + 1 / 4)
    assert paired_fold_interval(top, other, folds=5) == pytest.approx((d.mean() - half, d.mean() + half))
    half_seeds = t.ppf(0.975, 4) * d.std(ddof=1) * np.sqrt(1 / 5)
    assert paired_fold_interval(top, other, folds=0) == pytest.approx((d.mean() - half_seeds, d.mean() + half_seeds))
    assert paired_fold_interval([0.7], [0.6], folds=5) is None and paired_fold_interval(top, other[:3], folds=5) is None


def test_repeated_folds_use_the_bouckaert_frank_correction() -> None:
    """2 x 5-fold: ten paired differences, variance inflated by 1/10 + 1/4 (not 1/10 + 1/9), t with 9 df; the
    interval is narrower than one 5-fold's with the same spread, which is what repeating buys."""
    from scipy.stats import t

    from classbench.verdict import paired_fold_interval

    top = [0.70, 0.75, 0.72, 0.78, 0.74, 0.71, 0.76, 0.73, 0.77, 0.72]
    other = [0.68, 0.70, 0.73, 0.71, 0.69, 0.66, 0.72, 0.70, 0.70, 0.69]
    d = np.subtract(top, other)
    half = t.ppf(0.975, 9) * d.std(ddof=1) * np.sqrt(1 / 10 + 1 / 4)
    low, high = paired_fold_interval(top, other, folds=5)
    assert (low, high) == pytest.approx((d.mean() - half, d.mean() + half))
    one = paired_fold_interval(top[:5], other[:5], folds=5)
    assert high - low < one[1] - one[0]
