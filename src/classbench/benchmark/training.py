"""``classbench bench``'s measurements of training: the real training step on synthetic tensors (the model-only
limit) and through the real pipeline, and the parts of the full-run estimate (cache, loader start, validation,
checkpoint writes, one-off first-step costs)."""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from classbench.training.config import DEFAULT_GRAD_CLIP


def synthetic_batches(batch_size: int, size: int, n_classes: int) -> Any:
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


def train_rate(module: Any, batches: Any, precision: str, steps: int, warmup: int) -> tuple[float, float, Any]:
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
            sync()
            self.stamps.append(time.perf_counter())
            self.sizes.append(int(batch[1].numel()))

    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="classbench-bench-") as folder, quiet_lightning():
        trainer = L.Trainer(accelerator="auto", devices=1, precision=precision, max_steps=warmup + steps,
                            max_epochs=-1, gradient_clip_val=DEFAULT_GRAD_CLIP or None, callbacks=[clock],
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            default_root_dir=folder)
        start = time.perf_counter()
        with warnings.catch_warnings():  # bench runs training steps only, validation is timed on its own
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")
            trainer.fit(module, train_dataloaders=batches)
    stamps, sizes = clock.stamps, clock.sizes
    if len(stamps) <= warmup:
        raise ValueError(f"only {len(stamps)} training steps ran; need more than warmup={warmup}")
    timed = stamps[-1] - stamps[warmup - 1] if warmup else stamps[-1] - start
    warmup_seconds = stamps[warmup - 1] - start if warmup else 0.0
    return sum(sizes[warmup:]) / max(timed, 1e-9), warmup_seconds, trainer.optimizers[0]


def sync() -> None:
    """Wait for queued CUDA work (no-op on the CPU), so that a timestamp means the work is done."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def pipeline(row: Any, module: Any, manifest: Any, augment: str, seed: int, epochs: int,
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
    rate, _, optimizer = train_rate(module, loaders.train, row.precision, steps, warmup)
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


def fold_estimate(row: Any, manifest: Any, folds: int, val: float, test: float, repeats: int = 1) -> None:
    """One fold run from the measured parts: its epochs train on ``(K-1)/K`` of the non-test images less the
    inner validation part, validate on that part, then the held-out fold is scored once; one-off costs as a
    run. The compare runs ``repeats`` x K of them, plus the refit."""
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
    row.folds, row.repeats = folds, repeats
    row.estimated_fold_run_seconds = round(once + (row.epochs or 0) * epoch + scoring, 1)
    row.estimated_compare_seconds = round(repeats * folds * row.estimated_fold_run_seconds
                                          + (row.estimated_run_seconds or 0), 1)


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
            sync()
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


def reset_peak_memory() -> None:
    """Restart the peak-memory counter: CUDA's allocator peak, or the process's peak RSS (VmHWM) on Linux."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) on Linux
    except OSError:
        pass


def peak_memory_mb() -> float | None:
    """Peak memory since ``reset_peak_memory`` in MiB (GPU allocations, or peak RSS); None where unknown."""
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    from classbench.runs import proc_kib_field

    peak = proc_kib_field("/proc/self/status", "VmHWM")
    return round(peak / 2**20, 1) if peak is not None else None


