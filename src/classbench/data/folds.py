"""K-fold cross-validation over the non-test part of a split: stratified, group-aware, seeded.

The locked test split never enters a fold. Every other image (train + val of the split) belongs to
exactly one fold; near-duplicate groups (``Sample.group``) stay whole in one fold. Fold ``k``'s run
trains on the other folds, picks its checkpoint on an inner validation part carved from them, and is
scored blind on fold ``k`` (stored as that run's ``test`` part), so every pool image gets one honest
out-of-fold prediction per architecture, and every architecture sees the same folds.

Written here rather than taken from scikit-learn's ``StratifiedGroupKFold`` because that splitter does
not promise every class in every fold (a 14-image class can miss a fold) and assigns a group by its
first label; this one follows ``split``'s rules (a group belongs to its majority class; per-class
shuffles from ``random.Random(f"{seed}/{class}")``, so which images of a class share a fold does not change
when other classes are added, though the fold numbers may)
and deals each class's groups, largest first, to the fold holding the fewest images of that class.
"""

from __future__ import annotations

import random
from dataclasses import replace

from classbench.data.manifest import Manifest, Sample
from classbench.data.split import carve_validation, groups_by_class
from classbench.errors import DataError

DEFAULT_FOLDS = 5
AUTO_POOL_LIMIT = 3000  # --folds auto: cross-validate when the non-test pool has at most this many images
AUTO_REPEATS = 2  # --repeats auto with --folds auto on such a pool: 2 x 5-fold (docs/benchmarks.md, the bake-off)


def pool(manifest: Manifest) -> list[Sample]:
    """The images folds are made of: every sample outside the test split, sorted by path."""
    return sorted((s for s in manifest.samples if s.split != "test"), key=lambda s: str(s.path))


def _class_groups(samples: list[Sample]) -> dict[str, list[list[Sample]]]:
    """Groups (near-duplicates kept together) per majority class, as ``split`` makes them."""
    return groups_by_class(samples, {str(s.path): s.group or str(s.path) for s in samples})


def max_folds(manifest: Manifest) -> tuple[int, str | None]:
    """The largest K that puts every class in every fold, and the class that limits it (None if none)."""
    by_class = _class_groups(pool(manifest))
    if not by_class:
        return 0, None
    label = min(sorted(by_class), key=lambda c: len(by_class[c]))
    return len(by_class[label]), label


def resolve_folds(folds: int | str, manifest: Manifest) -> int:
    """``folds`` as a number: ``"auto"`` is 5 folds (fewer when the rarest class cannot fill 5) for a
    non-test pool of at most ``AUTO_POOL_LIMIT`` images, else 1 (one split; bigger data varies less and
    each training costs more). A number K > 1 is checked: a class with fewer than K groups is refused."""
    n_pool = len(pool(manifest))
    largest, label = max_folds(manifest)
    if folds == "auto":
        return min(DEFAULT_FOLDS, largest) if n_pool <= AUTO_POOL_LIMIT and largest >= 2 else 1
    k = int(folds)
    if k < 1:
        raise DataError(f"--folds must be >= 1 or 'auto' (got {k})")
    if k > 1 and largest < k:
        fix = f"use --folds {largest} or fewer" if largest >= 2 else "use --folds 1 (one split) or add images"
        raise DataError(f"class '{label}' has only {largest} image group(s) outside the test split, so --folds {k} "
                        f"cannot put it in every fold; {fix}")
    return k


def resolve_repeats(repeats: int | str, folds: int | str, k: int) -> int:
    """``repeats`` as a number: ``"auto"`` is ``AUTO_REPEATS`` when ``--folds auto`` chose cross-validation
    (a small pool, where one 5-fold's verdict still moved with the seed), else 1; a number is kept."""
    if repeats == "auto":
        return AUTO_REPEATS if folds == "auto" and k > 1 else 1
    return int(repeats)


def assign_folds(manifest: Manifest, k: int, seed: int | str = 0) -> dict[str, int]:
    """``{path: fold}`` (0-based) for every pool image; stratified per class, groups whole, deterministic."""
    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds (got {k})")
    fold_of: dict[str, int] = {}
    totals = [0] * k
    for label, groups in sorted(_class_groups(pool(manifest)).items()):
        rng = random.Random(f"{seed}/{label}")
        rng.shuffle(groups)
        groups.sort(key=len, reverse=True)  # stable: equal sizes keep the shuffled order
        in_class = [0] * k
        for group in groups:
            target = min(range(k), key=lambda f: (in_class[f], totals[f], f))
            in_class[target] += len(group)
            totals[target] += len(group)
            fold_of.update({str(s.path): target for s in group})
    return fold_of


def fold_manifest(manifest: Manifest, fold_of: dict[str, int], fold: int, inner_val: float,
                  seed: int | str = 0) -> Manifest:
    """The manifest fold ``fold``'s run trains on: the fold itself as ``test`` (scored once, blind), the
    other folds as ``train`` with a stratified, group-aware ``inner_val`` fraction carved out as ``val``
    (checkpoint selection). The compare's locked test images are not in it at all."""
    samples = [replace(s, split="test" if fold_of[str(s.path)] == fold else "train") for s in pool(manifest)]
    return carve_validation(Manifest(samples, manifest.classes), inner_val, seed)


def save_folds(fold_of: dict[str, int], manifest: Manifest, path) -> None:
    """``folds.csv``: ``path,label,fold`` (1-based) for every pool image, in path order."""
    from classbench.runs import atomic_write_csv

    rows = [{"path": str(s.path), "label": s.label, "fold": fold_of[str(s.path)] + 1} for s in pool(manifest)]
    atomic_write_csv(path, rows, ["path", "label", "fold"])
