"""Confident-learning label-issue finder: exact hand-made cases, a noisy synthetic dataset, the merge with
``check``'s label conflicts, the CSV round trip and the contact sheet."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classbench.label_issues import (
    BOTH,
    CHECK,
    COLUMNS,
    OUT_OF_FOLD,
    LabelIssue,
    class_thresholds,
    find_label_issues,
    label_issue_rows,
    plot_label_issues,
    write_label_issues,
)

# Thresholds: t0 = mean(.9, .8, .1) = .6, t1 = mean(.9, .8, .2) = .6333, t2 = mean(.9, .8, .4) = .7.
# Sample 2 (given 0) looks like 1; sample 5 (given 1) looks like 0; sample 8 is below its own threshold but
# no other class clears its threshold, so it is not flagged.
LABELS3 = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
PROBS3 = np.array([[.9, .05, .05], [.8, .1, .1], [.1, .85, .05],
                   [.05, .9, .05], [.1, .8, .1], [.7, .2, .1],
                   [.05, .05, .9], [.1, .1, .8], [.3, .3, .4]])


def _as_tuples(issues: list[LabelIssue]) -> list[tuple]:
    return [(it.index, it.given, it.suggested, round(it.margin, 9), round(it.self_confidence, 9)) for it in issues]


def test_exact_flags_suggestions_and_order() -> None:
    np.testing.assert_allclose(class_thresholds(LABELS3, PROBS3), [0.6, 1.9 / 3, 0.7])
    assert _as_tuples(find_label_issues(LABELS3, PROBS3)) == [(2, 0, 1, 0.75, 0.1), (5, 1, 0, 0.5, 0.2)]
    issue = find_label_issues(LABELS3, PROBS3)[0]
    assert all(type(v) is t for v, t in zip((issue.index, issue.given, issue.suggested, issue.margin, issue.self_confidence),
                                             (int, int, int, float, float)))
    with pytest.raises(AttributeError):
        issue.margin = 0.0  # frozen


def test_ranked_by_self_confidence_then_margin_then_index() -> None:
    # t0 = t1 = .55; self-confidence: idx3 .1, idx6 .2, idx7 .2 (a tie on margin too, broken by index), idx2 .3
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.array([[.9, .1], [.9, .1], [.3, .7], [.1, .9], [.1, .9], [.1, .9], [.8, .2], [.8, .2]])
    assert [(it.index, it.suggested) for it in find_label_issues(labels, probs)] == [(3, 1), (6, 0), (7, 0), (2, 1)]


def test_a_label_below_its_threshold_that_another_class_outranks_is_flagged() -> None:
    # t0 = .575, t1 = .85: neither sample 2 nor 3 clears t1, but each is below t0 and predicted as class 1
    # (class 2, which nobody is labelled with, is never suggested). Sample 2 has the lower self-confidence
    # (.2 against .3), so it comes first although its margin is smaller (.3 against .4).
    labels = np.array([0, 0, 0, 0, 1, 1])
    probs = np.array([[.9, .05, .05], [.9, .05, .05], [.2, .5, .3], [.3, .7, 0], [.1, .9, 0], [.1, .8, .1]])
    assert _as_tuples(find_label_issues(labels, probs)) == [(2, 0, 1, 0.3, 0.2), (3, 0, 1, 0.4, 0.3)]


def test_suggestion_is_best_class_that_clears_its_threshold() -> None:
    # t0 = .6333, t1 = .96, t2 = .4. Sample 2's most likely other class (1, p=.5) misses t1; class 2 (p=.4)
    # meets t2 exactly, so it is the suggestion, while the margin still uses the top other class (.5 - .1).
    # Samples 5 and 6 sit exactly on their own threshold: not below it, so not flagged.
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    probs = np.array([[.9, .05, .05], [.9, .05, .05], [.1, .5, .4], [.02, .96, .02], [.02, .96, .02],
                      [.3, .3, .4], [.3, .3, .4]])
    assert _as_tuples(find_label_issues(labels, probs)) == [(2, 0, 2, 0.4, 0.1)]


def test_class_without_labelled_samples_never_clears() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[.8, .1, .1], [.1, .1, .8], [.1, .8, .1], [.1, .8, .1]])
    t = class_thresholds(labels, probs)
    assert t[2] == math.inf
    assert find_label_issues(labels, probs) == []
    # Once one image is labelled 2 (t2 = its own .1, so it is not below it), sample 1 clears t2.
    labels = np.array([0, 0, 1, 2])
    assert _as_tuples(find_label_issues(labels, probs)) == [(1, 0, 2, 0.7, 0.1)]


def test_clean_and_degenerate_inputs() -> None:
    labels = np.array([0, 1, 2, 0])
    assert find_label_issues(labels, np.eye(3)[labels]) == []  # predictions agree with every label
    assert find_label_issues(np.array([], dtype=int), np.zeros((0, 3))) == []
    assert find_label_issues([], []) == []
    assert find_label_issues(np.zeros(3, dtype=int), np.ones((3, 1))) == []  # one class: nothing to suggest
    probs32 = PROBS3.astype(np.float32)
    assert [it.index for it in find_label_issues(LABELS3.astype(np.uint8), probs32)] == [2, 5]


def test_permutation_only_renumbers() -> None:
    perm = np.random.default_rng(3).permutation(len(LABELS3))
    issues = find_label_issues(LABELS3[perm], PROBS3[perm])
    assert [(int(perm[it.index]), it.suggested) for it in issues] == [(2, 1), (5, 0)]


@pytest.mark.parametrize(("labels", "probs", "match"), [
    (LABELS3, PROBS3[:-1], "9 samples but probs has 8 rows"),
    (LABELS3.reshape(3, 3), PROBS3, "labels must be 1-D"),
    (LABELS3, PROBS3[:, 0], "probs must be 2-D"),
    (LABELS3.astype(float), PROBS3, "integer class indices"),
    (np.where(LABELS3 == 2, 3, LABELS3), PROBS3, r"labels must lie in \[0, 2\]"),
    (np.where(LABELS3 == 2, -1, LABELS3), PROBS3, r"labels must lie in \[0, 2\]"),
    (LABELS3, np.where(PROBS3 == .9, np.nan, PROBS3), "NaN/infinite"),
    (LABELS3, PROBS3 * 10 - 3, "not logits"),
    (LABELS3, PROBS3 * 0.5, "must sum to 1"),
    (np.array([], dtype=int), np.ones((2, 3)) / 3, "labels is empty"),
])
def test_bad_input_raises(labels, probs, match) -> None:
    with pytest.raises(ValueError, match=match):
        find_label_issues(labels, probs)


def test_finds_flipped_labels_in_separable_clusters() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)  # 10 sd apart: a confident model
    y = np.repeat(np.arange(4), 100)
    X = centers[y] + rng.normal(0, 1.0, (len(y), 2))
    flipped = rng.choice(len(y), size=24, replace=False)  # 6%
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 4, size=len(flipped))) % 4  # always another class
    assert (noisy[flipped] != y[flipped]).all()
    probs = cross_val_predict(LogisticRegression(), X, noisy, cv=5, method="predict_proba")
    issues = find_label_issues(noisy, probs)
    found = {it.index for it in issues}
    truth = set(flipped.tolist())
    assert len(found & truth) / len(truth) >= 0.9  # recall over everything flagged
    top = [it.index for it in issues[: len(truth)]]
    assert len(set(top) & truth) / len(truth) >= 0.8  # precision at k = number flipped
    caught = [it for it in issues if it.index in truth]
    assert sum(it.suggested == y[it.index] for it in caught) / len(caught) >= 0.9  # suggests the original class
    assert all(issues[i].self_confidence <= issues[i + 1].self_confidence for i in range(len(issues) - 1))


CLASSES = ["ca,t", "döck ⚓", "lift \"big\""]  # folder names: a comma, unicode, quotes


def _paths(tmp_path: Path) -> list[str]:
    return [str(tmp_path / f"img_{i}.png") for i in range(len(LABELS3))]


def _merged(tmp_path: Path) -> list[dict]:
    paths = _paths(tmp_path)
    conflicts = [
        {"labels": ["ca,t", "döck ⚓"], "files": [str(tmp_path / "sub" / ".." / "img_2.png"), paths[1]]},
        {"labels": CLASSES, "files": [str(tmp_path / "test_only.png"), paths[8], paths[1]]},
    ]
    return label_issue_rows(paths, CLASSES, LABELS3, PROBS3, conflicts)


def test_rows_merge_check_conflicts(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    rows = _merged(tmp_path)
    assert [list(r) for r in rows] == [COLUMNS] * len(rows)
    assert [(r["rank"], r["path"], r["given"], r["suggested"], r["source"]) for r in rows] == [
        (1, paths[2], "ca,t", "döck ⚓", BOTH),  # flagged and in a conflict: keeps the finder's numbers
        (2, paths[5], "döck ⚓", "ca,t", OUT_OF_FOLD),
        ("", paths[1], "ca,t", "döck ⚓", CHECK),  # conflict only: the group's other label
        ("", str(tmp_path / "test_only.png"), "", "", CHECK),  # no out-of-fold prediction (e.g. a test image)
        ("", paths[8], "lift \"big\"", "", CHECK),  # three labels in the group: no single suggestion
    ]
    assert (rows[0]["margin"], rows[0]["self_confidence"]) == pytest.approx((0.75, 0.1))
    assert (rows[2]["margin"], rows[2]["self_confidence"]) == pytest.approx((-0.7, 0.8))
    assert (rows[3]["margin"], rows[3]["self_confidence"]) == ("", "")
    assert (rows[4]["margin"], rows[4]["self_confidence"]) == pytest.approx((-0.1, 0.4))
    plain = label_issue_rows(paths, CLASSES, LABELS3, PROBS3)
    assert [(r["rank"], r["source"]) for r in plain] == [(1, OUT_OF_FOLD), (2, OUT_OF_FOLD)]
    assert label_issue_rows([], CLASSES, np.array([], dtype=int), np.zeros((0, 3))) == []
    with pytest.raises(ValueError, match="8 paths but 9 labels"):
        label_issue_rows(paths[:-1], CLASSES, LABELS3, PROBS3)
    with pytest.raises(ValueError, match="2 class names but probs has 3 columns"):
        label_issue_rows(paths, CLASSES[:2], LABELS3, PROBS3)


def test_csv_round_trip(tmp_path: Path) -> None:
    rows = _merged(tmp_path)
    out = write_label_issues(tmp_path / "run" / "label_issues.csv", rows)
    assert out == tmp_path / "run" / "label_issues.csv"
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp file left behind
    text = out.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert '"ca,t"' in text and "döck ⚓" in text
    with out.open(encoding="utf-8", newline="") as fh:
        back = list(csv.DictReader(fh))
    assert back == [{k: str(v) for k, v in r.items()} for r in rows]
    empty = write_label_issues(tmp_path / "empty.csv", [])
    assert empty.read_text(encoding="utf-8") == ",".join(COLUMNS) + "\n"


def _solid_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (20, 14)) -> str:
    Image.new("RGB", size, color).save(path)
    return str(path)


def test_contact_sheet_of_top_rows(tmp_path: Path) -> None:
    colors = [(200, 20, 20), (20, 200, 20), (20, 20, 200)] * 3
    paths = [_solid_png(tmp_path / f"img_{i}.png", c) for i, c in enumerate(colors)]
    rows = label_issue_rows(paths, CLASSES, LABELS3, PROBS3, [{"labels": CLASSES[:2], "files": [paths[1]]}])
    assert len(rows) == 3
    one = plot_label_issues(rows, tmp_path / "one.png", limit=1)
    every = plot_label_issues(rows, tmp_path / "sheets" / "all.png")
    with Image.open(one) as a, Image.open(every) as b:
        assert a.format == b.format == "PNG"
        assert b.width > a.width  # three tiles vs one
        pixels = set(b.convert("RGB").getdata())
    assert {(20, 20, 200), (20, 200, 20)} <= pixels  # img_2 (blue), img_5 and img_1 (green) thumbnails drawn
    write_label_issues(tmp_path / "issues.csv", rows)  # rows read back from the CSV (strings) work too
    with (tmp_path / "issues.csv").open(encoding="utf-8", newline="") as fh:
        assert plot_label_issues(list(csv.DictReader(fh)), tmp_path / "back.png").is_file()
    assert plot_label_issues([], tmp_path / "none.png").is_file()


def test_contact_sheet_captions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import classbench.report.plots as plots

    seen: list = []
    monkeypatch.setattr(plots, "contact_sheet",
                        lambda items, path, **kw: seen.append((list(items), kw)) or Path(path))
    plot_label_issues(_merged(tmp_path), tmp_path / "x.png", limit=4)
    assert seen[0][1]["captions"] == ("given", "suggested")
    seen[0] = seen[0][0]
    assert [(Path(p).name, g, s) for p, g, s, _ in seen[0]] == [
        ("img_2.png", "ca,t", "döck ⚓"), ("img_5.png", "döck ⚓", "ca,t"), ("img_1.png", "ca,t", "döck ⚓"),
        ("test_only.png", "", "")]
    probs = [p for *_, p in seen[0]]
    assert probs[:3] == pytest.approx([0.85, 0.7, 0.1])  # the most likely other class's probability
    assert math.isnan(probs[3])
