"""Transfer learning from a local weights file, SIGKILL + resume, and 2-process DDP on CPU."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import classbench
from classbench.models import read_state_dict
from tests.synth import make_class_folders, wait_for_file
from tests.test_train import _recall

CLI = [sys.executable, "-m", "classbench.cli"]


def _epochs(run: Path) -> list[int]:
    with open(run / "metrics.csv") as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


@pytest.mark.slow
def test_fine_tuning_from_a_weights_file_loads_the_backbone_and_beats_scratch(tmp_path) -> None:
    source = make_class_folders(tmp_path / "source", {"s0": 50, "s1": 50, "s2": 50, "s3": 50}, seed=1)
    target = make_class_folders(tmp_path / "target", {"t0": 15, "t1": 15, "t2": 15, "t3": 15}, seed=2,
                                noise=110)
    opts = {"img_size": 32, "batch_size": 16, "progress": False, "seed": 0, "model": "resnet18", "augment": "none"}
    base = classbench.train(source, out=tmp_path / "base", epochs=4, **opts)
    base_state = read_state_dict(base.path)

    # One head-only epoch: the backbone (and its BatchNorm statistics) must be exactly the source's.
    frozen = classbench.train(target, out=tmp_path / "frozen", epochs=1, freeze_epochs=1, weights=str(base.path), **opts)
    tuned_state = read_state_dict(frozen.path)
    backbone = [k for k in base_state if not k.startswith("fc.")]
    assert backbone and all(torch.equal(base_state[k], tuned_state[k]) for k in backbone)
    assert tuned_state["fc.weight"].shape[0] == 4

    budget = {"epochs": 1, **opts}  # one epoch: the head alone (frozen backbone) vs a whole network from scratch
    scratch = classbench.train(target, out=tmp_path / "scratch", **budget)
    tuned = classbench.train(target, out=tmp_path / "tuned", weights=str(base.path), **budget)
    assert _recall(tuned.path, target).mean() > _recall(scratch.path, target).mean()


@pytest.mark.slow
def test_sigkill_then_resume_completes_with_consistent_metrics(tmp_path) -> None:
    data = make_class_folders(tmp_path / "d", {"a": 150, "b": 150})
    run = tmp_path / "run"
    cmd = CLI + ["train", str(data), "--model", "test_efficientnet", "--epochs", "5", "--img-size", "32",
                 "--batch-size", "2", "--checkpoint-every", "0", "--out", str(run)]  # small batches: each epoch takes seconds
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_file(run / "last.ckpt", proc, 240)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (run / "summary.json").exists()
    assert 1 <= len(_epochs(run)) < 5  # last.ckpt appeared after an early epoch, not only when training ended
    done = subprocess.run(CLI + ["train", "--resume", str(run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _epochs(run) == [1, 2, 3, 4, 5]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 5
    assert json.loads((run / "model.json").read_text())["classes"] == ["a", "b"]
    # the same run without the kill: same order, augmentation and schedule per epoch -> the same weights
    whole = subprocess.run(cmd[:-1] + [str(tmp_path / "whole")], capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    resumed, uninterrupted = (read_state_dict(r / "model.safetensors") for r in (run, tmp_path / "whole"))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    with open(run / "metrics.csv") as a, open(tmp_path / "whole" / "metrics.csv") as b:
        assert [r["val_loss"] for r in csv.DictReader(a)] == [r["val_loss"] for r in csv.DictReader(b)]


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path) -> None:
    data = make_class_folders(tmp_path / "d", {"a": 24, "b": 24, "c": 24})
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("CLASSBENCH_RUN_DIR", None)
    done = subprocess.run(CLI + ["train", str(data), "--model", "test_efficientnet", "--epochs", "2", "--img-size", "32",
                                 "--batch-size", "8", "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
                                 "--out", str(run)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["world_size"] == 2
    assert json.loads((run / "model.json").read_text())["classes"] == ["a", "b", "c"]
    assert _epochs(run) == [1, 2]
    assert (run / "model.safetensors").stat().st_size > 0


def test_cli_errors_are_one_line_without_traceback(tmp_path) -> None:
    missing = subprocess.run(CLI + ["train", str(tmp_path / "nope"), "--out", str(tmp_path / "r")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "nope" in missing.stderr
    data = make_class_folders(tmp_path / "d", {"a": 6, "b": 6})
    small = subprocess.run(CLI + ["train", str(data), "--model", "inception_v3", "--img-size", "64",
                                  "--out", str(tmp_path / "r2")], capture_output=True, text=True, timeout=120)
    assert small.returncode == 2 and "--img-size >= 75" in small.stderr and "Traceback" not in small.stderr
