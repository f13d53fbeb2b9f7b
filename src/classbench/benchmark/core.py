"""``bench()``: each model measured in turn (training, inference, exported runtimes, the full-run estimate)."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from classbench.benchmark.rates import EXPORT_RATES, export_rates, torch_rates
from classbench.benchmark.training import (
    fold_estimate,
    peak_memory_mb,
    pipeline,
    reset_peak_memory,
    sync,
    synthetic_batches,
    train_rate,
)
from classbench.runs import atomic_write_json, environment_info
from classbench.training.config import DEFAULT_CHECKPOINT_EVERY, DEFAULT_LR, DEFAULTS


@dataclass
class BenchRow:
    """One model's measurements; rates in images/s, latencies in ms, times in seconds. ``exports`` maps an
    export variant (``onnx``, ``onnx-int8``, ``openvino``, ``openvino-int8``) to ``{"images_per_s", "ms_batch1",
    "precision"}`` or ``{"error"}``; the pipeline and estimate fields are set with ``data`` only."""

    model: str
    img_size: int
    batch_size: int
    precision: str
    params: int
    train_images_per_s: float
    infer_images_per_s: float
    infer_ms_batch1: float
    peak_memory_mb: float | None
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipeline_images_per_s: float | None = None
    pipeline_ratio: float | None = None
    cache_seconds: float | None = None
    estimated_run_seconds: float | None = None
    estimated_epoch_seconds: float | None = None
    estimate_parts: dict[str, float] | None = None  # seconds: where the estimate comes from
    epochs: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    folds: int | None = None
    repeats: int = 1  # of the cross-validation (compare --repeats)
    estimated_fold_run_seconds: float | None = None  # one cross-validation run of this model (train + score its fold)
    estimated_compare_seconds: float | None = None  # repeats x folds fold runs + the refit, were it selected


@dataclass
class BenchResult:
    """All rows, the machine's ``environment_info()`` and where the JSON was written."""

    rows: list[BenchRow]
    environment: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def estimated_compare_seconds(self) -> float | None:
        """A compare of all these models: every fold run, plus the largest refit (the selected one is not known)."""
        rows = [r for r in self.rows if r.estimated_fold_run_seconds is not None and r.folds]
        if not rows:
            return None
        refit = max(r.estimated_run_seconds or 0.0 for r in rows)
        return round(sum(r.repeats * r.folds * r.estimated_fold_run_seconds for r in rows) + refit, 1)

    def to_dict(self) -> dict[str, Any]:
        """The JSON that ``bench(out=...)`` writes."""
        return {"rows": [asdict(r) for r in self.rows], "environment": self.environment,
                "estimated_compare_seconds": self.estimated_compare_seconds}


def bench(models: Sequence[str] = ("resnet18",), img_size: int | None = None, batch_size: int = 32,
          precision: str = DEFAULTS["precision"], data: str | os.PathLike | None = None, epochs: int = DEFAULTS["epochs"],
          steps: int = 6, warmup: int = 2, out: str | os.PathLike | None = None, seed: int = DEFAULTS["seed"],
          val: float = DEFAULTS["val"], test: float = DEFAULTS["test"], augment: str = DEFAULTS["augment"],
          exports: Sequence[str] = EXPORT_RATES,
          checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY, folds: int = 1, repeats: int = 1) -> BenchResult:
    """Measure each model; ``data`` adds the real-pipeline rate and the full-run time estimate
    (``checkpoint_every``: the training run's checkpoint interval, see ``train``); ``folds`` > 1 adds the
    estimate of a ``compare --folds K --repeats R`` (R x K fold runs, each on its share of the images, plus
    the refit). ``exports``:
    the exported runtimes to time on the CPU (``()`` for none)."""
    from classbench.errors import ClassbenchError

    unknown = [v for v in exports if v not in EXPORT_RATES]
    if unknown:
        raise ClassbenchError(f"--exports {','.join(unknown)}: choose from {','.join(EXPORT_RATES)} (or none)")
    if repeats < 1 or (repeats > 1 and folds < 2):
        raise ClassbenchError(f"--repeats {repeats}: repeats a cross-validation; it needs --folds K > 1 and R >= 1")
    manifest = _manifest(data, val, test, seed) if data else None
    options = {"batch_size": batch_size, "precision": precision, "steps": steps, "warmup": warmup, "seed": seed,
               "augment": augment, "epochs": epochs, "checkpoint_every": checkpoint_every, "folds": folds,
               "repeats": repeats, "val": val,
               "test": test, "exports": tuple(exports)}
    rows = [_measure(name, img_size, manifest, options) for name in models]
    result = BenchResult(rows, environment_info())
    if out:
        result.path = atomic_write_json(out, result.to_dict())
    return result


def _measure(name: str, img_size: int | None, manifest: Any, o: dict[str, Any]) -> BenchRow:
    """One model: build it as ``train`` does, time its training step, inference and exports, estimate a run."""
    import torch

    from classbench.models import check_input_size, create_model, default_config, resolve_name
    from classbench.training.config import resolve_channels_last, resolve_precision
    from classbench.training.module import build_module

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = resolve_name(name)
    cfg = default_config(arch)
    size = int(img_size or cfg["img_size"])
    check_input_size(arch, size)
    prec, batch = resolve_precision(o["precision"], "auto"), o["batch_size"]
    torch.manual_seed(o["seed"])
    n_classes = len(manifest.classes) if manifest else 10
    start = time.perf_counter()
    net = create_model(arch, n_classes)
    module, _ = build_module(net, n_classes, cfg["mean"], cfg["std"], device.type == "cuda", lr=DEFAULT_LR,
                             backbone_lr=DEFAULT_LR, channels_last=resolve_channels_last("auto", arch))
    module = module.to(device)  # the same training step that `train` runs
    sync()
    model_setup = time.perf_counter() - start  # includes the GPU context's start for the first model
    reset_peak_memory()
    train_ips, warmup_seconds, _ = train_rate(module, synthetic_batches(batch, size, n_classes), prec, o["steps"],
                                              o["warmup"])
    first_steps_extra = max(warmup_seconds - o["warmup"] * batch / train_ips, 0.0)  # this process's first steps
    infer_ips, ms1 = torch_rates(module, batch, size, device)
    row = BenchRow(arch, size, batch, prec, sum(p.numel() for p in module.parameters()),
                   round(train_ips, 2), round(infer_ips, 2), round(ms1, 3), peak_memory_mb())
    if manifest is not None:
        pipeline(row, module, manifest, o["augment"], o["seed"], o["epochs"], o["steps"], o["warmup"],
                 {"model_setup": model_setup, "first_steps_extra": first_steps_extra}, o["checkpoint_every"])
        if o["folds"] > 1:
            fold_estimate(row, manifest, o["folds"], o["val"], o["test"], o["repeats"])
    if o["exports"]:  # exported runtimes on the CPU (edge deployment), also on a GPU machine; last, ORT threads spin
        model = module.model if device.type == "cpu" else copy.deepcopy(module.model).cpu()
        row.exports = export_rates(model, batch, size, o["exports"])
    return row


def _manifest(data: Any, val: float, test: float, seed: int) -> Any:
    """The same split training would use (a given split is kept; a folder or plain CSV is split)."""
    from classbench.data.split import training_split
    from classbench.errors import DataError

    manifest = training_split(data, val=val, test=test, seed=seed).manifest
    if not manifest.subset("train"):
        raise DataError(f"{data}: no training images in this split; nothing to measure")
    return manifest
