"""Which label-error rule finds flipped labels best? Offline, on the out-of-fold probabilities of cross-validated
compares that already ran (e.g. `bakeoff_stability.py`'s folders): flip 5% of the given labels (seeded, spread
over classes as `label_noise.py` does), rank, and score precision at k = number flipped. No training: the models
saw the clean labels, so this measures the ranking rule, not the models' robustness to noise (`label_noise.py`
trains on the noisy labels and measures both).

Rules: `cl-margin` (confident learning's threshold rule ranked by margin: classbench before 2026-12),
`cl-selfconf` (the same set ranked by self-confidence), `classbench` (``find_label_issues`` today: the threshold
rule or "predicted differs from given" under the threshold, ranked by self-confidence), `selfconf-all` (every
image ranked by self-confidence: no filter, the upper bound of a ranking by p_given).
Model mixes: the compare's top model, its top two, all of them (their probabilities averaged).

Usage: .venv/bin/python benchmarks/label_rules.py [--compares runs/bakeoff-stability/seed-0,...] [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_results  # noqa: E402
from label_noise import flip_labels  # noqa: E402

from classbench.label_issues import class_thresholds, find_label_issues  # noqa: E402
from classbench.predict import read_predictions  # noqa: E402


def out_of_fold(compare: Path, model: str) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """A model's out-of-fold predictions joined over its folds, sorted by path."""
    paths, labels, probs = [], [], []
    for fold in sorted((compare / "cv" / model).glob("fold-*")):
        p, y, pr, classes = read_predictions(fold / "predictions.csv")
        paths += list(p)
        labels += list(y)
        probs.append(pr)
    order = np.argsort(paths)
    return [paths[i] for i in order], [labels[i] for i in order], np.concatenate(probs)[order], list(classes)


def ranked(rule: str, labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices, most suspicious first, under ``rule``."""
    p_given = probs[np.arange(len(labels)), labels]
    if rule == "classbench":
        return np.array([it.index for it in find_label_issues(labels, probs)], dtype=int)
    if rule == "selfconf-all":
        return np.argsort(p_given, kind="stable")
    t = class_thresholds(labels, probs)
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    flagged = np.flatnonzero((others >= t).any(axis=1) & (p_given < t[labels]))
    key = -(others.max(axis=1) - p_given) if rule == "cl-margin" else p_given
    return flagged[np.argsort(key[flagged], kind="stable")]


RULES = ("cl-margin", "cl-selfconf", "classbench", "selfconf-all")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--compares", default=",".join(f"runs/bakeoff-stability/seed-{s}" for s in range(3)))
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--fraction", type=float, default=0.05)
    args = parser.parse_args()
    rows = []
    for compare in (Path(c) for c in args.compares.split(",")):
        order = [s["name"] for s in json.loads((compare / "verdict.json").read_text())["standings"]]
        per = {m: out_of_fold(compare, m) for m in order}
        paths, truth, _, classes = per[order[0]]
        for mix in (order[:1], order[:2], order):
            probs = np.mean([per[m][2] for m in mix], axis=0)
            scores: dict[str, list[float]] = {rule: [] for rule in RULES}
            for trial in range(args.trials):
                flips = flip_labels(list(zip(paths, truth)), args.fraction, seed=100 + trial)
                noisy = np.array([classes.index(flips[p][1] if p in flips else y) for p, y in zip(paths, truth)])
                flipped = np.array([p in flips for p in paths])
                k = int(flipped.sum())
                for rule in RULES:
                    scores[rule].append(float(flipped[ranked(rule, noisy, probs)[:k]].sum() / k))
            rows.append({"compare": str(compare), "models": "+".join(mix), "k": k,
                         **{rule: round(float(np.mean(v)), 3) for rule, v in scores.items()}})
    print_table(rows, ["compare", "models", "k", *RULES])
    mean = {rule: round(float(np.mean([r[rule] for r in rows])), 3) for rule in RULES}
    print("mean precision at k:", mean)
    write_results("label_rules", {"args": vars(args), "rows": rows, "mean_precision_at_k": mean})


if __name__ == "__main__":
    main()
