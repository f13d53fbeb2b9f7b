"""check() on real generated folders and CSVs: counts, bad files, duplicates, imbalance, usability."""

from __future__ import annotations

import json
import shutil
import zlib

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from classbench.data.check import BALANCE_NOTE, check, connected_components, group_near_duplicates, popcount_swar, render_check
from classbench.data.sources import read_source
from classbench.errors import DataError
from classbench.runs import atomic_write_json
from tests.conftest import noise_array, write_image


def smooth_image(seed: int, size: int = 48) -> Image.Image:
    """A smooth random picture (8x8 noise upscaled): resized or re-encoded copies stay near-duplicates."""
    return Image.fromarray(noise_array(seed, (8, 8))).resize((size, size), Image.Resampling.BILINEAR)


def _seed(*parts: object) -> int:
    """A deterministic seed from names (``hash()`` of strings changes between runs)."""
    return zlib.crc32(repr(parts).encode())


def _rendered(report) -> str:
    console = Console(record=True, width=140)
    render_check(report, console)
    return console.export_text()


def test_counts_shares_sizes(make_dataset):
    root = make_dataset({"cat": 6, "dog": 4})
    write_image(root / "dog" / "wide.png", seed=999, size=(40, 10))
    report = check(root)
    assert report.usable and report.problem is None and report.layout == "folders"
    assert report.counts == {"cat": 6, "dog": 5} and report.total == 11
    assert report.stats["cat"].share == pytest.approx(6 / 11)
    dog = report.stats["dog"]
    assert (dog.min_width, dog.max_width, dog.min_height, dog.max_height) == (24, 40, 10, 24)
    assert report.imbalance == pytest.approx(1.2) and not any("imbalance" in w for w in report.warnings)
    assert report.scanned == 11 and report.scan_seconds > 0 and report.images_per_second > 0
    assert set(report.group_of) == {str(s.path) for s in report.samples}
    assert len(set(report.group_of.values())) == 11  # no near-duplicates: every file its own group
    text = _rendered(report)
    assert "cat" in text and "dog" in text and "54.5%" in text and "usable" in text


def test_bad_files_named_and_good_files_kept(make_dataset):
    root = make_dataset({"a": 4, "b": 4}, ext=".jpg")
    good = (root / "a" / "a_000.jpg").read_bytes()
    (root / "a" / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (root / "a" / "zero.jpg").write_bytes(b"")
    (root / "b" / "text.jpg").write_text("not an image")
    (root / "b" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    report = check(root)
    assert report.counts == {"a": 4, "b": 4} and report.usable
    reasons = {b.path.rsplit("/", 1)[-1]: b.reason for b in report.bad_files}
    assert set(reasons) == {"trunc.jpg", "zero.jpg", "text.jpg", "corrupt.png"}
    assert reasons["trunc.jpg"].startswith("truncated image file")
    assert reasons["zero.jpg"].startswith("zero-byte file")
    assert reasons["text.jpg"].startswith("not an image (cannot identify format)")
    assert all(r.endswith("re-export it or remove it") for r in reasons.values())
    assert report.stats["a"].bad == 2 and any("4 bad file(s)" in w for w in report.warnings)
    assert "trunc.jpg" in _rendered(report)


def test_skipped_hidden_and_nested(make_dataset, tmp_path):
    root = make_dataset({"a": 3, "b": 3})
    (root / "a" / "notes.txt").write_text("x")
    (root / "README.md").write_text("x")
    (root / "a" / ".DS_Store").write_bytes(b"x")
    (root / ".hidden").mkdir()
    write_image(root / ".hidden" / "x.png")
    write_image(root / "b" / "2023" / "deep" / "nested.PNG", seed=77)
    report = check(root)
    assert report.classes == ["a", "b"] and report.counts == {"a": 3, "b": 4}  # nested file counts for b
    skipped = {p.rsplit("/", 1)[-1]: r for p, r in report.skipped}
    assert set(skipped) == {"notes.txt", "README.md"}
    assert "not a supported image type (.txt)" in skipped["notes.txt"]
    assert "not inside a class folder" in skipped["README.md"]


def test_wrong_path_is_one_line_error(tmp_path):
    with pytest.raises(DataError) as info:
        check(tmp_path / "nope")
    message = str(info.value)
    assert "nope: no such folder or file;" in message and "\n" not in message


@pytest.mark.parametrize(
    "counts,problem",
    [({"a": 3, "empty": 0}, "class 'empty' has no usable images"), ({"only": 4}, "only one class ('only')"),
     ({}, "no classes found")],
)
def test_unusable_datasets(make_dataset, counts, problem):
    root = make_dataset(counts)
    root.mkdir(exist_ok=True)
    report = check(root)
    assert not report.usable and problem in report.problem and "\n" not in report.problem
    assert "not usable" in _rendered(report)


def test_class_with_only_bad_files_is_unusable(make_dataset):
    root = make_dataset({"a": 3, "b": 0})
    (root / "b" / "x.png").write_bytes(b"")
    report = check(root)
    assert report.problem.startswith("class 'b' has no usable images")


def test_small_class_and_imbalance_warnings(make_dataset):
    root = make_dataset({"big": 14, "small": 2, "mid": 4})
    report = check(root)
    assert report.usable and report.imbalance == 7.0
    assert any("class 'small' has only 2 image(s); it will be kept in train only" in w for w in report.warnings)
    imbalance = [w for w in report.warnings if w.startswith("imbalance")]
    assert imbalance and "7.0:1" in imbalance[0] and BALANCE_NOTE in imbalance[0]
    assert "--balance auto" in _rendered(report)


def test_exact_near_duplicates_and_label_conflicts(make_dataset):
    root = make_dataset({"a": 3, "b": 3})
    smooth_image(1).save(root / "a" / "orig.png")
    shutil.copy(root / "a" / "orig.png", root / "a" / "copy.png")
    smooth_image(1, 40).save(root / "a" / "resized.jpg", quality=90)
    smooth_image(2).save(root / "a" / "x.png")
    smooth_image(2, 56).save(root / "b" / "x_in_b.png")  # same picture, other class
    report = check(root)
    names = [[p.rsplit("/", 1)[-1] for p in g] for g in report.exact_duplicates]
    assert names == [["copy.png", "orig.png"]]
    near = sorted(sorted(p.rsplit("/", 1)[-1] for p in g) for g in report.near_duplicates)
    assert near == [["copy.png", "orig.png", "resized.jpg"], ["x.png", "x_in_b.png"]]
    assert len(report.label_conflicts) == 1 and report.label_conflicts[0]["labels"] == ["a", "b"]
    g = report.group_of
    assert g[str(root / "a/orig.png")] == g[str(root / "a/resized.jpg")] != g[str(root / "a/x.png")]
    assert any("label conflicts" in w for w in report.warnings)
    assert "1 label conflict(s)" in _rendered(report)


def test_connected_components_are_transitive_and_named_by_their_smallest_node():
    assert connected_components(6, [(4, 1), (1, 3), (5, 5)]).tolist() == [0, 1, 2, 1, 1, 5]
    assert connected_components(3, []).tolist() == [0, 1, 2] and connected_components(0, []).tolist() == []


def test_group_near_duplicates_tiles_and_threshold():
    top4 = 0xF << 60
    base = np.array([0, 0b111, 0b1111111, top4, top4 | 1, 0], dtype=np.uint64)
    assert group_near_duplicates(base, 3, tile=2) == [0, 0, 2, 3, 3, 0]
    assert group_near_duplicates(base, 0, tile=2) == [0, 1, 2, 3, 4, 0]
    rng = np.random.default_rng(0)
    many = rng.integers(0, 2**63, 3000, dtype=np.uint64)
    assert len(set(group_near_duplicates(many, 4))) == 3000
    assert group_near_duplicates(np.array([], dtype=np.uint64), 4) == []
    assert popcount_swar(many).tolist() == [int(h).bit_count() for h in many]


def test_presplit_folders(tmp_path):
    for split, n in (("train", 4), ("valid", 2), ("test", 1)):
        for cls in ("x", "y"):
            for k in range(n):
                write_image(tmp_path / "d" / split / cls / f"{k}.png", seed=_seed(split, cls, k))
    (tmp_path / "d" / "valid" / "y" / "1.png").unlink()
    report = check(tmp_path / "d")
    assert report.layout == "presplit" and report.counts == {"x": 7, "y": 6}
    assert report.split_counts == {"train": {"x": 4, "y": 4}, "val": {"x": 2, "y": 1}, "test": {"x": 1, "y": 1}}
    assert {s.split for s in report.samples} == {"train", "val", "test"}


def test_split_name_beside_classes_is_a_class(make_dataset):
    root = make_dataset({"train": 3, "car": 3})
    source = read_source(root)
    assert source.layout == "folders" and source.classes == ["car", "train"]
    assert any("look like split names" in w for w in source.warnings)


def test_csv_source(tmp_path):
    imgs = [write_image(tmp_path / "imgs" / f"{k}.png", seed=k) for k in range(6)]
    rows = ["path,label"] + [f"imgs/{p.name},{'ab'[k % 2]}" for k, p in enumerate(imgs)] + ["imgs/notes.txt,a"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    report = check(tmp_path / "labels.csv")
    assert report.layout == "csv" and report.counts == {"a": 3, "b": 3} and report.usable
    assert [p.rsplit("/", 1)[-1] for p, _ in report.skipped] == ["notes.txt"]
    (tmp_path / "crops.csv").write_text("file,class,extra\nimgs/0.png,a,1\nimgs/missing.png,b,2\nimgs/1.png,b,3\n")
    report = check(tmp_path / "crops.csv")
    assert report.counts == {"a": 1, "b": 1} and "file not found" in report.bad_files[0].reason


@pytest.mark.parametrize(
    "text,match",
    [("name,kind\nx.png,a\n", "header row with 'path' and 'label'"),
     ("path,label,split\n0.png,a,train\n1.png,b,\n", "1 rows have an empty split"),
     ("path,label,split\n0.png,a,holdout\n", "line 2: unknown split 'holdout'")],
)
def test_csv_errors(tmp_path, text, match):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=match):
        read_source(tmp_path / "bad.csv")


def test_report_json(make_dataset, tmp_path):
    root = make_dataset({"a": 3, "b": 3})
    (root / "a" / "zero.png").write_bytes(b"")
    out = atomic_write_json(tmp_path / "check.json", check(root).to_dict())
    data = json.loads(out.read_text())
    assert data["counts"] == {"a": 3, "b": 3} and data["usable"] is True
    assert data["bad_files"][0]["reason"].startswith("zero-byte") and "group_of" not in data


def test_shared_drone_maritime(shared_dataset):
    report = check(shared_dataset)
    assert report.usable
    assert report.counts == {"boat": 30, "car": 16, "dock": 277, "jetski": 79, "lift": 254}
    assert report.imbalance == pytest.approx(277 / 16, rel=0.01)
    assert any(w.startswith("imbalance 17.3:1") and BALANCE_NOTE in w for w in report.warnings)
    assert not report.bad_files and not report.label_conflicts
    assert {p.rsplit("/", 1)[-1] for p, _ in report.skipped} == {"SOURCE.txt", "crops.csv", "source_images.txt"}


def test_presplit_leak_warning(tmp_path):
    for split in ("train", "test"):
        for cls in ("x", "y"):
            for k in range(2):
                write_image(tmp_path / "d" / split / cls / f"{k}.png", seed=_seed(split, cls, k))
    smooth_image(3).save(tmp_path / "d" / "train" / "x" / "leak.png")
    smooth_image(3, 40).save(tmp_path / "d" / "test" / "x" / "leak_copy.png")
    report = check(tmp_path / "d")
    assert any("1 near-duplicate group(s) span the given splits" in w for w in report.warnings)
