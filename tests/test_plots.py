"""classbench.report.plots: valid PNGs, literal user text, atomic writes, edge cases."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classbench import calibration as C
from classbench import metrics as M
from classbench.report import plots as P

WEIRD = ["$x^2$ <b>", r"back\slash\n", r"$\alpha\nocommand{$", "a" * 60, "_under"]


def shown(text) -> str:
    """The string matplotlib actually draws for a Text object (after its mathtext preprocessing)."""
    s, math_mode = text._preprocess_math(text.get_text())
    assert math_mode is False
    return s


def check_png(path: Path, min_w: int = 300, min_h: int = 200) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width >= min_w and im.height >= min_h, im.size
        size = im.size
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # atomic: no leftovers
    return size


def curve_rows(n: int = 8) -> list[dict]:
    return [{"epoch": e, "train_loss": 2 / e, "val_loss": str(2.2 / e), "train_acc": 1 - 0.5 / e,
             "val_acc": 0.9 - 0.5 / e, "val_macro_f1": "" if e == 3 else 0.8 - 0.5 / e} for e in range(1, n + 1)]


def test_literal_round_trip():
    for name in [*WEIRD, "$", "a\\$b$c", "\\", "50$ and 60$"]:
        fig = P._build_training_time([name], [1.0])
        (label,) = fig.axes[0].get_yticklabels()
        assert shown(label) == P._short(name, 32)
    assert P._short("x" * 30, 10) == "x" * 9 + "\u2026"


def test_plot_curves(tmp_path):
    rows = curve_rows()
    fig = P._build_curves(rows, title="$model$", best_epoch=5)
    ax_acc, ax_loss = fig.axes
    labels = [line.get_label() for line in ax_acc.get_lines()]
    assert labels == ["train accuracy", "val accuracy", "val macro-F1", "best epoch (5)"]  # no balanced-acc column
    f1 = ax_acc.get_lines()[2]
    assert list(f1.get_xdata()) == [1, 2, 4, 5, 6, 7, 8]  # empty cell skipped
    assert [line.get_label() for line in ax_loss.get_lines()] == ["train loss", "val loss", "best epoch (5)"]
    assert shown(fig._suptitle) == "$model$"
    check_png(P.plot_curves(rows, tmp_path / "curves.png", best_epoch=5), 600, 300)
    empty = P._build_curves([{"epoch": 1}])
    assert all(any(t.get_text() == "no data" for t in ax.texts) for ax in empty.axes)
    check_png(P.plot_curves([], tmp_path / "empty.png"))


def test_plot_curves_grid(tmp_path):
    runs = {WEIRD[0]: curve_rows(), "resnet18": curve_rows(3), WEIRD[1]: curve_rows(12)}
    fig = P._build_curves_grid(runs, best_epochs={"resnet18": 2})
    assert len(fig.axes) == 6
    assert [shown(sf._suptitle) for sf in fig.subfigs[:3]] == [WEIRD[0], "resnet18", WEIRD[1]]
    check_png(P.plot_curves_grid(runs, tmp_path / "grid.png"), 800, 400)
    check_png(P.plot_curves_grid({}, tmp_path / "none.png"), 100, 100)


def test_plot_confusion_literal_ticks_and_sizes(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 200)
    cm = M.confusion_matrix(y, np.where(rng.random(200) < 0.7, y, 0), 5)
    fig = P._build_confusion(cm, WEIRD)
    ax_counts, ax_norm = fig.axes[:2]  # then the two colourbars
    expected = [P._short(n) for n in WEIRD]
    assert [shown(t) for t in ax_counts.get_xticklabels()] == expected
    assert [shown(t) for t in ax_norm.get_yticklabels()] == expected
    assert expected[0] == "$x^2$ <b>" and expected[3].endswith("\u2026") and len(expected[3]) == P.TICK_CHARS
    assert sorted(t.get_text() for t in ax_counts.texts) == sorted(str(int(v)) for v in cm.ravel())
    check_png(P.plot_confusion(cm, WEIRD, tmp_path / "cm5.png", title="$a$"), 600, 300)
    one = check_png(P.plot_confusion([[7]], ["only"], tmp_path / "cm1.png"), 300, 200)
    y30 = rng.integers(0, 30, 1000)
    cm30 = M.confusion_matrix(y30, y30, 30)
    cm30[3] = 0  # a class without test images: a blank recall row, not a crash
    assert not P._build_confusion(cm30, [f"c{i}" for i in range(30)]).axes[0].texts  # no annotations
    big = check_png(P.plot_confusion(cm30, [f"class {i}" for i in range(30)], tmp_path / "cm30.png"), 1000, 600)
    assert big[0] > one[0]
    with pytest.raises(ValueError, match="shape"):
        P.plot_confusion([[1, 2]], ["a"], tmp_path / "bad.png")


def test_plot_class_probabilities_bars_and_heatmap(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), 100)
    m = M.class_probability_matrix(probs, rng.choice([0, 1, 2, 4], 100), 5)  # class 3 absent: NaN row
    fig = P._build_class_probabilities(m, WEIRD)
    ax = fig.axes[0]
    assert not ax.images and len(ax.patches) == 25
    assert any(t.get_text() == "no samples" for t in ax.texts)
    assert [shown(t) for t in fig.legends[0].get_texts()] == [P._short(n) for n in WEIRD]  # incl. "_under"
    check_png(P.plot_class_probabilities(m, WEIRD, tmp_path / "cp5.png"), 600, 300)
    m20 = M.class_probability_matrix(rng.dirichlet(np.ones(20), 300), rng.integers(0, 20, 300), 20)
    assert P._build_class_probabilities(m20, [str(i) for i in range(20)]).axes[0].images  # heatmap
    check_png(P.plot_class_probabilities(m20, [str(i) for i in range(20)], tmp_path / "cp20.png"), 600, 600)


def test_plot_reliability(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3) * 0.3, 500)
    labels = rng.integers(0, 3, 500)
    bins, ece = C.reliability_bins(probs, labels), C.expected_calibration_error(probs, labels)
    fig = P._build_reliability(bins, ece, title="$vit$")
    assert f"ECE = {ece:.3f}" in fig.axes[0].get_title() and shown(fig.axes[0].title).startswith("$vit$")
    check_png(P.plot_reliability(bins, ece, tmp_path / "rel.png"), 400, 500)
    check_png(P.plot_reliability(C.reliability_bins(np.zeros((0, 3)), []), 0.0, tmp_path / "empty.png"))


def test_plot_training_time_and_score_vs_time(tmp_path):
    names, secs = ["resnet18", "mobilenet", WEIRD[2], "failed"], [45, 300, 9000, None]
    fig = P._build_training_time(names, secs)
    assert [t.get_text().strip() for t in fig.axes[0].texts] == ["45 s", "5.0 min", "2.5 h", "n/a"]
    assert fig.axes[0].get_xlabel() == "training time (h)"  # the axis unit follows the longest run
    check_png(P.plot_training_time(names, secs, tmp_path / "time.png"), 500, 200)
    fig = P._build_score_vs_time(names, [0.8, 0.7, 0.9, None], secs)
    assert [shown(t) for t in fig.axes[0].texts] == ["resnet18", "mobilenet", P._short(WEIRD[2], 32)]
    check_png(P.plot_score_vs_time(names, [0.8, 0.7, 0.9, None], secs, tmp_path / "svt.png",
                                   score_label="test $F_1$"), 500, 300)
    check_png(P.plot_score_vs_time([], [], [], tmp_path / "none.png"))


def test_plot_class_counts(tmp_path):
    counts = {"cat": 100, WEIRD[0]: 10, "dog": 50}
    splits = {"val": {"cat": 20, WEIRD[0]: 2, "dog": 10}, "train": {"cat": 80, WEIRD[0]: 8, "dog": 40}}
    fig = P._build_class_counts(counts, splits)
    ax = fig.axes[0]
    assert "imbalance 10.0:1" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val"]  # train first
    assert len(ax.patches) == 6
    check_png(P.plot_class_counts(counts, tmp_path / "counts.png", split_counts=splits), 500, 300)
    many = {f"class {i}": i for i in range(60)}
    assert "1 empty" in P._build_class_counts(many).axes[0].get_title()
    check_png(P.plot_class_counts(many, tmp_path / "many.png"), 1000, 300)


def _exif_rotated_jpeg(path: Path) -> Path:
    img = Image.new("RGB", (60, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    img.save(path, exif=exif.tobytes())
    return path


def test_contact_sheet(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for i in range(46):
        f = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (20 + 7 * i, 40, 3), dtype=np.uint8)).save(f)
        items.append((f, WEIRD[i % 5], WEIRD[(i + 1) % 5], 0.9))
    items.append((_exif_rotated_jpeg(tmp_path / "rot.jpg"), "cat", "dog", 0.7))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    items.append((tmp_path / "bad.jpg", "cat", "dog", 0.51))
    start = time.perf_counter()
    out = P.contact_sheet(items, tmp_path / "out" / "sheet.png", thumb=96, cols=6)
    assert time.perf_counter() - start < 3
    w, h = check_png(out, 6 * 96, 8 * 96)
    thumb = P._thumbnail(tmp_path / "rot.jpg", 96)
    assert thumb.height == 96 and thumb.width == 32  # EXIF orientation applied
    assert P._thumbnail(tmp_path / "bad.jpg", 96) is None
    with Image.open(out) as sheet:  # last tile (row 8, col 6) holds the grey placeholder
        tile_w, tile_h = w // 6, h // 8
        assert sheet.getpixel((5 * tile_w + tile_w // 2, 7 * tile_h + 10)) == (170, 170, 170)
    check_png(P.contact_sheet([], tmp_path / "empty.png"), 50, 50)


def test_contact_sheet_heatmap_row(tmp_path):
    from classbench.report.sheets import heat_overlay

    items = []
    for i in range(8):
        f = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 40), (128, 128, 128)).save(f)
        items.append((f, "cat", "dog", 0.9))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    items[1] = (tmp_path / "bad.png", "cat", "dog", 0.8)
    ramp = np.tile(np.linspace(0, 1, 12, dtype=np.float32), (12, 1))  # 0 on the left, 1 on the right
    plain = P.contact_sheet(items, tmp_path / "plain.png", thumb=96, cols=6)
    first_row = P.contact_sheet(items, tmp_path / "heat.png", thumb=96, cols=6, heatmaps=[ramp, ramp, None, ramp])
    both_rows = P.contact_sheet(items, tmp_path / "heat2.png", thumb=96, cols=6, heatmaps=[ramp] * 8)
    with Image.open(plain) as a, Image.open(first_row) as b, Image.open(both_rows) as c:
        assert a.width == b.width == c.width
        assert b.height - a.height == 96 + 5 and c.height - a.height == 2 * (96 + 5)  # one heatmap row per image row
        tile_w = b.width // 6
        y = 5 + 96 + 5 + 48  # the middle of the first tile's heatmap
        left, right = b.getpixel((tile_w // 2 - 40, y)), b.getpixel((tile_w // 2 + 40, y))
        assert left[2] > left[0] and right[0] > right[2]  # jet: blue where the map is 0, red where it is 1
        assert b.getpixel((2 * tile_w + tile_w // 2, y)) == (255, 255, 255)  # no map for tile 3: blank
        assert b.getpixel((tile_w + tile_w // 2, y)) == (255, 255, 255)  # unreadable image: no overlay
        assert b.getpixel((tile_w + tile_w // 2, 5 + 10)) == (170, 170, 170)  # ...but its grey placeholder
    grey = Image.new("RGB", (30, 20), (100, 100, 100))
    over = heat_overlay(grey, np.full((5, 5), np.nan, dtype=np.float32))  # NaN is read as 0
    assert over.size == (30, 20) and over.getpixel((0, 0))[2] > over.getpixel((0, 0))[0]


def test_no_pyplot_import():
    code = "import sys, classbench.report.plots; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
