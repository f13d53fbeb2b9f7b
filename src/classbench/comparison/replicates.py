"""The trainings a compare is made of: every (architecture, fold) of K-fold cross-validation, or every
(architecture, seed) on one split; each is an ordinary run folder, trained, then scored on images it
never trained on (its fold, or the validation split) with the per-image predictions kept.

Layout inside a compare folder ``OUT``:

* ``OUT/split.csv``: the one split (test locked away); ``OUT/folds.csv`` + ``OUT/folds/fold-K.csv``:
  the folds of its non-test images and each fold's training manifest (see ``classbench.data.folds``).
* ``OUT/cv/<model>/fold-K/``: fold K's run (its ``test`` part is the held-out fold, not the test split).
* ``--repeats R``: ``OUT/folds/repeat-R/`` (that repeat's ``folds.csv`` and fold manifests) and
  ``OUT/cv/<model>/repeat-R/fold-K/`` for repeats 2..R (repeat 1 is the layout above).
* ``OUT/cv/<model>/seed-S/``: ``--seeds``: the extra seeds' runs on the shared split.
* ``OUT/<model>/``: the model a user gets (after cross-validation, the selected architecture retrained on the
  split's train part with its checkpoint chosen on val; the base seed's run otherwise); only this one is ever
  evaluated on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classbench.console import info
from classbench.data.manifest import Manifest
from classbench.data.split import DEFAULT_VAL
from classbench.errors import RunError
from classbench.runs import read_yaml


@dataclass(frozen=True)
class Job:
    """One training of a compare and where its held-out predictions land."""

    model: str
    name: str
    label: str  # "fold 2/5", "seed 3", "" for a single run
    run_dir: Path
    data: Path  # the manifest it trains on
    seed: int
    heldout: str  # the split it is scored on: "test" (its fold) or "val"
    replicate: int = 0  # which replicate its predictions belong to: the repeat of the cross-validation, or the seed

    @property
    def predictions(self) -> Path:
        return self.run_dir / ("predictions.csv" if self.heldout == "test" else "predictions-val.csv")



def inner_val_fraction(val: float, test: float) -> float:
    """The share of a fold's training images carved out for checkpoint choice: the split's val share of
    the non-test images (val 0.2, test 0.1 -> 0.222)."""
    return min(0.5, val / (1 - test)) if val > 0 else DEFAULT_VAL


def repeat_folder(repeat: int) -> str:
    """Where repeat ``repeat`` (0-based) keeps its folds and runs: no sub-folder for the first (the one-repeat
    layout), ``repeat-<r+1>`` for the others; also the key its folds are dealt with."""
    return "" if repeat == 0 else f"repeat-{repeat + 1}"


def plan(out: Path, manifest_path: Path, models: list[str], names: list[str], folds: int, seeds: int, seed: int,
         inner_val: float, repeats: int = 1) -> list[Job]:
    """Every job of the compare, fold (or seed) outermost so each architecture's first replicate comes early.

    Fold k (0-based) of repeat r trains with seed ``seed + r * K + k``, the same for every architecture
    (paired): the K x R fold runs are then as many draws of the training randomness too (initialisation,
    order, augmentation), so the fold-to-fold spread and the verdict's paired fold test carry it. One seed for
    every fold would repeat one draw K times: on drone_maritime (seed 1) one unlucky draw made resnet50 lose
    every fold to densenet121. Repeat r >= 1 deals its own folds (seeded ``"<seed>/repeat-<r+1>"``)."""
    if folds > 1:
        jobs = []
        for r in range(repeats):
            paths = write_fold_manifests(out, manifest_path, folds, seed, inner_val, repeat=r)
            for k in range(folds):
                label = f"fold {k + 1}/{folds}" + (f", repeat {r + 1}/{repeats}" if repeats > 1 else "")
                for m, n in zip(models, names):
                    run_dir = out / "cv" / n / repeat_folder(r) / f"fold-{k + 1}"
                    jobs.append(Job(m, n, label, run_dir, paths[k], seed + r * folds + k, "test", r))
        return jobs
    jobs = []
    for r in range(seeds):
        for m, n in zip(models, names):
            run_dir = out / n if r == 0 else out / "cv" / n / f"seed-{seed + r}"
            jobs.append(Job(m, n, f"seed {seed + r}" if seeds > 1 else "", run_dir, manifest_path, seed + r, "val", r))
    return jobs


def write_fold_manifests(out: Path, manifest_path: Path, folds: int, seed: int, inner_val: float,
                         repeat: int = 0) -> list[Path]:
    """``folds.csv`` and one training manifest per fold for ``repeat`` (0-based; written once, a resumed
    compare reuses them): repeat 0 in ``OUT/folds/`` (with ``OUT/folds.csv``), repeat r in
    ``OUT/folds/repeat-<r+1>/``, its folds dealt with the seed ``"<seed>/repeat-<r+1>"`` (not ``seed + r``:
    on pre-split data every seed has the same pool, and seed s's second repeat would be seed s+1's first)."""
    from classbench.data.folds import assign_folds, fold_manifest, save_folds

    where = out / "folds" / repeat_folder(repeat)
    table = out / "folds.csv" if repeat == 0 else where / "folds.csv"
    paths = [where / f"fold-{k + 1}.csv" for k in range(folds)]
    if all(p.is_file() for p in paths) and table.is_file():
        return paths
    manifest = Manifest.load(manifest_path)
    deal = seed if repeat == 0 else f"{seed}/{repeat_folder(repeat)}"
    fold_of = assign_folds(manifest, folds, deal)
    for k, path in enumerate(paths):
        fold_manifest(manifest, fold_of, k, inner_val, deal).save(path)
    save_folds(fold_of, manifest, table)
    return paths


def run(job: Job, options: dict[str, Any], step: str) -> None:
    """Train (or resume, or keep) ``job``'s run, then score it on its held-out images."""
    from classbench.evaluation import evaluate
    from classbench.workflow import resume, train

    what = f"{step} {job.model}" + (f" {job.label}" if job.label else "")
    if (job.run_dir / "summary.json").is_file():
        info(f"{what}: already trained, kept.", markup=False)
    elif (job.run_dir / "last.ckpt").is_file():
        info(f"{what}: resuming from {job.run_dir / 'last.ckpt'}", markup=False)
        resume(job.run_dir, progress=options.get("progress", True))
    else:
        info(f"{what}: training into {job.run_dir}", markup=False)
        train(job.data, model=job.model, out=job.run_dir, overwrite=job.run_dir.exists(),
              **{**options, "seed": job.seed})
    if not job.predictions.is_file():
        evaluate(job.run_dir, split=job.heldout, progress=False, heatmaps=0)  # a fold's sheet nobody reads


def resolved_lr(run_dir: Path) -> float | None:
    """The learning rate a run trained with (after ``--lr auto``), from its config.yaml."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        return None
    lr = ((read_yaml(config) or {}).get("resolved") or {}).get("lr")
    return float(lr) if isinstance(lr, (int, float)) else None


@dataclass
class HeldOut:
    """The held-out predictions of all architectures, aligned on the same images."""

    paths: list[str]
    labels: np.ndarray  # class index per image
    classes: list[str]
    probs: dict[str, list[np.ndarray]]  # model name -> one [N, C] array per replicate
    fold_scores: dict[str, list[float]]
    dropped: int = 0  # images some run could not read, left out of the verdict


def collect(jobs: list[Job], classes: list[str]) -> HeldOut:
    """Read every job's predictions; the folds of one cross-validation (one repeat) are joined into one
    replicate, each seed on the one split is a replicate of its own."""
    from classbench.evaluation import read_predictions
    from classbench.metrics import classification_summary

    per_model: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    labels_of: dict[str, str] = {}
    scores: dict[str, list[float]] = {}
    for job in jobs:
        paths, labels, probs, file_classes = read_predictions(job.predictions)
        if list(file_classes) != list(classes):
            raise RunError(f"{job.predictions}: classes differ from the compare's split; re-run with --overwrite")
        y = np.array([classes.index(c) for c in labels], dtype=np.int64)
        scores.setdefault(job.name, []).append(
            classification_summary(y, probs.argmax(axis=1), None, classes)["macro_f1"])
        labels_of.update(zip(paths, labels))
        per_model.setdefault(job.name, {}).setdefault(job.replicate, {}).update(zip(paths, probs))
    common = sorted(set.intersection(*(set(r) for reps in per_model.values() for r in reps.values())))
    dropped = len(labels_of) - len(common)
    y_true = np.array([classes.index(labels_of[p]) for p in common], dtype=np.int64)
    probs = {name: [np.stack([r[p] for p in common]) if common else np.zeros((0, len(classes)))
                    for _, r in sorted(reps.items())] for name, reps in per_model.items()}
    return HeldOut(common, y_true, classes, probs, scores, dropped)
