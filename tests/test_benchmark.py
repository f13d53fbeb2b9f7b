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
from classbench.benchmark import EXPORT_RATES, BenchResult, BenchRow, render_bench, synthetic_batches, train_rate
from tests.synth import make_class_folders


def test_bench_model_only_and_pipeline(tmp_path) -> None:
    data = make_class_folders(tmp_path / "d", {"a": 40, "b": 40})
    result = classbench.bench(["test_efficientnet"], img_size=32, batch_size=8, data=data, epochs=3, steps=3,
                              warmup=1, out=tmp_path / "bench.json", folds=4)
    row = result.rows[0]
    assert row.model == "test_efficientnet" and row.img_size == 32
    assert row.train_images_per_s > 0 and row.infer_images_per_s > 0 and row.infer_ms_batch1 > 0
    assert set(row.exports) == set(EXPORT_RATES)  # ONNX Runtime fp32 / INT8 and OpenVINO / INT8, side by side
    for variant, rate in row.exports.items():
        assert rate["images_per_s"] > 0 and rate["ms_batch1"] > 0 and rate["precision"], variant
    assert row.exports["onnx"]["precision"] == "fp32" and row.exports["onnx-int8"]["precision"] == "int8"
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
        ends: list[float] = []

        def training_step(self, batch, batch_idx):
            type(self).calls += 1
            if type(self).calls == 1:
                time.sleep(1.0)
            return super().training_step(batch, batch_idx)

        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            type(self).ends.append(time.perf_counter())

    module = SlowFirstStep(timm.create_model("test_efficientnet", num_classes=2), 2, (0.5,) * 3, (0.5,) * 3,
                           lr=1e-3, backbone_lr=1e-3)
    before = [p.detach().clone() for p in module.parameters()]
    rate, warmup_seconds, optimizer = train_rate(module, synthetic_batches(4, 8, 2), "32-true", steps=3, warmup=2)
    assert warmup_seconds >= 1.0  # the slow step is in the warm-up...
    ends = SlowFirstStep.ends  # ...not in the timed steps: they are the last three, from the end of the warm-up
    assert 3 * 4 / rate == pytest.approx(ends[4] - ends[1], rel=0.05, abs=0.02)  # (no wall-clock limit: load-proof)
    assert SlowFirstStep.calls == 5
    assert optimizer.defaults.get("fused") is True  # the fused AdamW that train builds
    assert any(not torch.equal(a, p) for a, p in zip(before, module.parameters()))  # real steps changed weights


def test_bench_cli_prints_tables_that_fit_80_columns_and_writes_json(tmp_path) -> None:
    out = tmp_path / "b.json"
    done = subprocess.run([sys.executable, "-m", "classbench.cli", "bench", "--models", "test_efficientnet",
                           "--img-size", "32", "--batch-size", "4", "--steps", "2", "--exports", "onnx",
                           "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr[-2000:]
    shown = done.stderr[done.stderr.index("Training (img/s"):]  # the console is stderr: stdout stays for data
    assert "test_efficientnet" in shown and "Inference" in shown and "…" not in shown
    assert max(len(line) for line in shown.splitlines()) <= 80
    saved = json.loads(out.read_text())["rows"][0]
    assert saved["train_images_per_s"] > 0 and set(saved["exports"]) == {"onnx"}
    bad = subprocess.run([sys.executable, "-m", "classbench.cli", "bench", "--exports", "tflite"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "choose from onnx,onnx-int8,openvino,openvino-int8" in bad.stderr


def _row(model: str, **extra) -> BenchRow:
    exports = {"onnx": {"images_per_s": 12345.67, "ms_batch1": 123.456, "precision": "fp32"},
               "onnx-int8": {"images_per_s": 23456.78, "ms_batch1": 98.76, "precision": "int8"},
               "openvino": {"images_per_s": 34567.89, "ms_batch1": 87.65, "precision": "bf16"},
               "openvino-int8": {"error": "nncf is not installed (needed here); pip install \"classbench[openvino]\""}}
    return BenchRow(model, 224, 32, "bf16-mixed", 25_557_032, 1234.5, 2345.6, 345.678, 12345.6, exports=exports,
                    pipeline_images_per_s=1111.1, pipeline_ratio=0.987, estimated_run_seconds=123456.0,
                    estimated_epoch_seconds=6172.8, epochs=20, folds=5, estimated_fold_run_seconds=98765.0,
                    estimated_compare_seconds=617280.0, **extra)


def test_bench_tables_fit_80_columns_without_cutting_a_cell() -> None:
    """issue 20: the 12-column table was unreadable at 80 columns; three narrow tables, no cell cut ("…")."""
    import io

    from rich.console import Console

    names = ["efficientnet_b0", "mobilenetv3_large_100", "resnet50"]
    console = Console(file=io.StringIO(), width=80)
    render_bench(BenchResult([_row(n) for n in names]), console)
    out = console.file.getvalue()
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    for cell in (*names, "12,346", "123.46", "23,457", "1.90", "bf16-mixed", "1,234", "1,111", "0.99",
                 "12,346", "openvino-int8", "34.3 h", "171.5 h", "27.4 h", "102.9 min"):
        assert cell in out, cell
    assert "not installed" in out and "Training (img/s" in out and "Full-run estimate" in out


def test_a_repeated_compare_estimate_counts_every_fold_run() -> None:
    """compare --folds 5 --repeats 2: ten fold runs per model, plus the largest refit."""
    import io

    from rich.console import Console

    result = BenchResult([_row("a", repeats=2), _row("b", repeats=2)])
    assert result.estimated_compare_seconds == pytest.approx(2 * 2 * 5 * 98765.0 + 123456.0)
    console = Console(file=io.StringIO(), width=80)
    render_bench(result, console)
    out = console.file.getvalue()
    assert "a: 10 fold runs of" in out and "(2 models x 2 x 5 folds + the selected" in out
    from classbench.errors import ClassbenchError

    with pytest.raises(ClassbenchError, match="--repeats 2: repeats a cross-validation"):
        classbench.bench(["test_efficientnet"], folds=1, repeats=2, exports=())


def test_bench_cli_exports_keywords(monkeypatch, tmp_path) -> None:
    from typer.testing import CliRunner

    import classbench.cli.results as commands
    from classbench.cli import app

    seen = []
    monkeypatch.setattr(commands, "api_bench", lambda *a, **k: seen.append(k["exports"]) or BenchResult([]))
    for given, expected in (("all", list(EXPORT_RATES)), ("none", []), ("onnx, openvino", ["onnx", "openvino"])):
        result = CliRunner().invoke(app, ["bench", "--exports", given, "--json", str(tmp_path / "b.json")])
        assert result.exit_code == 0, result.output
        assert seen[-1] == expected
