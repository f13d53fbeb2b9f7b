"""The bake-off end to end with two tiny models: leaderboard, figures, report, resume, preset, demo."""

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
from classbench.training.child import child_command
from tests.synth import make_class_folders, wait_for_file

TINY = ["test_efficientnet", "resnet18"]


def _leaderboard(folder: Path) -> list[dict[str, str]]:
    with open(folder / "leaderboard.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("cmp") / "data", {"a": 30, "b": 24, "c": 8})


@pytest.mark.slow
def test_compare_two_models_end_to_end(data, tmp_path) -> None:
    board = classbench.compare(data, models=TINY, out=tmp_path / "cmp", epochs=2, img_size=32, progress=False)
    rows = _leaderboard(board.path)
    assert [r["model"] for r in rows] == [r["model"] for r in board.rows] and len(rows) == 2
    assert list(rows[0]) == LEADERBOARD_COLUMNS
    scores = [float(r["test_macro_f1"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    for row in rows:
        for key in ("params", "train_seconds", "train_images_per_s", "infer_ms_batch1", "infer_images_per_s_batch32",
                    "val_macro_f1", "test_acc", "test_balanced_acc", "worst_class_recall", "ece"):
            assert row[key] not in ("", None), key
    # one split, made once, reused by every model (same hash recorded in every run's config)
    from classbench.data.manifest import Manifest

    shared = Manifest.load(board.path / "split.csv").sha256()
    for name in TINY:
        run = board.path / name
        assert yaml.safe_load((run / "config.yaml").read_text())["split"]["sha256"] == shared
        assert json.loads((run / "eval.json").read_text())["split"] == "test"
    for figure in ("curves_grid.png", "training_time.png", "score_vs_time.png", "class_counts.png"):
        assert (board.path / figure).stat().st_size > 1000, figure
    html = (board.path / "report.html").read_text()
    assert all(name in html for name in TINY)
    md = (board.path / "leaderboard.md").read_text().splitlines()
    assert md[0].startswith("| model |") and len(md) == 2 + len(TINY)
    assert [line.split("|")[1].strip() for line in md[2:]] == [r["model"] for r in rows]
    assert board.best.predict(next(data.glob("a/*.png")))[0][0] in {"a", "b", "c"}


@pytest.mark.slow
def test_interrupted_compare_resumes_and_keeps_finished_models(tmp_path) -> None:
    data = make_class_folders(tmp_path / "data", {"a": 120, "b": 120})
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "classbench.cli", "compare", str(data), "--models", "test_efficientnet,resnet18",
           "--epochs", "4", "--img-size", "32", "--batch-size", "8", "--checkpoint-every", "0",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_file(out / "resnet18" / "last.ckpt", proc, 400, poll=0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "compare finished before it could be interrupted"
    with open(out / "resnet18" / "metrics.csv") as fh:
        assert 1 <= len(list(csv.DictReader(fh))) < 4  # killed mid-run: last.ckpt exists before training ends
    first = out / "test_efficientnet" / "model.safetensors"
    kept = first.stat().st_mtime_ns
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already trained" in done.stderr
    assert first.stat().st_mtime_ns == kept
    with open(out / "resnet18" / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]
    assert len(_leaderboard(out)) == 2


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
    classbench.compare(data, models=["test_efficientnet"], out=out, epochs=1, img_size=32, batch_size=8, progress=False)
    with pytest.raises(RunError, match="batch_size"):
        classbench.compare(data, models=["test_efficientnet"], out=out, epochs=1, img_size=32, batch_size=4,
                           progress=False)
    # the same conditions spelled otherwise, and another checkpoint interval, are the same compare
    classbench.compare(data, models=["test_efficientnet"], out=out, epochs=1, img_size=32, batch_size=8,
                       augment="light", checkpoint_every=0, progress=False)


def test_parallel_child_process_trains_with_every_shared_option(data, tmp_path) -> None:
    """The process a parallel compare starts per GPU gets every option, also those without a CLI flag."""
    options = {"epochs": 1, "img_size": 32, "seed": 3, "progress": False, "batch_size": 8, "grad_clip": 1.0,
               "label_smoothing": 0.1, "checkpoint_every": 0.0, "monitor": "val_balanced_acc", "augment": "none"}
    run = tmp_path / "child"
    done = subprocess.run(child_command(data, "test_efficientnet", run, options, accelerator="cpu"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    args = yaml.safe_load((run / "config.yaml").read_text())["args"]
    assert {k: args[k] for k in options if k != "progress"} == {k: v for k, v in options.items() if k != "progress"}
    assert args["accelerator"] == "cpu" and args["devices"] == 1 and (run / "summary.json").is_file()
