"""split(): stratified, seeded, group-aware; manifests round-trip; materialize links files."""

from __future__ import annotations

import os
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from classbench.data.check import check
from classbench.data.manifest import Manifest, Sample
from classbench.data.split import SplitResult, _assign, carve_missing_validation, render_split, split
from classbench.errors import DataError
from tests.conftest import write_image
from tests.test_check import smooth_image


def _by_split(result) -> dict[str, dict[str, int]]:
    return result.counts


def test_stratified_proportions(make_dataset):
    root = make_dataset({"a": 40, "b": 20, "c": 10})
    result = split(root, val=0.2, test=0.1)
    counts = _by_split(result)
    assert counts["val"] == {"a": 8, "b": 4, "c": 2}
    assert counts["test"] == {"a": 4, "b": 2, "c": 1}
    assert counts["train"] == {"a": 28, "b": 14, "c": 7}
    assert not result.given and len(result.manifest) == 70
    assert all(s.group for s in result.manifest.samples)


def test_deterministic_for_a_seed(make_dataset):
    root = make_dataset({"a": 12, "b": 12})
    report = check(root)
    first = split(root, seed=3, report=report).manifest
    again = split(root, seed=3).manifest
    other = split(root, seed=4, report=report).manifest
    assert first.samples == again.samples and first.sha256() == again.sha256()
    assert [s.split for s in first.samples] != [s.split for s in other.samples]
    assert first.counts("val") == other.counts("val")


def test_near_duplicate_groups_stay_in_one_split(tmp_path):
    root = tmp_path / "data"
    for k in range(12):
        write_image(root / "b" / f"b{k}.png", seed=500 + k)
    (root / "a").mkdir()
    for k in range(6):
        smooth_image(10 + k).save(root / "a" / f"a{k}.png")
    for g in range(3):  # three groups of near-duplicates in class a: png copies at two sizes + a jpeg
        smooth_image(g, 40).save(root / "a" / f"g{g}_40.png")
        smooth_image(g, 56).save(root / "a" / f"g{g}_56.png")
        smooth_image(g, 64).save(root / "a" / f"g{g}.jpg", quality=85)
    report = check(root)
    assert len(report.near_duplicates) == 3
    for seed in range(6):
        result = split(root, val=0.3, test=0.2, seed=seed, report=report)
        split_of = {str(s.path): s.split for s in result.manifest.samples}
        for group in report.near_duplicates:
            assert len({split_of[p] for p in group}) == 1, (seed, group)
        groups = defaultdict(set)
        for s in result.manifest.samples:
            groups[s.group].add(s.split)
        assert all(len(v) == 1 for v in groups.values())
        assert result.counts["val"]["a"] >= 1 and result.counts["test"]["a"] >= 1


def test_small_classes(make_dataset):
    root = make_dataset({"big": 10, "three": 3, "two": 2, "one": 1})
    result = split(root, val=0.2, test=0.1)
    counts = _by_split(result)
    assert [counts[sp]["three"] for sp in ("train", "val", "test")] == [1, 1, 1]
    assert counts["train"]["two"] == 2 and counts["train"]["one"] == 1
    assert counts["val"]["two"] == counts["test"]["one"] == 0
    assert any("class 'two' has only 2 image(s); it will be kept in train only" in w for w in result.warnings)
    assert counts["val"]["big"] == 2 and counts["test"]["big"] == 1


def test_test_per_class_recipe(make_dataset):
    root = make_dataset({"a": 21, "b": 11, "c": 4})
    result = split(root, val=0.3, test_per_class=1)
    counts = _by_split(result)
    assert counts["test"] == {"a": 1, "b": 1, "c": 1}
    assert counts["val"] == {"a": 6, "b": 3, "c": 1}  # 30% of the rest, at least 1
    assert counts["train"] == {"a": 14, "b": 7, "c": 2}


def test_zero_val_or_test(make_dataset):
    root = make_dataset({"a": 10, "b": 5})
    counts = _by_split(split(root, val=0.2, test=0))
    assert sum(counts["test"].values()) == 0 and counts["val"] == {"a": 2, "b": 1}


@pytest.mark.parametrize("kw", [{"val": 0.6, "test": 0.5}, {"val": -0.1}, {"test_per_class": -1}])
def test_bad_fractions(make_dataset, kw):
    with pytest.raises(DataError):
        split(make_dataset({"a": 3, "b": 3}), **kw)


def test_unusable_data_raises(make_dataset):
    with pytest.raises(DataError, match="only one class"):
        split(make_dataset({"a": 5}))


def test_bad_files_excluded(make_dataset):
    root = make_dataset({"a": 5, "b": 5})
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nrubbish")
    result = split(root)
    assert len(result.manifest) == 10
    assert [b.path.rsplit("/", 1)[-1] for b in result.excluded] == ["broken.png"]
    assert any("bad file" in w for w in result.warnings)


def test_manifest_round_trip_and_outputs(make_dataset, tmp_path):
    root = make_dataset({"a": 6, "b": 5})
    result = split(root, out=tmp_path / "run")
    csv_path = tmp_path / "run" / "split.csv"
    assert result.csv_path == csv_path and (tmp_path / "run" / "split.classes.json").is_file()
    header, first = csv_path.read_text().splitlines()[:2]
    assert header == "path,label,split,group" and first.startswith("../data/a/")
    loaded = Manifest.load(csv_path)
    assert loaded.samples == result.manifest.samples and loaded.classes == ["a", "b"]
    assert loaded.sha256() == result.manifest.sha256()
    assert loaded.class_to_idx == {"a": 0, "b": 1}
    assert loaded.counts() == {"a": 6, "b": 5} and len(loaded.subset("valid")) == len(loaded.subset("val"))
    moved = Manifest([Sample(s.path, s.label, s.split, s.group) for s in loaded.samples], ["a", "b", "zebra"])
    moved.save(tmp_path / "elsewhere" / "deep" / "m.csv")
    again = Manifest.load(tmp_path / "elsewhere" / "deep" / "m.csv")
    assert again.classes == ["a", "b", "zebra"] and again.counts()["zebra"] == 0
    flipped = Manifest([Sample(s.path, s.label, "train", s.group) for s in loaded.samples])
    assert flipped.sha256() != loaded.sha256()


def test_presplit_and_csv_splits_used_as_given(tmp_path):
    for sp, n in (("train", 3), ("validation", 1), ("test", 1)):
        for cls in ("x", "y"):
            for k in range(n):
                write_image(tmp_path / "d" / sp / cls / f"{k}.png", seed=len(sp) * 100 + ord(cls) * 7 + k)
    result = split(tmp_path / "d", seed=123)
    assert result.given and _by_split(result)["val"] == {"x": 1, "y": 1}
    result.manifest.save(tmp_path / "given.csv")
    again = split(tmp_path / "given.csv")
    assert again.given and again.manifest.samples == result.manifest.samples


def test_csv_group_column_kept_together(tmp_path):
    rows = ["path,label,group"]
    for k in range(20):
        write_image(tmp_path / "i" / f"{k}.png", seed=k)
        rows.append(f"i/{k}.png,{'ab'[k % 2]},patient{k // 4}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    result = split(tmp_path / "m.csv", val=0.25, test=0.25)
    by_group = defaultdict(set)
    for s in result.manifest.samples:
        by_group[s.group].add(s.split)
    assert set(by_group) == {f"patient{p}" for p in range(5)}
    assert all(len(v) == 1 for v in by_group.values())


def test_materialize(make_dataset, tmp_path):
    root = make_dataset({"a": 5, "b": 4})
    write_image(root / "a" / "sub" / "a_000.png", seed=4242)  # same name as a top-level file of class a
    result = split(root, materialize=tmp_path / "mat")
    files = sorted(p.relative_to(tmp_path / "mat").as_posix() for p in (tmp_path / "mat").rglob("*.png"))
    assert len(files) == 10 and all(f.split("/")[0] in {"train", "val", "test"} for f in files)
    for s in result.manifest.samples:
        assert (tmp_path / "mat" / s.split / s.label).is_dir()
    linked = next((tmp_path / "mat").rglob("b_000.png"))
    assert os.path.samefile(linked, root / "b" / "b_000.png")
    with pytest.raises(DataError, match="not empty"):
        split(root, materialize=tmp_path / "mat")


def test_render_split(make_dataset):
    console = Console(record=True, width=120)
    render_split(split(make_dataset({"a": 10, "b": 3})), console)
    text = console.export_text()
    assert "train" in text and "val" in text and "test" in text and " 13 " in text


def test_shared_drone_maritime_split(shared_dataset):
    result = split(shared_dataset, val=0.2, test=0.1, seed=0)
    counts = result.counts
    for cls in ("dock", "lift", "jetski", "boat", "car"):
        assert counts["val"][cls] >= 1 and counts["test"][cls] >= 1
    assert sum(sum(c.values()) for c in counts.values()) == 656
    recipe = split(shared_dataset, val=0.3, test_per_class=1, report=result.report)
    assert recipe.counts["test"] == dict.fromkeys(["boat", "car", "dock", "jetski", "lift"], 1)


@settings(max_examples=60, deadline=None, database=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=2, max_size=5),
    val=st.sampled_from([0.0, 0.1, 0.2, 0.3]),
    test=st.sampled_from([0.0, 0.1, 0.25]),
    per_class=st.sampled_from([None, 0, 1, 2]),
    seed=st.integers(0, 3),
)
def test_assign_invariants(sizes, val, test, per_class, seed):
    samples = [Sample(f"/d/c{c}/{k}.png", f"c{c}") for c, n in enumerate(sizes) for k in range(n)]
    groups = {str(s.path): f"g-{s.path.parent.name}-{int(s.path.stem) // 3}" for s in samples}  # groups of 3
    out, _ = _assign(samples, groups, val, test, per_class, seed)
    assert [s.path for s in out] == [s.path for s in samples]
    split_of_group = defaultdict(set)
    for s in out:
        split_of_group[s.group].add(s.split)
    assert all(len(v) == 1 for v in split_of_group.values())
    for c, n in enumerate(sizes):
        mine = [s.split for s in out if s.label == f"c{c}"]
        assert mine.count("train") >= 1
        if n >= 9:  # >= 3 groups
            if val > 0:
                assert mine.count("val") >= 1
            if (per_class if per_class is not None else test) > 0:
                assert mine.count("test") >= 1


def test_a_split_without_validation_gets_one_and_says_so(tmp_path) -> None:
    samples = [Sample(tmp_path / f"{c}{i}.png", c, "test" if i < 2 else "train", group=f"{c}{i}")
               for c in "ab" for i in range(12)]
    result = SplitResult(Manifest(samples, ["a", "b"]), given=True, seed=0)
    message = carve_missing_validation(result, 0.2, 0, "given.csv")
    assert message and message.startswith("given.csv: the given split has no validation part")
    assert result.manifest.counts("val") == {"a": 2, "b": 2} and result.manifest.counts("test") == {"a": 2, "b": 2}
    assert carve_missing_validation(result, 0.2, 0, "given.csv") is None  # it has one now
    untouched = SplitResult(Manifest(samples, ["a", "b"]), given=True, seed=0)
    assert carve_missing_validation(untouched, 0.0, 0, "given.csv") is None and not untouched.manifest.subset("val")


def test_split_counts_all_splits_or_only_those_with_images() -> None:
    """The split's, the run summary's and the plot's counts keep all three splits; check's and the report's keep
    the ones with images, plus the images in no split."""
    samples = [Sample("/d/a/1.png", "a", "train"), Sample("/d/b/2.png", "b", "train"), Sample("/d/a/3.png", "a", "test"),
               Sample("/d/b/4.png", "b", None)]
    manifest = Manifest(samples, ["a", "b", "c"])
    assert manifest.split_counts() == {"train": {"a": 1, "b": 1, "c": 0}, "val": {"a": 0, "b": 0, "c": 0},
                                       "test": {"a": 1, "b": 0, "c": 0}}
    assert manifest.split_counts(present_only=True) == {"train": {"a": 1, "b": 1, "c": 0},
                                                        "test": {"a": 1, "b": 0, "c": 0},
                                                        "unsplit": {"a": 0, "b": 1, "c": 0}}
