"""The bake-off end to end with tiny models: folds, verdict, never test, resume, seeds, preset, demo."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import classbench
from classbench.comparison import LEADERBOARD_COLUMNS
from classbench.errors import RunError
from tests.synth import make_class_folders, wait_for_file

TINY = ["test_efficientnet", "resnet18"]


def _leaderboard(folder: Path) -> list[dict[str, str]]:
    with open(folder / "leaderboard.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("cmp") / "data", {"a": 30, "b": 24, "c": 8})


def _split_parts(run: Path) -> dict[str, set[str]]:
    from classbench.data.manifest import Manifest

    m = Manifest.load(run / "split.csv")
    return {part: {str(s.path) for s in m.subset(part)} for part in ("train", "val", "test")}


@pytest.mark.slow
def test_cross_validated_compare_end_to_end(data, tmp_path) -> None:
    board = classbench.compare(data, models=TINY, out=tmp_path / "cmp", epochs=1, img_size=32, folds=2, progress=False)
    out = board.path
    rows = _leaderboard(out)
    assert [r["model"] for r in rows] == [r["model"] for r in board.rows] and len(rows) == 2
    assert list(rows[0]) == LEADERBOARD_COLUMNS
    assert [r["status"] for r in rows][0] == "best" and rows[1]["status"] in ("tied", "worse")
    scores = [float(r["heldout_macro_f1"]) for r in rows]
    assert scores == sorted(scores, reverse=True)  # ranked on held-out predictions
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["protocol"].startswith("2-fold cross-validation") and verdict["selected"] == rows[0]["model"]
    assert board.sentence == verdict["sentence"] and rows[1]["model"] in board.sentence
    # the folds: every architecture trains on the same ones; the locked test images are in none of them
    from classbench.data.manifest import Manifest

    locked = {str(s.path) for s in Manifest.load(out / "split.csv").subset("test")}
    with open(out / "folds.csv") as fh:
        folds = {r["path"]: int(r["fold"]) for r in csv.DictReader(fh)}
    assert not locked & set(folds) and len(folds) + len(locked) == 62
    for k in (1, 2):
        parts = [_split_parts(out / "cv" / name / f"fold-{k}") for name in TINY]
        assert parts[0] == parts[1]  # paired: same training images, same inner val, same held-out fold
        assert parts[0]["test"] == {p for p, f in folds.items() if f == k}
        assert not locked & set().union(*parts[0].values())
        for name in TINY:
            assert json.loads((out / "cv" / name / f"fold-{k}" / "eval.json").read_text())["n_images"] == len(parts[0]["test"])
    # only the selected architecture is refit and opened on the test split, once
    best, other = rows[0]["model"], rows[1]["model"]
    assert not (out / other).exists() and rows[1]["test_macro_f1"] == "" and rows[1]["run_dir"] == ""
    final = json.loads((out / best / "eval.json").read_text())
    assert final["split"] == "test" and final["n_images"] == len(locked) and rows[0]["test_macro_f1"] != ""
    assert _split_parts(out / best)["test"] == locked
    for figure in ("curves_grid.png", "training_time.png", "score_vs_time.png", "class_counts.png", "verdict.png"):
        assert (out / figure).stat().st_size > 1000, figure
    with open(out / "label_issues.csv") as fh:
        assert next(csv.reader(fh)) == ["rank", "path", "given", "suggested", "margin", "self_confidence", "source"]
    html = (out / "report.html").read_text()
    assert all(name in html for name in TINY) and "2-fold cross-validation" in html
    md = (out / "leaderboard.md").read_text().splitlines()
    assert md[0].startswith("**Verdict:**") and len(md) == 4 + len(TINY)
    assert board.best.predict(next(data.glob("a/*.png")))[0][0] in {"a", "b", "c"}
    assert str(board.best.path).startswith(str(out / best))


@pytest.mark.slow
def test_the_ranking_never_reads_the_test_split(data, tmp_path, capfd) -> None:
    """The same compare with the test labels scrambled gives the same verdict to the last digit."""
    from classbench.data.manifest import Manifest, Sample
    from classbench.data.split import split

    manifest = split(data, val=0.2, test=0.1, seed=0).manifest
    manifest.save(tmp_path / "honest.csv")
    classes = manifest.classes
    scrambled = [Sample(s.path, classes[(classes.index(s.label) + 1) % len(classes)], s.split, s.group)
                 if s.split == "test" else s for s in manifest.samples]
    Manifest(scrambled, classes).save(tmp_path / "scrambled.csv")
    boards = [classbench.compare(tmp_path / f"{name}.csv", models=TINY, out=tmp_path / name, epochs=1, img_size=32,
                                 folds=2, progress=False) for name in ("honest", "scrambled")]
    keys = ("model", "status", "heldout_macro_f1", "delta", "delta_low", "delta_high", "fold_mean", "fold_std")
    assert [[r[k] for k in keys] for r in boards[0].rows] == [[r[k] for k in keys] for r in boards[1].rows]
    assert boards[0].sentence == boards[1].sentence
    assert boards[0].rows[0]["test_acc"] != boards[1].rows[0]["test_acc"]  # the test split itself did change
    # a given (pre-split) source: its val joins train in the folds, its test stays locked, and the user is told
    assert "the given val/ images join train/ in the cross-validation pool" in capfd.readouterr().err


@pytest.mark.slow
def test_repeated_cross_validation_adds_fresh_folds_to_a_finished_compare(data, tmp_path) -> None:
    """--repeats 2 on a finished 2-fold compare keeps its runs and adds a second repeat with other folds; the
    verdict then pairs all four fold runs; --repeats 1 again gives back the first verdict exactly."""
    from classbench.evaluation import read_predictions

    def run(repeats: int):
        return classbench.compare(data, models=TINY, out=tmp_path / "rep", epochs=1, img_size=32, folds=2,
                                  repeats=repeats, refit=False, progress=False)

    once = run(1)
    out = once.path
    kept = {p: p.stat().st_mtime_ns for p in out.glob("cv/*/fold-*/model.safetensors")}
    twice = run(2)
    assert len(kept) == 4 and all(p.stat().st_mtime_ns == t for p, t in kept.items())  # repeat 1 is reused
    assert twice.protocol == "2 x 2-fold cross-validation, out-of-fold"
    assert json.loads((out / "compare.json").read_text())["args"]["repeats"] == 2
    with open(out / "folds.csv") as fh:
        pool = {r["path"] for r in csv.DictReader(fh)}
    for name in TINY:
        repeat_two = sorted((out / "cv" / name / "repeat-2").glob("fold-*"))
        assert [p.name for p in repeat_two] == ["fold-1", "fold-2"]
        # each repeat scores every pool image once: two out-of-fold predictions per image in all
        scored = [read_predictions(run / "predictions.csv")[0] for run in
                  [out / "cv" / name / "fold-1", out / "cv" / name / "fold-2", *repeat_two]]
        assert set(scored[0]) | set(scored[1]) == set(scored[2]) | set(scored[3]) == pool
        assert set(scored[0]) != set(scored[2])  # the second repeat dealt other folds
    assert all(r["replicates"] == 4 for r in twice.rows)  # 2 repeats x 2 folds
    second = json.loads((out / "verdict.json").read_text())["standings"][1]
    assert second["fold_delta_ci"] is not None and "over folds" in twice.sentence
    assert not any((out / name).exists() for name in TINY)  # --no-refit: the test split stays unopened
    assert run(1).sentence == once.sentence  # fewer repeats reuse the runs they need
    with pytest.raises(Exception, match="--repeats 2: repeats the cross-validation"):
        classbench.compare(data, models=TINY, out=tmp_path / "bad", folds=1, repeats=2, progress=False)
    for bad in (0, "twice"):
        with pytest.raises(Exception, match="--repeats must be a whole number >= 1 or 'auto'"):
            classbench.compare(data, models=TINY, out=tmp_path / "bad", repeats=bad, progress=False)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def test_worst_held_out_class_averages_the_recall_over_repeats() -> None:
    """Repeat 1 misses class 'c' entirely, repeat 2 finds it every time: c's recall is 0.5, not 0."""
    import numpy as np

    from classbench.comparison.core import _heldout_worst
    from classbench.comparison.replicates import HeldOut

    labels = np.array([0, 0, 1, 1, 2, 2])
    miss_c, all_right = np.eye(3)[[0, 0, 1, 1, 0, 1]], np.eye(3)[labels]
    held = HeldOut([str(i) for i in range(6)], labels, ["a", "b", "c"], {"m": [miss_c, all_right]}, {"m": []})
    assert _heldout_worst(held, "m") == ("c", 0.5)


@pytest.mark.slow
def test_seeds_compare_with_lr_auto_reuses_the_found_rate(data, tmp_path) -> None:
    board = classbench.compare(data, models=["test_efficientnet", "resnet10t"], out=tmp_path / "s", epochs=1,
                               img_size=32, seeds=2, lr="auto", progress=False)
    out = board.path
    assert board.protocol == "2 seeds, validation split (it chose the checkpoints)"
    for name in ("test_efficientnet", "resnet10t"):
        first = yaml.safe_load((out / name / "config.yaml").read_text())
        again = yaml.safe_load((out / "cv" / name / "seed-1" / "config.yaml").read_text())
        assert first["args"]["lr"] == "auto" and first["resolved"]["lr_search"]["source"].startswith("lr_find")
        assert again["args"]["lr"] == first["resolved"]["lr"] == again["resolved"]["lr"]  # found once per architecture
        assert again["args"]["seed"] == 1 and again["split"]["sha256"] == first["split"]["sha256"]
        assert (out / name / "predictions-val.csv").is_file()
    best = board.rows[0]["model"]
    evaluated = [name for name in ("test_efficientnet", "resnet10t") if (out / name / "eval.json").is_file()]
    assert evaluated == [best]  # the others were never opened on test
    assert {r["lr"] for r in board.rows} == {float(r) for r in (
        yaml.safe_load((out / n / "config.yaml").read_text())["resolved"]["lr"] for n in ("test_efficientnet", "resnet10t"))}


@pytest.mark.slow
def test_train_with_folds_cross_validates_one_architecture(data, tmp_path) -> None:
    from typer.testing import CliRunner

    from classbench.cli import app

    out = tmp_path / "cv"
    result = CliRunner().invoke(app, ["train", str(data), "--model", "test_efficientnet", "--folds", "2", "--epochs", "1",
                                      "--img-size", "32", "--out", str(out)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "Verdict (2-fold cross-validation" in result.output and "nothing to compare it with" in result.output
    assert (out / "cv" / "test_efficientnet" / "fold-2" / "predictions.csv").is_file()
    assert json.loads((out / "test_efficientnet" / "eval.json").read_text())["split"] == "test"  # the refit, tested once


def test_the_verdict_table_fits_80_columns_without_cutting_a_number() -> None:
    import io

    from rich.console import Console

    from classbench.comparison import Leaderboard, render_leaderboard

    def row(name: str, status: str, score: float, delta: float | None) -> dict:
        return {"model": name, "status": status, "heldout_macro_f1": score, "delta": delta,
                "delta_low": None if delta is None else delta - 0.051, "delta_high": None if delta is None else delta + 0.049,
                "fold_delta_low": None if delta is None else delta - 0.1, "fold_delta_high": None if delta is None else delta + 0.1,
                "fold_mean": score, "fold_std": 0.0512, "train_seconds": 1234.5, "infer_ms_batch1": 12.3,
                "params": 25_557_032, "test_macro_f1": 0.8123 if status == "best" else None, "test_balanced_acc": 0.8,
                "test_acc": 0.9, "run_dir": "runs/cmp/densenet121" if status == "best" else "",
                "test_macro_f1_low": 0.7, "test_macro_f1_high": 0.9}

    board = Leaderboard(Path("runs/cmp"), [row("densenet121", "best", 0.7421, None),
                                           row("resnet50", "tied", 0.7213, 0.0208),
                                           row("mobilenetv2_100_with_a_long_name", "worse", 0.5121, 0.2300)],
                        "densenet121 and resnet50 are tied; mobilenetv2 is worse", "5-fold cross-validation, out-of-fold")
    console = Console(width=80, record=True, file=io.StringIO())
    render_leaderboard(board, console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    table = [line for line in lines if line.lstrip().startswith(("densenet121", "resnet50", "mobilenetv2"))]
    assert len(table) == 3 and all("\u2026" not in line.split(None, 1)[1] for line in table)  # only a long name is cut
    assert "0.02 [-0.03,0.07]" in text and "0.23 [0.18,0.28]" in text and "0.74\u00b10.05" in text
    assert "[-0.08,0.12]" in text and "[0.13,0.33]" in text  # the paired interval over folds
    flat = " ".join(text.split())
    assert "Test (the final, unbiased estimate; opened once, for densenet121): macro-F1 0.812 [0.70, 0.90]" in flat
    wide = Console(width=120, record=True, file=io.StringIO())
    render_leaderboard(board, wide)
    wide_text = wide.export_text()
    assert "params" in wide_text and "25.6M" in wide_text


@pytest.mark.slow
def test_no_refit_leaves_test_unopened_and_a_later_refit_keeps_every_run(tmp_path) -> None:
    """A given train/test split without val (ImageAI's layout) gets one val part shared by every model and seed."""
    from classbench.data.manifest import Manifest, Sample

    root = make_class_folders(tmp_path / "data", {"a": 20, "b": 16})
    files = sorted(root.rglob("*.png"))
    given = [Sample(p, p.parent.name, "test" if i % 5 == 0 else "train") for i, p in enumerate(files)]
    Manifest(given, ["a", "b"]).save(tmp_path / "given.csv")
    out, models = tmp_path / "cmp", ["test_efficientnet", "resnet10t"]
    board = classbench.compare(tmp_path / "given.csv", models=models, out=out, epochs=1, img_size=32, seeds=2,
                               refit=False, progress=False)
    shared = Manifest.load(out / "split.csv")
    assert shared.subset("val") and {str(s.path) for s in shared.subset("test")} == {str(s.path) for s in given
                                                                                    if s.split == "test"}
    for run in [out / m for m in models] + [out / "cv" / m / "seed-1" for m in models]:
        assert yaml.safe_load((run / "config.yaml").read_text())["split"]["sha256"] == shared.sha256()
    assert not list(out.rglob("eval.json")) and all(r["test_macro_f1"] is None for r in board.rows)
    with pytest.raises(RunError, match="--no-refit"):
        board.best  # noqa: B018
    assert "the test split stays unopened" in (out / "report.html").read_text()
    kept = (out / models[0] / "model.safetensors").stat().st_mtime_ns
    again = classbench.compare(tmp_path / "given.csv", models=models, out=out, epochs=1, img_size=32, seeds=2,
                               progress=False)
    assert again.sentence == board.sentence and (out / again.rows[0]["model"] / "eval.json").is_file()
    assert (out / models[0] / "model.safetensors").stat().st_mtime_ns == kept


def test_folds_a_class_cannot_fill_is_one_line_naming_the_class(tmp_path) -> None:
    from typer.testing import CliRunner

    from classbench.cli import app

    small = make_class_folders(tmp_path / "small", {"a": 20, "rare": 5})
    result = CliRunner().invoke(app, ["compare", str(small), "--models", "test_efficientnet", "--folds", "5",
                                      "--img-size", "32", "--out", str(tmp_path / "c")], env={"COLUMNS": "200"})
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "class 'rare' has only 4 image group(s)" in result.output and "use --folds 4 or fewer" in result.output
    assert not list((tmp_path / "c").glob("cv"))  # nothing trained


@pytest.mark.slow
def test_interrupted_compare_resumes_and_keeps_finished_models(tmp_path) -> None:
    data = make_class_folders(tmp_path / "data", {"a": 120, "b": 120})
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "classbench.cli", "compare", str(data), "--models", "test_efficientnet,resnet18",
           "--epochs", "4", "--img-size", "32", "--batch-size", "8", "--checkpoint-every", "0", "--folds", "2",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    killed_run = out / "cv" / "resnet18" / "fold-1"
    wait_for_file(killed_run / "last.ckpt", proc, 400, poll=0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "compare finished before it could be interrupted"
    with open(killed_run / "metrics.csv") as fh:
        assert 1 <= len(list(csv.DictReader(fh))) < 4  # killed mid-run: last.ckpt exists before training ends
    first = out / "cv" / "test_efficientnet" / "fold-1" / "model.safetensors"
    kept = first.stat().st_mtime_ns
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already trained" in done.stderr
    assert first.stat().st_mtime_ns == kept
    with open(killed_run / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]
    assert len(_leaderboard(out)) == 2 and (out / "verdict.json").is_file()
    typed = "classbench compare " + str(data)  # the exact command is recorded, by the compare and by each run
    assert json.loads((out / "compare.json").read_text())["command"].startswith(typed)
    assert yaml.safe_load((killed_run / "config.yaml").read_text())["command"].startswith(typed)
    assert typed in (out / "report.html").read_text()


@pytest.mark.slow
def test_report_preset_adds_the_one_image_per_class_protocol(data, tmp_path) -> None:
    board = classbench.compare(data, models=["test_efficientnet"], preset="report", out=tmp_path / "p", epochs=1,
                               img_size=32, progress=False)
    onepc = json.loads((board.path / "test_efficientnet" / "eval-onepc.json").read_text())
    assert onepc["n_images"] == 3  # one per class
    locked = json.loads((board.path / "test_efficientnet" / "eval.json").read_text())
    assert locked["n_images"] > onepc["n_images"]
    html = (board.path / "report.html").read_text()
    assert "one image per class" in html.lower()


@pytest.mark.slow
def test_demo_builds_imbalanced_digits_and_reports_every_class(tmp_path) -> None:
    from classbench.comparison import demo

    board = demo(tmp_path / "demo", epochs=1, models=("test_efficientnet",), progress=False)
    check = json.loads((board.path / "check.json").read_text())
    assert any("imbalance" in w.lower() for w in check["warnings"])
    ev = json.loads((board.path / "test_efficientnet" / "eval.json").read_text())
    assert len(ev["per_class"]) == 10 and all("recall" in row for row in ev["per_class"])
    html = (board.path / "report.html").read_text()
    assert "digit_9" in html and "imbalance" in html.lower()


def test_rerun_with_other_training_options_is_refused(data, tmp_path) -> None:
    """Every model of a compare trains under the same options: a re-run that changes one is not a resume."""
    out = tmp_path / "cmp"
    classbench.compare(data, models=["test_efficientnet"], out=out, epochs=1, img_size=32, batch_size=8, folds=1,
                       progress=False)
    with pytest.raises(RunError, match="batch_size"):
        classbench.compare(data, models=["test_efficientnet"], out=out, epochs=1, img_size=32, batch_size=4, folds=1,
                           progress=False)
    with pytest.raises(RunError, match="folds"):
        classbench.compare(data, models=["test_efficientnet"], out=out, epochs=1, img_size=32, batch_size=8, folds=2,
                           progress=False)
    # the same conditions spelled otherwise, and another checkpoint interval, are the same compare
    classbench.compare(data, models=["test_efficientnet"], out=out, epochs=1, img_size=32, batch_size=8, folds=1,
                       augment="light", checkpoint_every=0, progress=False)


def test_overwrite_never_deletes_a_folder_classbench_did_not_write(data: Path, tmp_path: Path) -> None:
    """compare, the demo and train share one rule: --overwrite deletes only a folder with their own marker files."""
    from classbench.comparison.core import demo

    mine = tmp_path / "holiday-photos"
    (mine / "beach").mkdir(parents=True)
    (mine / "beach" / "1.jpg").write_bytes(b"not a classbench file")
    for call, what in ((lambda: classbench.compare(data, models=["test_efficientnet"], out=mine, overwrite=True,
                                                   epochs=1, img_size=32), "compare"),
                       (lambda: demo(out=mine, overwrite=True, epochs=1), "demo")):
        with pytest.raises(RunError, match=f"{mine}: not a classbench {what} folder, so --overwrite will not delete it"):
            call()
        assert (mine / "beach" / "1.jpg").read_bytes() == b"not a classbench file"
