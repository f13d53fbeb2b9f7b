"""`classbench bench`: model-only and real-pipeline rates, memory, and the full-run estimate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

import classbench
from classbench.benchmark import _synthetic_batches, _train_rate
from tests.synth import make_class_folders


def test_bench_model_only_and_pipeline(tmp_path) -> None:
    data = make_class_folders(tmp_path / "d", {"a": 40, "b": 40})
    result = classbench.bench(["test_efficientnet"], img_size=32, batch_size=8, data=data, epochs=3, steps=3,
                              warmup=1, out=tmp_path / "bench.json", folds=4)
    row = result.rows[0]
    assert row.model == "test_efficientnet" and row.img_size == 32
    assert row.train_images_per_s > 0 and row.infer_images_per_s > 0 and row.infer_ms_batch1 > 0
    assert row.onnx_images_per_s > 0 and row.onnx_ms_batch1 > 0  # the ONNX Runtime path predict uses
    assert row.pipeline_images_per_s > 0 and row.pipeline_ratio > 0
    assert row.n_train + row.n_val < 80 and row.estimated_run_seconds > row.cache_seconds
    assert row.estimated_epoch_seconds > 0 and row.estimated_run_seconds >= row.epochs * row.estimated_epoch_seconds - 0.1
    parts = row.estimate_parts  # the estimate is the sum of its published parts
    one_off = {"cache", "loader_start", "model_setup", "first_steps_extra", "first_validation_extra",
               "first_checkpoint_extra"}
    assert set(parts) == one_off | {"epoch_train", "epoch_validation", "epoch_first_batch_wait", "epoch_checkpoint"}
    once = sum(parts[k] for k in one_off)
    per_epoch = sum(v for k, v in parts.items() if k.startswith("epoch_"))
    assert parts["epoch_train"] > 0 and parts["epoch_validation"] > 0 and parts["epoch_checkpoint"] > 0
    assert parts["model_setup"] > 0
    assert row.estimated_run_seconds == pytest.approx(once + 3 * per_epoch, abs=0.1)
    assert row.peak_memory_mb is None or row.peak_memory_mb > 10
    # compare --folds 4: four fold runs (each trains on 3/4 of the non-test images less its inner val) + the refit
    assert row.folds == 4 and once < row.estimated_fold_run_seconds < row.estimated_run_seconds + parts["epoch_validation"]
    assert row.estimated_compare_seconds == pytest.approx(4 * row.estimated_fold_run_seconds + row.estimated_run_seconds,
                                                          abs=0.2)
    assert result.estimated_compare_seconds == pytest.approx(row.estimated_compare_seconds, abs=0.2)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"][0]["model"] == "test_efficientnet" and saved["environment"]["cpu_count"] >= 1
    assert saved["estimated_compare_seconds"] == result.estimated_compare_seconds


def test_train_rate_runs_trains_own_step_and_leaves_a_slow_first_step_to_the_one_off_part() -> None:
    """bench times ClassifierModule.training_step through a Lightning Trainer (no second hand-written step)."""
    import timm

    from classbench.training.module import ClassifierModule

    class SlowFirstStep(ClassifierModule):  # as kernels loaded on first use make a process's first step slow
        calls = 0

        def training_step(self, batch, batch_idx):
            type(self).calls += 1
            if type(self).calls == 1:
                time.sleep(1.0)
            return super().training_step(batch, batch_idx)

    module = SlowFirstStep(timm.create_model("test_efficientnet", num_classes=2), 2, (0.5,) * 3, (0.5,) * 3,
                           lr=1e-3, backbone_lr=1e-3)
    before = [p.detach().clone() for p in module.parameters()]
    rate, warmup_seconds, optimizer = _train_rate(module, _synthetic_batches(4, 8, 2), "32-true", steps=3, warmup=2)
    assert warmup_seconds >= 1.0  # the slow step is in the warm-up...
    assert 3 * 4 / rate < 0.8  # ...not in the timed steps (3 steps of a tiny model: ~0.1 s on 2 idle cores)
    assert SlowFirstStep.calls == 5
    assert optimizer.defaults.get("fused") is True  # the fused AdamW that train builds
    assert any(not torch.equal(a, p) for a, p in zip(before, module.parameters()))  # real steps changed weights


def test_bench_cli_prints_a_table_and_writes_json(tmp_path) -> None:
    out = tmp_path / "b.json"
    done = subprocess.run([sys.executable, "-m", "classbench.cli", "bench", "--models", "test_efficientnet",
                           "--img-size", "32", "--batch-size", "4", "--steps", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test_efficientnet" in done.stdout + done.stderr
    assert json.loads(out.read_text())["rows"][0]["train_images_per_s"] > 0
