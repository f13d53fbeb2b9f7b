"""demo(): real scikit-learn digits written as a class-folder dataset, imbalanced on request."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from PIL import Image

import classbench.datasets
from classbench.data.check import check
from classbench.data.demo import MARKER, demo, demo_counts
from classbench.errors import ClassbenchError


def _tree(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.png")}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return demo(tmp_path_factory.mktemp("demo") / "digits", imbalance=10.0, seed=0, size=16)


def test_ten_classes_geometric_imbalance(demo_dir):
    report = check(demo_dir)
    assert report.usable and report.classes == [f"digit_{k}" for k in range(10)]
    counts = [report.counts[f"digit_{k}"] for k in range(10)]
    assert counts == sorted(counts, reverse=True)
    assert 9.0 <= counts[0] / counts[-1] <= 11.0
    ratios = [a / b for a, b in itertools.pairwise(counts)]
    assert max(ratios) - min(ratios) < 0.15  # geometric: a constant step
    assert not report.bad_files and not report.skipped and not report.label_conflicts
    with Image.open(next(demo_dir.rglob("*.png"))) as img:
        assert img.size == (16, 16) and img.mode == "RGB"


def test_deterministic_per_seed(demo_dir, tmp_path):
    again = demo(tmp_path / "again", imbalance=10.0, seed=0, size=16)
    other = demo(tmp_path / "other", imbalance=10.0, seed=1, size=16)
    assert _tree(again) == _tree(demo_dir)
    assert set(_tree(other)) != set(_tree(demo_dir))
    assert len(_tree(other)) == len(_tree(demo_dir))


def test_imbalance_one_keeps_everything():
    available = dict.fromkeys(range(10), 180)
    assert demo_counts(available, 1.0) == available
    counts = demo_counts({k: 175 + k for k in range(10)}, 4.0)
    assert counts[0] == 175 and counts[9] == round(175 / 4)


def test_full_demo_and_alias(tmp_path):
    root = classbench.datasets.demo(tmp_path / "all", imbalance=1, size=8)
    assert len(list(root.rglob("*.png"))) == 1797 and (root / MARKER).is_file()


def test_refuses_foreign_folder_but_rewrites_demo(demo_dir, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(ClassbenchError, match="not empty and is not a classbench demo folder"):
        demo(foreign)
    assert (foreign / "thesis.docx").read_text() == "precious"
    target = demo(tmp_path / "d", imbalance=2.0, size=8)
    n2 = len(list(target.rglob("*.png")))
    demo(target, imbalance=8.0, size=8)
    assert len(list(target.rglob("*.png"))) < n2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert demo(empty, size=8) == empty


@pytest.mark.parametrize("kw", [{"imbalance": 0.5}, {"size": 4}])
def test_bad_arguments(tmp_path, kw):
    with pytest.raises(ClassbenchError):
        demo(tmp_path / "x", **kw)
