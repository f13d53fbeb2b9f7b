"""Callbacks that write the run folder: per-epoch metrics.csv, the best model, throughput."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from classbench.models import save_model
from classbench.runs import atomic_write_csv
from classbench.training.loaders import epoch_seed

METRIC_COLUMNS = [
    "epoch", "train_loss", "train_acc", "train_macro_f1", "train_balanced_acc", "val_loss", "val_acc", "val_macro_f1",
    "val_balanced_acc", "lr", "epoch_seconds", "train_seconds", "train_images_per_s",
]
VAL_COLUMNS = ["val_loss", "val_acc", "val_macro_f1", "val_balanced_acc"]


class EpochSeed(L.Callback):
    """Reseeds torch's random numbers (augmentation in the main process, dropout) at each epoch's start from
    the seed and the epoch, so a resumed epoch repeats what the uninterrupted run did; on resume it also sets
    ``sampler``'s epoch before the loader first asks it for indices (with worker processes that happens before
    Lightning's own ``set_epoch``). Worker processes (GPU runs) keep their own random streams for
    augmentation, which start afresh when a run resumes; under DDP the first resumed epoch's shard order too."""

    def __init__(self, seed: int, sampler: Any = None) -> None:
        self.seed, self.sampler = seed, sampler

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(int(checkpoint["epoch"]) + 1)  # last.ckpt is written at the end of its epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch))


class LastCheckpoint(ModelCheckpoint):
    """Writes ``last.ckpt`` (weights, optimiser, schedule, the recorder's rows) at the end of an epoch when
    ``every_seconds`` have passed since the last write, when ``recorder`` saved a new best model, and after
    the final epoch; 0 writes every epoch.

    A killed run resumes from it and loses at most that long plus one epoch; a new ``model.safetensors`` is
    followed by a checkpoint at the end of the same epoch, so a resumed run's best model is one of its own
    epochs (unless the kill falls between the two writes). Under DDP rank 0's clock decides for every rank
    (each write ends in a barrier). (A resnet50 checkpoint takes about a second to write on 2 cores.)
    Lightning's own ``save_last=True`` with ``save_top_k=0`` writes it only when training ends.
    """

    def __init__(self, run_dir: Path, every_seconds: float, recorder: RunRecorder | None = None) -> None:
        super().__init__(dirpath=run_dir, filename="last", monitor=None, save_top_k=1, save_on_train_epoch_end=True,
                         enable_version_counter=False)
        self.every_seconds, self.recorder = every_seconds, recorder
        self._written = time.monotonic()
        self._best_written: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._written = time.monotonic()
        self._best_written = self._best_epoch()  # restored from last.ckpt on resume

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        final = trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        new_best = self._best_epoch() != self._best_written
        due = checkpoint_due(time.monotonic() - self._written, self.every_seconds, final or new_best)
        if trainer.strategy.broadcast(due):  # one decision for all ranks
            super().on_train_epoch_end(trainer, pl_module)
            self._written, self._best_written = time.monotonic(), self._best_epoch()

    def _best_epoch(self) -> int | None:
        return self.recorder.best_epoch if self.recorder is not None else None


def checkpoint_due(seconds_since_write: float, every_seconds: float, must_write: bool) -> bool:
    return must_write or every_seconds <= 0 or seconds_since_write >= every_seconds


class RunRecorder(L.Callback):
    """Appends one row per epoch to ``metrics.csv`` and saves ``model.safetensors`` when the monitor improves.

    Its state (the rows so far and the best value) travels inside ``last.ckpt``, so a resumed run
    continues the same table with no duplicated or missing epochs.
    """

    def __init__(self, run_dir: Path, monitor: str, mode: str, model_meta: dict[str, Any]) -> None:
        self.run_dir, self.monitor, self.mode, self.model_meta = Path(run_dir), monitor, mode, model_meta
        self.rows: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self._epoch_start = self._train_end = 0.0
        self._images = 0
        self._batch_start = 0.0
        self.images_per_s = 0.0

    # -- timing --------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._batch_start = time.perf_counter()
        self._images = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        n = int(batch[1].numel()) * max(1, trainer.world_size)
        self._images += n
        self._train_end = now
        self.images_per_s = n / max(now - self._batch_start, 1e-9)  # shown by ProgressBar
        self._batch_start = now

    # -- one row per epoch -----------------------------------------------------------------------
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if isinstance(v, torch.Tensor)}
        train_seconds = max(self._train_end - self._epoch_start, 1e-9)
        row = {
            "epoch": trainer.current_epoch + 1,
            **{k: round(metrics[k], 6) for k in METRIC_COLUMNS if k in metrics},
            "lr": _current_lr(trainer),
            "epoch_seconds": round(time.perf_counter() - self._epoch_start, 3),
            "train_seconds": round(train_seconds, 3),
            "train_images_per_s": round(self._images / train_seconds, 2),
        }
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        value = metrics.get(self.monitor)
        improved = value is not None and (
            self.best_value is None
            or (value > self.best_value if self.mode == "max" else value < self.best_value)
        )
        if improved:
            self.best_value, self.best_epoch = value, row["epoch"]
        if trainer.is_global_zero:
            atomic_write_csv(self.run_dir / "metrics.csv", self.rows, METRIC_COLUMNS)
            if improved:
                meta = {**self.model_meta, "epoch": row["epoch"], "monitor": self.monitor,
                        "monitor_value": round(value, 6),
                        "val_metrics": {k: row[k] for k in VAL_COLUMNS if k in row}}
                save_model(pl_module.model, meta, self.run_dir)

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
        self.best_value = state_dict.get("best_value")
        self.best_epoch = state_dict.get("best_epoch")


class ProgressBar(RichProgressBar):
    """Rich progress bar that shows the recorder's images/s and reads the logged values (loss, val_f1) at most
    every ``metrics_every`` seconds: reading a value on the GPU waits for the step, so reading it after every
    step would leave the GPU idle while the CPU prepares the next one."""

    def __init__(self, recorder: RunRecorder, metrics_every: float = 0.5) -> None:
        super().__init__(leave=True)
        self.recorder, self.metrics_every = recorder, metrics_every
        self._metrics: dict[str, Any] = {}
        self._read_at = float("-inf")

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        now = time.perf_counter()
        if now - self._read_at >= self.metrics_every or trainer.state.stage != "train":
            self._metrics, self._read_at = super().get_metrics(trainer, pl_module), now
        return {**self._metrics, "img_s": f"{self.recorder.images_per_s:.0f}"}

    def _stop_progress(self) -> None:
        # Lightning restarts rich's display at each epoch; a Ctrl-C that lands after rich made its refresh thread
        # and before it started it would make stop() join an unstarted thread: a RuntimeError instead of the
        # KeyboardInterrupt (and no resume hint). Such a thread never ran: there is nothing to stop or join.
        live = getattr(self.progress, "live", None)
        thread = getattr(live, "_refresh_thread", None)
        if thread is not None and thread.ident is None:
            live._refresh_thread = None
        super()._stop_progress()


def _current_lr(trainer: L.Trainer) -> float:
    if not trainer.optimizers:
        return 0.0
    groups = trainer.optimizers[0].param_groups
    head = [g for g in groups if g.get("name") == "head"] or groups
    return round(float(head[0]["lr"]), 8)
