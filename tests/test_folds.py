"""K-fold cross-validation over the non-test images: stratified, group-aware, disjoint, covering, seeded."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from classbench.data.folds import assign_folds, fold_manifest, max_folds, pool, resolve_folds, resolve_repeats
from classbench.data.manifest import Manifest
from classbench.data.split import split
from classbench.errors import DataError
from tests.conftest import write_class_folders


def _grouped_csv(root: Path, counts: dict[str, int], group_size: int = 1) -> Path:
    """A CSV source ``path,label,group``: every ``group_size`` consecutive images of a class share a group."""
    write_class_folders(root / "img", counts)
    rows = []
    for label in sorted(counts):
        for k, path in enumerate(sorted((root / "img" / label).glob("*.png"))):
            rows.append({"path": path.relative_to(root).as_posix(), "label": label, "group": f"{label}-{k // group_size}"})
    target = root / "data.csv"
    with open(target, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["path", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    return target


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Manifest:
    root = tmp_path_factory.mktemp("folds")
    return split(_grouped_csv(root, {"a": 40, "b": 26, "c": 12}, group_size=2), val=0.2, test=0.1, seed=0).manifest


def test_folds_are_disjoint_cover_the_pool_and_leave_test_out(manifest: Manifest) -> None:
    fold_of = assign_folds(manifest, 5, seed=0)
    pooled = {str(s.path) for s in manifest.samples if s.split != "test"}
    assert set(fold_of) == pooled  # every non-test image in exactly one fold (a dict: one fold each)
    assert not {str(s.path) for s in manifest.subset("test")} & set(fold_of)
    assert set(fold_of.values()) == set(range(5))


def test_folds_are_stratified_and_keep_groups_whole(manifest: Manifest) -> None:
    fold_of = assign_folds(manifest, 5, seed=0)
    group_folds: dict[str, set[int]] = {}
    for s in pool(manifest):
        group_folds.setdefault(s.group, set()).add(fold_of[str(s.path)])
    assert all(len(folds) == 1 for folds in group_folds.values())  # a near-duplicate group never straddles folds
    for label in manifest.classes:
        per_fold = Counter(fold_of[str(s.path)] for s in pool(manifest) if s.label == label)
        assert len(per_fold) == 5, label  # every class in every fold
        assert max(per_fold.values()) - min(per_fold.values()) <= 2, (label, per_fold)  # one group of 2 at most


def test_folds_are_seeded(manifest: Manifest) -> None:
    assert assign_folds(manifest, 5, seed=0) == assign_folds(manifest, 5, seed=0)
    assert assign_folds(manifest, 5, seed=0) != assign_folds(manifest, 5, seed=1)


def test_fold_manifest_scores_the_fold_blind(manifest: Manifest) -> None:
    fold_of = assign_folds(manifest, 3, seed=0)
    for fold in range(3):
        m = fold_manifest(manifest, fold_of, fold, inner_val=0.2, seed=0)
        held = {str(s.path) for s in m.subset("test")}
        assert held == {p for p, f in fold_of.items() if f == fold}
        trained = {str(s.path) for s in m.subset("train") + m.subset("val")}
        assert trained == {p for p, f in fold_of.items() if f != fold}
        assert set(m.counts("val")) == set(manifest.classes) and all(m.counts("val").values())
        locked = {str(s.path) for s in manifest.subset("test")}
        assert not locked & {str(s.path) for s in m.samples}  # the compare's test split is not in a fold run


def test_too_many_folds_for_a_small_class_names_it_and_the_largest_k(tmp_path: Path) -> None:
    m = split(write_class_folders(tmp_path / "d", {"big": 30, "tiny": 4}), val=0.2, test=0.25, seed=0).manifest
    largest, label = max_folds(m)
    assert label == "tiny" and largest == len([s for s in pool(m) if s.label == "tiny"])
    with pytest.raises(DataError, match=rf"class 'tiny' has only {largest} image group.*use --folds {largest} or fewer"):
        resolve_folds(5, m)
    assert resolve_folds("auto", m) == largest  # auto takes what the rarest class can fill
    assert resolve_folds(1, m) == 1


def test_auto_folds_depend_on_the_pool_size(manifest: Manifest, monkeypatch) -> None:
    assert resolve_folds("auto", manifest) == 5
    monkeypatch.setattr("classbench.data.folds.AUTO_POOL_LIMIT", 10)
    assert resolve_folds("auto", manifest) == 1  # large data: one split
    with pytest.raises(DataError, match=">= 1"):
        resolve_folds(0, manifest)


def test_auto_repeats_twice_only_the_cross_validation_auto_chose(manifest: Manifest, monkeypatch) -> None:
    """--repeats auto: 2 x 5-fold on a small pool (--folds auto), one repeat for a chosen K or one split."""
    assert resolve_repeats("auto", "auto", resolve_folds("auto", manifest)) == 2
    assert resolve_repeats("auto", 5, 5) == 1 and resolve_repeats(3, 5, 5) == 3
    monkeypatch.setattr("classbench.data.folds.AUTO_POOL_LIMIT", 10)
    assert resolve_repeats("auto", "auto", resolve_folds("auto", manifest)) == 1  # large data: one split


def test_each_fold_trains_with_its_own_seed_shared_by_every_architecture(manifest: Manifest, tmp_path: Path) -> None:
    from classbench.comparison.replicates import plan

    manifest.save(tmp_path / "split.csv")
    jobs = plan(tmp_path, tmp_path / "split.csv", ["resnet18", "mobilenetv2"], ["resnet18", "mobilenetv2"], folds=3,
                seeds=1, seed=7, inner_val=0.2)
    seeds = {(j.name, j.label): j.seed for j in jobs}
    assert [seeds[("resnet18", f"fold {k}/3")] for k in (1, 2, 3)] == [7, 8, 9]  # K draws of training randomness
    assert all(seeds[("mobilenetv2", f"fold {k}/3")] == seeds[("resnet18", f"fold {k}/3")] for k in (1, 2, 3))  # paired
    assert (tmp_path / "folds" / "fold-3.csv").is_file()


def test_repeated_folds_deal_fresh_folds_with_fresh_seeds(manifest: Manifest, tmp_path: Path) -> None:
    from classbench.comparison.replicates import plan

    manifest.save(tmp_path / "split.csv")
    names = ["resnet18", "mobilenetv2"]
    jobs = plan(tmp_path, tmp_path / "split.csv", names, names, folds=3, seeds=1, seed=7, inner_val=0.2, repeats=2)
    assert len(jobs) == 2 * 3 * 2 and {j.replicate for j in jobs} == {0, 1}
    first = [j for j in jobs if j.name == "resnet18"]
    assert [j.seed for j in first] == [7, 8, 9, 10, 11, 12]  # every fold run its own draw
    assert first[3].label == "fold 1/3, repeat 2/2" and first[3].run_dir == tmp_path / "cv/resnet18/repeat-2/fold-1"
    assert first[0].run_dir == tmp_path / "cv/resnet18/fold-1"  # repeat 1 keeps the one-repeat layout
    again = assign_folds(manifest, 3, seed="7/repeat-2")
    with open(tmp_path / "folds" / "repeat-2" / "folds.csv") as fh:
        saved = {r["path"]: int(r["fold"]) - 1 for r in csv.DictReader(fh)}
    assert saved == again != assign_folds(manifest, 3, seed=7)  # the second repeat deals other folds
    dealt = {0: assign_folds(manifest, 3, seed=7), 1: again}
    for job in jobs:  # each run is scored blind on its own repeat's fold
        k = int(job.run_dir.name.removeprefix("fold-")) - 1
        held = {str(s.path) for s in Manifest.load(job.data).subset("test")}
        assert held == {p for p, f in dealt[job.replicate].items() if f == k}


def test_a_compare_folder_whose_folds_shared_one_seed_is_not_resumed(tmp_path: Path) -> None:
    from classbench.comparison.folder import FOLD_SEEDS, open_folder
    from classbench.errors import RunError
    from classbench.runs import atomic_write_json

    args = {"data": "d", "models": ["m"], "epochs": 1, "img_size": 32, "seed": 0, "preset": None, "val": 0.2,
            "test": 0.1, "folds": "auto", "seeds": 1, "refit": True, "train_options": {}}
    atomic_write_json(tmp_path / "compare.json", {"args": args})  # made before fold seeds (and repeats) existed
    args["repeats"] = 1
    with pytest.raises(RunError, match="same seed; pass --overwrite"):
        open_folder(tmp_path, {**args, "fold_seeds": FOLD_SEEDS}, overwrite=False)
    atomic_write_json(tmp_path / "compare.json", {"args": {**args, "fold_seeds": FOLD_SEEDS}})
    open_folder(tmp_path, {**args, "fold_seeds": FOLD_SEEDS}, overwrite=False)  # the same compare: resumes
