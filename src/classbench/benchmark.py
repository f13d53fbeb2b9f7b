"""``classbench bench``: what training and inference cost on this machine, before hours are spent.

Per model: training images/s on synthetic tensors (the model-only limit at the training precision),
fp32 inference images/s and batch-1 latency, peak memory; with ``data``, the same training step
through the real pipeline (decoded-image cache, augmentation, loader) and an estimate of the full
run's wall time (cache fill + loader start + model set-up + the one-off costs of the first training
steps, validation and checkpoint + epochs x (train + fp32 validation through the val loader + each
epoch's first-batch wait + checkpoint writes)).
"""

from __future__ import annotations

import copy
import io
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from classbench.runs import atomic_write_json, environment_info
from classbench.training.config import DEFAULT_CHECKPOINT_EVERY, DEFAULT_GRAD_CLIP


@dataclass
class BenchRow:
    model: str
    img_size: int
    batch_size: int
    precision: str
    params: int
    train_images_per_s: float
    infer_images_per_s: float
    infer_ms_batch1: float
    peak_memory_mb: float | None
    onnx_images_per_s: float | None = None
    onnx_ms_batch1: float | None = None
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
    estimated_fold_run_seconds: float | None = None  # one cross-validation run of this model (train + score its fold)
    estimated_compare_seconds: float | None = None  # folds x fold runs + the refit, were this model selected


@dataclass
class BenchResult:
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
        return round(sum(r.folds * r.estimated_fold_run_seconds for r in rows) + refit, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "environment": self.environment,
                "estimated_compare_seconds": self.estimated_compare_seconds}


def bench(models: Sequence[str] = ("resnet18",), img_size: int | None = None, batch_size: int = 32,
          precision: str = "auto", data: str | os.PathLike | None = None, epochs: int = 20, steps: int = 6,
          warmup: int = 2, out: str | os.PathLike | None = None, seed: int = 0, val: float = 0.2,
          test: float = 0.1, augment: str = "light", onnx: bool = True,
          checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY, folds: int = 1) -> BenchResult:
    """Measure each model; ``data`` adds the real-pipeline rate and the full-run time estimate
    (``checkpoint_every``: the training run's checkpoint interval, see ``train``); ``folds`` > 1 adds the
    estimate of a ``compare --folds`` (each fold run on its share of the images, plus the refit)."""
    import torch

    from classbench.models import check_input_size, create_model, default_config, resolve_name
    from classbench.speed import cpu_levers
    from classbench.training.config import resolve_channels_last, resolve_precision
    from classbench.training.module import ClassifierModule

    manifest = _manifest(data, val, test, seed) if data else None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in models:
        arch = resolve_name(name)
        cfg = default_config(arch)
        size = int(img_size or cfg["img_size"])
        check_input_size(arch, size)
        prec = resolve_precision(precision, "auto")
        torch.manual_seed(seed)
        n_classes = len(manifest.classes) if manifest else 10
        start = time.perf_counter()
        net = create_model(arch, n_classes)
        cpu_levers(net, prec, device.type == "cuda")  # the same training step that `train` runs
        module = ClassifierModule(net, n_classes, cfg["mean"], cfg["std"], lr=1e-3,
                                  backbone_lr=1e-3, channels_last=resolve_channels_last("auto", arch)).to(device)
        _sync()
        model_setup = time.perf_counter() - start  # includes the GPU context's start for the first model
        _reset_peak_memory()
        synthetic = _synthetic_batches(batch_size, size, n_classes)
        train_ips, warmup_seconds, _ = _train_rate(module, synthetic, prec, steps, warmup)
        first_steps_extra = max(warmup_seconds - warmup * batch_size / train_ips, 0.0)  # this process's first steps
        infer_ips, ms1 = _inference_rates(module, batch_size, size, device)
        row = BenchRow(arch, size, batch_size, prec, sum(p.numel() for p in module.parameters()),
                       round(train_ips, 2), round(infer_ips, 2), round(ms1, 3), _peak_memory_mb())
        if manifest is not None:
            _pipeline(row, module, manifest, augment, seed, epochs, steps, warmup,
                      {"model_setup": model_setup, "first_steps_extra": first_steps_extra}, checkpoint_every)
            if folds > 1:
                _fold_estimate(row, manifest, folds, val, test)
        if onnx:  # ONNX Runtime on the CPU (edge deployment), also on a GPU machine; last, its threads spin
            model = module.model if device.type == "cpu" else copy.deepcopy(module.model).cpu()
            row.onnx_images_per_s, row.onnx_ms_batch1 = _onnx_rates(model, batch_size, size)
        rows.append(row)
    result = BenchResult(rows, environment_info())
    if out:
        result.path = atomic_write_json(out, result.to_dict())
    return result


def _manifest(data: Any, val: float, test: float, seed: int) -> Any:
    """The same split training would use (a given split is kept; a folder or plain CSV is split)."""
    from classbench.data.split import training_split
    from classbench.errors import DataError

    manifest = training_split(data, val=val, test=test, seed=seed).manifest
    if not manifest.subset("train"):
        raise DataError(f"{data}: no training images in this split; nothing to measure")
    return manifest


def _synthetic_batches(batch_size: int, size: int, n_classes: int) -> Any:
    """A loader that yields one fixed uint8 batch forever: the model-only limit has no data cost."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, n_classes, (batch_size,), generator=g)

    class Forever(IterableDataset):
        def __iter__(self) -> Iterator[tuple[Any, Any]]:
            while True:
                yield images, labels

    return DataLoader(Forever(), batch_size=None)


def _train_rate(module: Any, batches: Any, precision: str, steps: int, warmup: int) -> tuple[float, float, Any]:
    """Images/s of ``train``'s own training step (``ClassifierModule.training_step`` through a Lightning
    ``Trainer``: the same precision, gradient clipping and fused AdamW) over ``steps`` steps after ``warmup``
    steps; the seconds until the warm-up was done (the Trainer's set-up and a process's first steps, which
    load and tune kernels); and the optimiser it built (for the checkpoint measurement)."""
    import tempfile

    import lightning as L

    from classbench.training.run import quiet_lightning

    class StepClock(L.Callback):
        """A timestamp (device work finished) and the batch size after each training step."""

        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.sizes: list[int] = []

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            _sync()
            self.stamps.append(time.perf_counter())
            self.sizes.append(int(batch[1].numel()))

    quiet_lightning()
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="classbench-bench-") as folder:
        trainer = L.Trainer(accelerator="auto", devices=1, precision=precision, max_steps=warmup + steps,
                            max_epochs=-1, gradient_clip_val=DEFAULT_GRAD_CLIP or None, callbacks=[clock],
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            default_root_dir=folder)
        start = time.perf_counter()
        trainer.fit(module, train_dataloaders=batches)
    stamps, sizes = clock.stamps, clock.sizes
    if len(stamps) <= warmup:
        raise ValueError(f"only {len(stamps)} training steps ran; need more than warmup={warmup}")
    timed = stamps[-1] - stamps[warmup - 1] if warmup else stamps[-1] - start
    warmup_seconds = stamps[warmup - 1] - start if warmup else 0.0
    return sum(sizes[warmup:]) / max(timed, 1e-9), warmup_seconds, trainer.optimizers[0]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _inference_rates(module: Any, batch_size: int, size: int, device: Any, repeats: int = 5) -> tuple[float, float]:
    """fp32 eval: images/s at ``batch_size`` and ms per image at batch 1 (what evaluation/predict use)."""
    import torch

    module.eval()
    out = []
    with torch.inference_mode():
        for batch in (batch_size, 1):
            x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
            module(x)
            n = repeats if batch > 1 else repeats * 4
            _sync()
            start = time.perf_counter()
            for _ in range(n):
                module(x)
            _sync()
            out.append((time.perf_counter() - start) / n)
    module.train()
    return batch_size / out[0], out[1] * 1000


def _onnx_rates(model: Any, batch_size: int, size: int, repeats: int = 5) -> tuple[float | None, float | None]:
    """ONNX Runtime fp32 (the backend `predict` uses once a run is exported): images/s and batch-1 ms."""
    import numpy as np
    import torch

    from classbench.errors import ClassbenchError
    from classbench.exporting import OnnxSession, _onnx_bytes

    try:
        data, _ = _onnx_bytes(model.eval().float(), torch.randn(1, 3, size, size), None, True, False)
        session = OnnxSession("bench.onnx", model_bytes=data)
    except (ClassbenchError, RuntimeError, ValueError):
        return None, None
    finally:
        model.train()
    out = []
    for batch in (batch_size, 1):
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
        session.run(x)
        n = repeats if batch > 1 else repeats * 4
        start = time.perf_counter()
        for _ in range(n):
            session.run(x)
        out.append((time.perf_counter() - start) / n)
    return round(batch_size / out[0], 2), round(out[1] * 1000, 3)


def _pipeline(row: BenchRow, module: Any, manifest: Any, augment: str, seed: int, epochs: int,
              steps: int, warmup: int, model_parts: dict[str, float], checkpoint_every: float) -> None:
    """Real loader rate (after the cache is filled, as in epochs 2+) and the full-run estimate.

    ``model_parts``: one-off costs measured while the model was built and first trained: ``model_setup``
    (build, move to the device; the first model also starts the GPU context) and ``first_steps_extra``
    (kernels loaded and tuned on first use; on an H200 about 5.5 s for mobilenetv2). Each new training
    process pays them again; in a bench of several models the later ones find some of it done already,
    so theirs read lower.
    """
    import torch

    from classbench.training.config import resolve_workers
    from classbench.training.loaders import build_loaders

    n_train = sum(manifest.counts("train").values())
    start = time.perf_counter()
    on_gpu = torch.cuda.is_available()
    loaders = build_loaders(manifest, row.img_size, row.batch_size, augment, "none", "auto",
                            resolve_workers("auto", True, on_gpu), seed, on_gpu, progress=False)
    row.cache_seconds = round(time.perf_counter() - start, 2)
    loader_start = _first_batch_seconds(loaders.train) + _first_batch_seconds(loaders.val)  # workers start
    rate, _, optimizer = _train_rate(module, loaders.train, row.precision, steps, warmup)
    first_val_extra, val_per_image = _validation_seconds(module, loaders.val)
    epoch_start = _first_batch_seconds(loaders.train)  # after validation, as each epoch waits for its first batch
    row.pipeline_images_per_s = round(rate, 2)
    row.pipeline_ratio = round(rate / row.train_images_per_s, 3) if row.train_images_per_s else None
    batches = n_train // row.batch_size if n_train > row.batch_size else 1
    first_checkpoint_extra, checkpoint = _checkpoint_seconds(module, optimizer)
    parts = {"cache": row.cache_seconds, "loader_start": loader_start, **model_parts,
             "first_validation_extra": first_val_extra, "first_checkpoint_extra": first_checkpoint_extra,
             "epoch_train": batches * row.batch_size / rate, "epoch_validation": loaders.n_val * val_per_image,
             "epoch_first_batch_wait": epoch_start}
    epoch_seconds = sum(v for k, v in parts.items() if k.startswith("epoch_"))
    parts["epoch_checkpoint"] = checkpoint * checkpoint_writes(epochs, epoch_seconds, checkpoint_every) / epochs
    per_epoch = epoch_seconds + parts["epoch_checkpoint"]
    once = sum(v for k, v in parts.items() if not k.startswith("epoch_"))
    row.estimate_parts = {k: round(v, 3) for k, v in parts.items()}
    row.estimated_epoch_seconds = round(per_epoch, 2)
    row.estimated_run_seconds = round(once + epochs * per_epoch, 1)
    row.epochs, row.n_train, row.n_val = epochs, loaders.n_train, loaders.n_val


def _fold_estimate(row: BenchRow, manifest: Any, folds: int, val: float, test: float) -> None:
    """One fold run from the measured parts: its epochs train on ``(K-1)/K`` of the non-test images less the
    inner validation part, validate on that part, then the held-out fold is scored once; one-off costs as a run."""
    from classbench.comparison.replicates import inner_val_fraction

    parts = row.estimate_parts or {}
    pool = sum(manifest.counts("train").values()) + sum(manifest.counts("val").values())
    held = pool / folds
    inner_val = (pool - held) * inner_val_fraction(val, test)
    n_train, n_val = max(row.n_train or 1, 1), max(row.n_val or 1, 1)
    epoch = (parts.get("epoch_train", 0.0) * (pool - held - inner_val) / n_train
             + parts.get("epoch_validation", 0.0) * inner_val / n_val
             + parts.get("epoch_first_batch_wait", 0.0) + parts.get("epoch_checkpoint", 0.0))
    once = sum(v for k, v in parts.items() if not k.startswith("epoch_"))
    scoring = parts.get("epoch_validation", 0.0) * held / n_val
    row.folds = folds
    row.estimated_fold_run_seconds = round(once + (row.epochs or 0) * epoch + scoring, 1)
    row.estimated_compare_seconds = round(folds * row.estimated_fold_run_seconds + (row.estimated_run_seconds or 0), 1)


def checkpoint_writes(epochs: int, epoch_seconds: float, every_seconds: float) -> int:
    """How many times a run writes last.ckpt for its interval: every ``ceil(every / epoch)`` epochs (the timer
    restarts at each write) and after the last epoch. Writes after a new best model are not counted (how many
    epochs improve is not known in advance)."""
    if every_seconds <= 0 or epoch_seconds <= 0:
        return epochs
    stride = max(1, math.ceil(every_seconds / epoch_seconds))
    return epochs // stride + (epochs % stride != 0)


def _validation_seconds(module: Any, loader: Any, max_batches: int = 3) -> tuple[float, float]:
    """fp32 validation through the real val loader, up to ``max_batches``, twice.

    Returns (the first pass's one-off extra: new batch shapes, kernels loaded on first use; seconds per
    image of the second pass).
    """
    import torch

    device = next(module.parameters()).device
    passes = []
    module.eval()
    with torch.inference_mode():
        for _ in range(2):
            start, seen = time.perf_counter(), 0
            for i, (images, labels) in enumerate(loader):
                module(images.to(device, non_blocking=True))
                seen += int(labels.numel())
                if i + 1 >= max_batches:
                    break
            _sync()
            passes.append((time.perf_counter() - start, seen))
    module.train()
    (first, seen), (second, _) = passes
    return max(first - second, 0.0), second / max(seen, 1)


def _first_batch_seconds(loader: Any) -> float:
    """Wait for a new pass's first batch: worker start-up (first pass) or prefetch refill (later passes)."""
    start = time.perf_counter()
    next(iter(loader), None)
    return time.perf_counter() - start


def _checkpoint_seconds(module: Any, optimizer: Any) -> tuple[float, float]:
    """What each epoch writes, as training writes it: last.ckpt (weights + optimiser, serialised in memory,
    then written to a file, as Lightning does) and model.safetensors; twice.

    Returns (the first write's one-off extra: its buffers' memory is new; seconds of the second write).
    On the 2-core Xeon resnet50's first write took 1.5 s and later ones 0.3 s: counting the first one every
    epoch overstates a run of many epochs.
    """
    import tempfile

    import torch
    from safetensors.torch import save_file

    times = []
    with tempfile.TemporaryDirectory(prefix="classbench-bench-") as folder:
        for _ in range(2):
            start = time.perf_counter()
            buf = io.BytesIO()
            torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict()}, buf)
            Path(folder, "last.ckpt").write_bytes(buf.getbuffer())
            del buf
            save_file({k: v.contiguous() for k, v in module.model.state_dict().items()},
                      str(Path(folder, "model.safetensors")))
            times.append(time.perf_counter() - start + 0.05)  # + the progress bar's and recorder's bookkeeping
    return max(times[0] - times[1], 0.0), times[1]


def _reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) on Linux
    except OSError:
        pass


def _peak_memory_mb() -> float | None:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def render_bench(result: BenchResult, console: Any) -> None:
    from rich.table import Table

    table = Table(title="classbench bench (this machine)", header_style="bold")
    cols = [("model", "model"), ("img_size", "px"), ("precision", "precision"), ("train_images_per_s", "train img/s"),
            ("pipeline_images_per_s", "pipeline img/s"), ("pipeline_ratio", "pipeline/limit"),
            ("infer_images_per_s", "torch infer img/s"), ("onnx_images_per_s", "ONNX RT (CPU) img/s"),
            ("infer_ms_batch1", "torch ms (b=1)"), ("onnx_ms_batch1", "ONNX CPU ms (b=1)"),
            ("peak_memory_mb", "peak MB"), ("estimated_run_seconds", "est. run")]
    for _, title in cols:
        table.add_column(title, justify="left" if title == "model" else "right", no_wrap=title == "model")
    for row in result.rows:
        values = asdict(row)
        cells = []
        for key, _ in cols:
            v = values.get(key)
            if key == "estimated_run_seconds" and v is not None:
                each = f" of {_duration(row.estimated_epoch_seconds)}" if row.estimated_epoch_seconds else ""
                cells.append(f"{_duration(v)} ({row.epochs} ep{each})")
            else:
                cells.append("-" if v is None else str(v))
        table.add_row(*cells)
    console.print(table)
    for row in result.rows:
        if row.estimated_compare_seconds is not None:
            console.print(f"{row.model}: {row.folds} fold runs of {_duration(row.estimated_fold_run_seconds or 0)} "
                          f"+ the refit: {_duration(row.estimated_compare_seconds)} in a compare")
    total = result.estimated_compare_seconds
    if total is not None and len(result.rows) > 1:
        console.print(f"The whole compare ({len(result.rows)} models x {result.rows[0].folds} folds + the selected "
                      f"one's refit): about {_duration(total)}")
    if result.path:
        console.print(f"Wrote {result.path}")


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
