"""Training end to end on real generated image folders (tiny models, tiny images, few epochs)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
import yaml

import classbench
from classbench.errors import ClassbenchError, ModelError
from classbench.models import load_model, read_state_dict
from tests.synth import make_class_folders

FAST = {"epochs": 2, "img_size": 32, "progress": False, "batch_size": 16}


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("data") / "three", {"a": 30, "b": 30, "c": 30})


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_train_writes_a_complete_run_folder(three_classes, tmp_path) -> None:
    out = tmp_path / "run"
    result = classbench.train(three_classes, model="test_efficientnet", out=out, seed=3, **FAST)
    for name in ("config.yaml", "split.csv", "metrics.csv", "model.safetensors", "model.json", "last.ckpt",
                 "curves.png", "summary.json"):
        assert (out / name).is_file(), name
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "val_macro_f1", "val_balanced_acc", "lr",
                "epoch_seconds", "train_images_per_s"):
        assert rows[-1][key] != "", key
    meta = json.loads((out / "model.json").read_text())
    assert meta["classes"] == ["a", "b", "c"] and meta["img_size"] == 32 and meta["monitor"] == "val_macro_f1"
    assert meta["epoch"] == result.best_epoch
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["args"]["seed"] == 3 and config["resolved"]["img_size"] == 32
    assert len(config["split"]["sha256"]) == 64 and config["environment"]["versions"]["torch"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["training_seconds"] > 0 and summary["train_images_per_s"] > 0
    assert set(summary["class_counts"]) == {"train", "val", "test"}
    model, _ = load_model(out)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(ClassbenchError, match="already exists"):
        classbench.train(three_classes, model="test_efficientnet", out=out, **FAST)


def test_same_seed_gives_same_weights(three_classes, tmp_path) -> None:
    a = classbench.train(three_classes, model="test_efficientnet", out=tmp_path / "a", seed=7, **{**FAST, "epochs": 1})
    b = classbench.train(three_classes, model="test_efficientnet", out=tmp_path / "b", seed=7, **{**FAST, "epochs": 1})
    wa, wb = read_state_dict(a.path), read_state_dict(b.path)
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
    assert (a.path / "split.csv").read_text() == (b.path / "split.csv").read_text()


def test_training_leaves_the_host_process_as_it_was(three_classes, tmp_path, monkeypatch) -> None:
    """A library call: no environment variable, logger level or warning filter of the caller's process changes."""
    import logging
    import os
    import warnings

    for name in ("CLASSBENCH_RUN_DIR", "PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    lightning_log = logging.getLogger("lightning.pytorch")
    monkeypatch.setattr(lightning_log, "level", logging.INFO)
    classbench.train(three_classes, model="test_efficientnet", out=tmp_path / "r", **{**FAST, "epochs": 1})
    assert not {"CLASSBENCH_RUN_DIR", "PL_GLOBAL_SEED", "PL_SEED_WORKERS"} & set(os.environ)
    assert lightning_log.level == logging.INFO
    quieted = [f for f in warnings.filters if f[1] is not None and "many workers" in f[1].pattern]
    assert not quieted


def test_model_too_small_for_inception_is_refused_up_front(three_classes, tmp_path) -> None:
    with pytest.raises(ModelError, match="--img-size >= 75"):
        classbench.train(three_classes, model="inception_v3", out=tmp_path / "r", **{**FAST, "img_size": 64})


@pytest.mark.slow
@pytest.mark.parametrize("name,size", [("densenet121", 32), ("inceptionv3", 75), ("mobilenetv2", 32), ("resnet50", 32)])
def test_the_report_architectures_train(name, size, tmp_path) -> None:
    data = make_class_folders(tmp_path / "d", {"x": 12, "y": 12}, size=size)
    result = classbench.train(data, model=name, out=tmp_path / "run", epochs=1, img_size=size, batch_size=8,
                              progress=False)
    assert json.loads((result.path / "model.json").read_text())["img_size"] == size
    assert len(_rows(result.path)) == 1


def _recall(run_dir, data_dir) -> np.ndarray:
    """Per-class recall of the saved model on all images of data_dir (independent of classbench.evaluate)."""
    from PIL import Image

    model, meta = load_model(run_dir)
    mean, std = torch.tensor(meta["mean"]).view(3, 1, 1), torch.tensor(meta["std"]).view(3, 1, 1)
    hits, totals = np.zeros(len(meta["classes"])), np.zeros(len(meta["classes"]))
    for i, cls in enumerate(meta["classes"]):
        for path in sorted((data_dir / cls).glob("*.png")):
            x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
            with torch.no_grad():
                pred = model(((x - mean) / std)[None]).argmax(1).item()
            hits[i] += pred == i
            totals[i] += 1
    return hits / totals


@pytest.mark.slow
def test_balance_auto_rescues_the_minority_class(tmp_path) -> None:
    data = make_class_folders(tmp_path / "imb", {"major": 200, "minor": 10}, signal=0.4, noise=50, seed=1)
    opts = {"epochs": 3, "img_size": 32, "batch_size": 32, "progress": False, "seed": 0, "model": "resnet18",
            "val": 0.2, "test": 0.0}
    none = classbench.train(data, out=tmp_path / "none", balance="none", **opts)
    auto = classbench.train(data, out=tmp_path / "auto", balance="auto", **opts)
    assert yaml.safe_load((auto.path / "config.yaml").read_text())["resolved"]["balance"] == "weights"
    recall_none, recall_auto = _recall(none.path, data), _recall(auto.path, data)
    assert recall_none[1] == 0.0 and recall_none[0] == 1.0  # majority class only
    assert recall_auto[1] > 0.0


def test_bad_options_are_one_line_errors(three_classes, tmp_path) -> None:
    with pytest.raises(ClassbenchError, match="--balance 'often' is not one of"):
        classbench.train(three_classes, model="test_efficientnet", out=tmp_path / "r", balance="often", **FAST)
    with pytest.raises(ClassbenchError, match="weights file not found"):
        classbench.train(three_classes, model="test_efficientnet", out=tmp_path / "r", weights="nope.safetensors",
                         **FAST)
    with pytest.raises(ModelError, match="unknown model"):
        classbench.train(three_classes, model="resnet5O", out=tmp_path / "r", **FAST)


def test_refused_run_leaves_no_folder_and_overwrite_guards_user_data(three_classes, tmp_path) -> None:
    out = tmp_path / "never"
    with pytest.raises(ModelError):
        classbench.train(three_classes, model="inception_v3", out=out, **{**FAST, "img_size": 64})
    assert not out.exists()
    with pytest.raises(ClassbenchError, match="not a classbench run folder"):
        classbench.train(three_classes, model="test_efficientnet", out=three_classes, overwrite=True, **FAST)
    assert (three_classes / "a").is_dir()


def test_presplit_train_test_only_gets_a_validation_part(tmp_path) -> None:
    make_class_folders(tmp_path / "d" / "train", {"a": 20, "b": 20})
    make_class_folders(tmp_path / "d" / "test", {"a": 5, "b": 5}, seed=9)
    result = classbench.train(tmp_path / "d", model="test_efficientnet", out=tmp_path / "r", **{**FAST, "epochs": 1})
    counts = result.summary["class_counts"]
    assert sum(counts["test"].values()) == 10 and sum(counts["val"].values()) > 0
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 40


def test_every_auto_is_resolved_once_into_a_frozen_record() -> None:
    import dataclasses

    from classbench.training.config import Resolved, TrainConfig, resolve

    plan = resolve(TrainConfig(data="x", balance="auto", batch_size="auto", img_size=None), "resnet18", [40, 8, 0])
    assert isinstance(plan, Resolved) and plan.img_size == 224 and plan.balance == "weights"  # 5:1 > 3:1
    assert plan.batch_size == 12 and plan.imbalance_ratio == 5.0 and plan.freeze_epochs == 0 and plan.lr == 1e-3
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.lr = 1.0
    tuned = resolve(TrainConfig(data="x", weights=None, pretrained=True, backbone_lr_scale=0.1), "resnet18", [10, 10])
    assert tuned.freeze_epochs == 1 and tuned.backbone_lr == pytest.approx(1e-4)
    assert tuned.with_lr(0.02, 0.1, True).backbone_lr == pytest.approx(0.002)
    assert plan.to_dict()["mean"] == list(plan.mean)


def test_auto_workers_follow_the_cores_a_run_may_use() -> None:
    from classbench.training.config import resolve_workers

    assert resolve_workers(3, cached=True, on_gpu=False, cores=2) == 3  # a number is taken as given
    assert resolve_workers("auto", cached=False, on_gpu=False, cores=4) == 0  # few cores: in-process loading
    assert resolve_workers("auto", cached=False, on_gpu=False, cores=6) == 5
    assert resolve_workers("auto", cached=True, on_gpu=False, cores=32) == 0  # the cache feeds a CPU run faster
    assert resolve_workers("auto", cached=True, on_gpu=True, cores=32) == 8


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_usable_cores_follow_the_affinity_mask() -> None:
    """A process pinned to one CPU (taskset, a cpuset) counts one core, however many the machine has."""
    import subprocess
    import sys

    code = ("import os; from classbench.runs import usable_cores; from classbench.inference import physical_cores; "
            "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(usable_cores(), physical_cores())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "1"]
