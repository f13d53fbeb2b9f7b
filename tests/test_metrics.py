"""classbench.metrics against scikit-learn and against constructed ground truth."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn import metrics as skm

from classbench import calibration as cal
from classbench import metrics as M

C = 6
CLASSES = ["a", "b", "c", "never_predicted", "d", "absent"]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class 3 is never predicted, class 5 never occurs in y_true (but is predicted)."""
    rng = np.random.default_rng(1)
    n = 500
    y_true = rng.choice([0, 1, 2, 3, 4], size=n, p=[0.4, 0.2, 0.2, 0.1, 0.1])
    noise = rng.choice([0, 1, 2, 4, 5], size=n)
    y_pred = np.where((rng.random(n) < 0.6) & (y_true != 3), y_true, noise)
    probs = rng.dirichlet(np.ones(C), size=n)
    return y_true, y_pred, probs


def test_summary_matches_sklearn(data):
    y_true, y_pred, probs = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zero-division or other warnings may leak
        s = M.classification_summary(y_true, y_pred, probs, CLASSES)
    labels = list(range(C))
    p, r, f, sup = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, row in enumerate(s["per_class"]):
        assert row["class"] == CLASSES[i]
        cis = {k: row.pop(k) for k in ("precision_ci", "recall_ci")}
        assert row == pytest.approx({"class": CLASSES[i], "precision": p[i], "recall": r[i], "f1": f[i],
                                     "support": sup[i], "predicted": int((y_pred == i).sum())})
        tp = int(((y_true == i) & (y_pred == i)).sum())
        for key, den in (("precision_ci", row["predicted"]), ("recall_ci", row["support"])):
            assert cis[key] == (list(M.proportion_interval(tp, den)) if den else None), (CLASSES[i], key)
    fresh = M.classification_summary(y_true, y_pred, probs, CLASSES)["per_class"]
    assert fresh[3]["precision_ci"] is None and fresh[5]["recall_ci"] is None  # never predicted / absent
    assert fresh[0]["recall_ci"][0] < fresh[0]["recall"] < fresh[0]["recall_ci"][1]
    present = sorted(set(y_true) | set(y_pred))
    assert s["macro_labels"] == [CLASSES[i] for i in present]
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns that y_pred has a class absent from y_true
        assert s["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert s["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", labels=present, zero_division=0))
    assert s["weighted_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0))
    assert set(s["top_k_accuracy"]) == {"1", "3", "5"}
    for k, value in s["top_k_accuracy"].items():
        assert value == pytest.approx(skm.top_k_accuracy_score(y_true, probs, k=int(k), labels=labels))
    assert s["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert s["never_predicted"] == ["never_predicted"]
    assert s["zero_recall"] == ["never_predicted"]  # supported but never predicted; "absent" has no support
    assert (s["worst_class"], s["worst_class_recall"]) == ("never_predicted", 0.0)
    json.dumps(s, allow_nan=False)  # plain, strict-JSON-ready Python


def test_top_k_ties_binary_and_k_at_least_n_classes():
    # C > 2: sklearn's rule, the higher class index wins a tie (a stable sort, reversed)
    tied = np.array([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [0.5, 0.25, 0.25]])
    y = np.array([0, 2, 0])
    assert M.top_k_accuracy(tied, y, 1) == pytest.approx(skm.top_k_accuracy_score(y, tied, k=1, labels=[0, 1, 2]))
    assert M.top_k_accuracy(tied, y, 1) == pytest.approx(2 / 3)  # row 0 ranks class 1 first, row 1 class 2
    assert M.top_k_accuracy(tied, y, 2) == 1.0
    # C == 2: sklearn's binary rule, class 1 only when strictly higher (a tie is class 0, as argmax), any scores
    two = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [3.0, -1.0]])
    yb = np.array([0, 1, 1, 0])
    assert M.top_k_accuracy(two, yb, 1) == pytest.approx(np.mean(two.argmax(1) == yb)) == pytest.approx(0.75)
    assert M.top_k_accuracy(two[:3], yb[:3], 1) == pytest.approx(skm.top_k_accuracy_score(yb[:3], two[:3, 1], k=1))
    # k >= C: a perfect score (sklearn's value), without sklearn's warning; empty input: 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.top_k_accuracy(tied, y, 3) == M.top_k_accuracy(two, yb, 5) == 1.0
    assert M.top_k_accuracy(np.zeros((0, 3)), [], 1) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        M.top_k_accuracy(tied, y, 0)
    with pytest.raises(ValueError, match="rows"):
        M.top_k_accuracy(tied, y[:2], 1)


def test_confusion_matrix_edges():
    assert M.confusion_matrix([], [], 3).tolist() == [[0] * 3] * 3
    assert M.confusion_matrix([0, 0], [0, 0], 1).tolist() == [[2]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = M.classification_summary([1, 1], [1, 1], None, ["a", "b", "c"])  # one class present
    assert s["confusion_matrix"] == [[0, 0, 0], [0, 2, 0], [0, 0, 0]] and s["macro_labels"] == ["b"]
    assert (s["macro_f1"], s["accuracy"], s["balanced_accuracy"]) == (1.0, 1.0, 1.0)
    empty = M.classification_summary([], [], np.zeros((0, 3)), ["a", "b", "c"])
    assert (empty["n_samples"], empty["macro_f1"], empty["top_k_accuracy"]) == (0, 0.0, {"1": 0.0})


def test_summary_top_k_only_below_n_classes_and_optional_probs():
    y = np.array([0, 1, 2, 2])
    probs = np.eye(3)[[0, 2, 2, 1]]
    s = M.classification_summary(y, probs.argmax(1), probs, ["x", "y", "z"])
    assert s["top_k_accuracy"] == {"1": 0.5}
    assert M.classification_summary(y, y, None, ["x", "y", "z"])["top_k_accuracy"] == {}


def test_summary_rejects_bad_labels():
    with pytest.raises(ValueError, match="outside"):
        M.classification_summary([0, 3], [0, 1], None, ["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        M.classification_summary([0, 1], [0], None, ["a", "b"])


@pytest.mark.parametrize("metric", M.BOOTSTRAP_METRICS)
def test_bootstrap_equals_naive_resampling(data, metric):
    """Same resamples as a naive loop over sklearn metrics (labels = classes present in the resample)."""
    y_true, y_pred, _ = data
    t, p = y_true[:100], y_pred[:100]
    n_boot = 40
    low, high = M.bootstrap_ci(t, p, metric, n_boot=n_boot, seed=3)
    idx = np.random.default_rng(3).integers(0, len(t), size=(n_boot, len(t)))

    def naive(tt, pp):
        if metric == "accuracy":
            return skm.accuracy_score(tt, pp)
        if metric == "macro_f1":
            return skm.f1_score(tt, pp, average="macro", labels=np.union1d(tt, pp), zero_division=0)
        return skm.recall_score(tt, pp, average="macro", labels=np.unique(tt), zero_division=0)

    stats = [naive(t[i], p[i]) for i in idx]
    assert (low, high) == pytest.approx(tuple(np.quantile(stats, [0.025, 0.975])))


def test_bootstrap_contains_estimate_narrows_and_is_fast():
    rng = np.random.default_rng(0)

    def sample(n):
        t = rng.integers(0, 5, n)
        return t, np.where(rng.random(n) < 0.7, t, rng.integers(0, 5, n))

    t, p = sample(1000)
    s = M.classification_summary(t, p, None, list("abcde"))
    for metric in M.BOOTSTRAP_METRICS:
        start = time.perf_counter()
        low, high = M.bootstrap_ci(t, p, metric, n_boot=1000)
        assert time.perf_counter() - start < 1.5  # ~0.05 s here; generous for loaded CI machines
        assert low < s[metric] < high
    small = M.bootstrap_ci(*sample(100), "macro_f1")
    large = M.bootstrap_ci(*sample(4000), "macro_f1")
    assert large[1] - large[0] < 0.5 * (small[1] - small[0])
    assert M.bootstrap_ci(t, p, "accuracy", seed=5) == M.bootstrap_ci(t, p, "accuracy", seed=5)
    assert all(np.isnan(M.bootstrap_ci([], [], "accuracy")))
    with pytest.raises(ValueError, match="unknown metric"):
        M.bootstrap_ci(t, p, "auc")


def test_ece_zero_for_perfectly_calibrated_construction():
    # confidence 0.8 -> 8/10 right, 0.6 -> 6/10 right, 1.0 -> all right
    probs = np.array([[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 10 + [[1.0, 0.0]] * 4)
    labels = np.array([0] * 8 + [1] * 2 + [1] * 6 + [0] * 4 + [0] * 4)
    assert cal.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    bins = cal.reliability_bins(probs, labels, n_bins=5)
    assert sum(bins["count"]) == 24 and len(bins["bin_edges"]) == 6
    assert bins["count"][2] == 10 and bins["accuracy"][2] == pytest.approx(0.6)  # 0.6 lies in (0.4, 0.6]
    assert bins["confidence"][0] is None and bins["accuracy"][0] is None


def test_ece_statistically_calibrated_and_overconfident():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=20000)
    labels = (rng.random((20000, 1)) > probs.cumsum(1)).sum(1)  # label ~ probs
    assert cal.expected_calibration_error(probs, labels) < 0.03
    over = np.full((2000, 5), 0.0025)
    over[np.arange(2000), rng.integers(0, 5, 2000)] = 0.99
    assert cal.expected_calibration_error(over, rng.integers(0, 5, 2000)) > 0.2


def _sample_labels(z: np.ndarray, t0: float, rng: np.random.Generator) -> np.ndarray:
    p = cal.softmax(z, t0)
    return np.minimum((rng.random((len(z), 1)) > p.cumsum(1)).sum(1), z.shape[1] - 1)


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=4.0, size=(20000, 5))
    y = _sample_labels(z, 2.5, rng)
    fitted = cal.fit_temperature(z, y)
    assert fitted == pytest.approx(2.5, rel=0.1)
    # the optimum of the NLL (written with scipy's logsumexp) against a plain float64 grid search
    grid = np.exp(np.linspace(np.log(fitted) - 0.05, np.log(fitted) + 0.05, 41))

    def nll(t):
        p = np.exp(z / t - (z / t).max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return -np.mean(np.log(p[np.arange(len(y)), y]))

    assert cal.nll(z, y, 2.0) == pytest.approx(nll(2.0), rel=1e-12)
    assert min(grid, key=nll) == pytest.approx(fitted, rel=3e-3)
    assert cal.fit_temperature(np.zeros((0, 3)), []) == 1.0
    assert cal.fit_temperature(np.ones((4, 3)), [0, 1, 2, 0]) == 1.0  # every row flat: nothing to fit


def test_softmax_extremes_and_validation():
    assert np.allclose(cal.softmax([1e308, -1e308, 0.0], 1e-3), [1, 0, 0])
    assert np.allclose(cal.softmax([np.inf, 0.0, -np.inf]), [1, 0, 0])
    assert np.allclose(cal.softmax(np.log([[1.0, 3.0]])), [[0.25, 0.75]])
    with pytest.raises(ValueError):
        cal.softmax([1.0, 2.0], temperature=0)


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)),
              elements=st.floats(-1e308, 1e308, allow_nan=False)),
       st.floats(1e-3, 1e3))
def test_softmax_property_finite_and_normalised(logits, temperature):
    p = cal.softmax(logits, temperature)
    assert p.shape == logits.shape
    assert np.isfinite(p).all() and (p >= 0).all()
    assert np.allclose(p.sum(-1), 1.0)


def test_class_probability_matrix():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    y = rng.choice([0, 1, 3], size=50)
    m = M.class_probability_matrix(probs, y, 4)
    for c in (0, 1, 3):
        assert np.allclose(m[c], probs[y == c].mean(0))
    assert np.isnan(m[2]).all()
    assert np.allclose(m[[0, 1, 3]].sum(1), 1.0)


# ------------------------------------------------------------------ intervals
# statsmodels.stats.proportion.proportion_confint(k, n, alpha=0.05, method="beta" | "wilson")
CLOPPER_PEARSON = {(2, 2): (0.158113883008419, 1.0), (0, 5): (0.0, 0.521823750104981),
                   (7, 10): (0.347547149940003, 0.933260488822266), (71, 71): (0.949370592045596, 1.0)}
WILSON = {(2, 2): (0.342380227506653, 1.0), (0, 5): (0.0, 0.434482464783175),
          (7, 10): (0.396778147461145, 0.892208732593699), (71, 71): (0.948672047803110, 1.0)}


@pytest.mark.parametrize(("k", "n"), sorted(CLOPPER_PEARSON))
def test_proportion_interval_matches_reference_values_and_definitions(k, n):
    from scipy.stats import binom

    low, high = M.proportion_interval(k, n)
    assert (low, high) == pytest.approx(CLOPPER_PEARSON[(k, n)], abs=1e-9)
    assert M.proportion_interval(k, n, method="wilson") == pytest.approx(WILSON[(k, n)], abs=1e-9)
    # Clopper-Pearson by definition: P(X >= k | low) = P(X <= k | high) = alpha / 2 (edges pinned to 0 / 1)
    assert low == 0.0 if k == 0 else binom.sf(k - 1, n, low) == pytest.approx(0.025, abs=1e-9)
    assert high == 1.0 if k == n else binom.cdf(k, n, high) == pytest.approx(0.025, abs=1e-9)
    # Wilson by its closed form
    z, phat = 1.959963984540054, k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    assert M.proportion_interval(k, n, method="wilson") == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert high - low > 0.05 and low <= k / n <= high


def test_proportion_interval_edges_and_errors():
    assert all(np.isnan(M.proportion_interval(0, 0)))
    assert M.proportion_interval(71, 71)[1] - M.proportion_interval(71, 71)[0] == pytest.approx(0.0506, abs=1e-3)
    narrow, wide = M.proportion_interval(7, 10, confidence=0.5), M.proportion_interval(7, 10, confidence=0.99)
    assert wide[0] < narrow[0] < 0.7 < narrow[1] < wide[1]
    for bad in ((3, 2), (-1, 2), (1.5, 3)):
        with pytest.raises(ValueError, match="0 <= k <= n"):
            M.proportion_interval(*bad)
    with pytest.raises(ValueError, match="unknown method"):
        M.proportion_interval(1, 2, method="wald")
    with pytest.raises(ValueError, match="confidence"):
        M.proportion_interval(1, 2, confidence=95)


def test_clopper_pearson_covers_at_least_nominally_by_simulation():
    rng = np.random.default_rng(0)
    coverage = {}
    for n in (3, 7, 15, 40):
        intervals = np.array([M.proportion_interval(k, n) for k in range(n + 1)])
        for p in (0.03, 0.3, 0.5, 0.8, 0.97):
            k = rng.binomial(n, p, size=4000)
            coverage[(n, p)] = float(np.mean((intervals[k, 0] <= p) & (p <= intervals[k, 1])))
    assert min(coverage.values()) >= 0.93, coverage


BA_CASES = {  # true recalls and class sizes; the first two broke the old Beta-posterior interval (~0.67, ~0.41)
    "recall 0.9, sizes 3/5/8/12": (np.full(4, 0.9), np.array([3, 5, 8, 12])),
    "recall 0.97, sizes 10..40": (np.full(5, 0.97), np.array([10, 15, 20, 30, 40])),
    "moderate recalls, sizes 3/5/8/12": (np.array([0.6, 0.75, 0.85, 0.7]), np.array([3, 5, 8, 12])),
}


@pytest.mark.parametrize("case", BA_CASES)
def test_balanced_accuracy_interval_covers_at_least_nominally_by_simulation(case):
    """Guaranteed coverage (>= 95%, allowing simulation noise), also for good classifiers on small classes,
    and the sample balanced accuracy lies inside its own interval in every simulated draw."""
    rates, sizes = BA_CASES[case]
    rng = np.random.default_rng(0)
    hits, inside = [], []
    for _ in range(1000):
        correct = rng.binomial(sizes, rates)
        low, high = M.balanced_accuracy_interval(correct, sizes)
        hits.append(low <= rates.mean() <= high)
        inside.append(low <= np.mean(correct / sizes) <= high)
    assert np.mean(hits) >= 0.93, (case, np.mean(hits))
    assert all(inside)


def test_balanced_accuracy_interval_reference_values_and_edges():
    from scipy.stats import beta

    # one class: exactly the Clopper-Pearson interval at the plain level
    for k, n in ((5, 5), (0, 4), (3, 7)):
        assert M.balanced_accuracy_interval([k], [n]) == pytest.approx(M.proportion_interval(k, n))
    assert M.balanced_accuracy_interval([3], [7], 0.9) == pytest.approx(M.proportion_interval(3, 7, 0.9))
    # two classes at 95%: Clopper-Pearson per class at 1 - 0.05 / 2 = 97.5%, i.e. tails of 0.0125
    # (2 of 2: low = Beta(0.0125; 2, 1), high = 1; 5 of 8: Beta(0.0125; 5, 4) .. Beta(0.9875; 6, 3)), then the means
    expected = ((beta.ppf(0.0125, 2, 1) + beta.ppf(0.0125, 5, 4)) / 2, (1.0 + beta.ppf(0.9875, 6, 3)) / 2)
    assert M.balanced_accuracy_interval([2, 5], [2, 8]) == pytest.approx(expected, rel=1e-12)
    assert expected[0] < (1 + 5 / 8) / 2 < expected[1]
    # 100% correct on every class: a positive width, up to 1
    low, high = M.balanced_accuracy_interval([3, 5, 2], [3, 5, 2])
    assert 0 < low < high == 1.0 and high - low > 0.05
    # classes without support are left out (and do not count towards the Bonferroni level)
    assert M.balanced_accuracy_interval([3, 0, 1], [4, 0, 2]) == M.balanced_accuracy_interval([3, 1], [4, 2])
    assert all(np.isnan(M.balanced_accuracy_interval([0, 0], [0, 0])))
    assert all(np.isnan(M.balanced_accuracy_interval([], [])))
    with pytest.raises(ValueError, match="correct <= support"):
        M.balanced_accuracy_interval([3], [2])
    with pytest.raises(ValueError, match="correct <= support"):
        M.balanced_accuracy_interval([-1, 2], [3, 3])
    with pytest.raises(ValueError, match="correct <= support"):
        M.balanced_accuracy_interval([1.5], [3])
    with pytest.raises(ValueError, match="support counts"):
        M.balanced_accuracy_interval([1, 2], [3])
    with pytest.raises(ValueError, match="confidence"):
        M.balanced_accuracy_interval([1], [3], confidence=95)


def test_degenerate_bootstrap_is_detected_and_exact_intervals_are_not():
    y = np.repeat(np.arange(3), 24)[:71]  # 71 images, every prediction right
    boot = M.bootstrap_ci(y, y, "macro_f1")
    assert boot == (1.0, 1.0) and M.is_degenerate_interval(boot)
    correct = np.bincount(y)
    assert not M.is_degenerate_interval(M.proportion_interval(71, 71))
    assert not M.is_degenerate_interval(M.balanced_accuracy_interval(correct, correct))
    assert not M.is_degenerate_interval((math.nan, math.nan)) and not M.is_degenerate_interval((None, None))
    rng = np.random.default_rng(0)
    noisy = np.where(rng.random(71) < 0.8, y, rng.integers(0, 3, 71))
    assert not M.is_degenerate_interval(M.bootstrap_ci(y, noisy, "macro_f1"))
