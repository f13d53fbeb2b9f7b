"""The Lightning module: loss (optionally class-weighted), metrics, optimiser and schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from classbench.data.transforms import normalize
from classbench.inference import no_autocast
from classbench.speed import adamw, cpu_levers
from classbench.training.config import DEFAULTS


class WeightedMean(Metric):
    """Mean of per-batch values weighted by batch size, summed across processes under DDP.

    Unlike ``MeanMetric`` it checks nothing per update: a check reads the value back to the host, which on
    a GPU makes the CPU wait for the step to finish. A NaN loss stays NaN (and visible in metrics.csv).
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: int) -> None:
        self.total += value.detach().float() * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.total / self.weight


class ClassifierModule(L.LightningModule):
    """Wraps a timm model; batches arrive as uint8 images and are normalised on the device.

    No step reads a value back to the host: predictions are kept on the device and the class metrics are
    updated once per epoch, so on a GPU the CPU queues the next step while the GPU still works on this one
    (torchmetrics' per-update ``bincount`` and argument checks would each wait for the step to finish).
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        lr: float,
        backbone_lr: float,
        weight_decay: float = DEFAULTS["weight_decay"],
        warmup_epochs: float = DEFAULTS["warmup_epochs"],
        label_smoothing: float = DEFAULTS["label_smoothing"],
        class_weights: Sequence[float] | None = None,
        freeze_epochs: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr, self.backbone_lr, self.weight_decay = lr, backbone_lr, weight_decay
        self.warmup_epochs, self.label_smoothing = warmup_epochs, label_smoothing
        self.freeze_epochs, self.channels_last = freeze_epochs, channels_last
        self.register_buffer("norm_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("norm_std", torch.tensor(std, dtype=torch.float32), persistent=False)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        head = model.get_classifier()
        head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
        self._head_params = [p for p in model.parameters() if id(p) in head_ids]
        self._backbone_params = [p for p in model.parameters() if id(p) not in head_ids]
        self.train_loss, self.val_loss = WeightedMean(), WeightedMean()
        self._train_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.train_f1 = MulticlassF1Score(num_classes, average="macro")
        self.train_bacc = MulticlassRecall(num_classes, average="macro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")
        self.val_bacc = MulticlassRecall(num_classes, average="macro")
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    # -- data --------------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images, self.norm_mean, self.norm_std)  # the preprocessing evaluate, predict and export use
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.prepare(images))

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits.float(), labels, weight=self.class_weights, label_smoothing=self.label_smoothing)
        self.train_loss.update(loss, weight=labels.numel())
        self._train_outputs.append((logits.detach().argmax(1), labels))
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=labels.numel())
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        # Evaluate in fp32 even when training in bf16: bf16 eval cost 7 accuracy points once.
        with no_autocast():
            logits = self(images).float()
        self.val_loss.update(F.cross_entropy(logits, labels), weight=labels.numel())
        self._val_outputs.append((logits.argmax(1), labels))

    def on_train_epoch_start(self) -> None:
        self._set_backbone_frozen(self.current_epoch < self.freeze_epochs)

    def on_validation_epoch_end(self) -> None:
        _update_from(self._val_outputs, (self.val_acc, self.val_f1, self.val_bacc))
        _update_from(self._train_outputs, (self.train_acc, self.train_f1, self.train_bacc))
        if self.trainer.sanity_checking:
            for metric in (self.val_loss, self.val_acc, self.val_f1, self.val_bacc):
                metric.reset()
            return
        values = {
            "val_loss": self.val_loss.compute(),
            "val_acc": self.val_acc.compute(),
            "val_macro_f1": self.val_f1.compute(),
            "val_balanced_acc": self.val_bacc.compute(),
        }
        if self.train_loss.update_called:
            values["train_loss"] = self.train_loss.compute()
            values["train_acc"] = self.train_acc.compute()
            values["train_macro_f1"] = self.train_f1.compute()
            values["train_balanced_acc"] = self.train_bacc.compute()
        self.log_dict(values, prog_bar=False, sync_dist=False)
        self.log("val_f1", values["val_macro_f1"], prog_bar=True)
        for metric in (self.val_loss, self.val_acc, self.val_f1, self.val_bacc, self.train_loss, self.train_acc,
                       self.train_f1, self.train_bacc):
            metric.reset()

    # -- freezing ----------------------------------------------------------------------------
    def _set_backbone_frozen(self, frozen: bool) -> None:
        for p in self._backbone_params:
            p.requires_grad_(not frozen)
        self._frozen = frozen
        self.train(self.training)

    def train(self, mode: bool = True) -> ClassifierModule:
        """Frozen backbone BatchNorm stays in eval mode: pretrained statistics are kept, not drifted."""
        super().train(mode)
        if mode and getattr(self, "_frozen", False):
            head = self.model.get_classifier()
            head_modules = set(head.modules()) if isinstance(head, nn.Module) else set()
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module not in head_modules:
                    module.eval()
        return self

    # -- optimiser ---------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        groups = [
            {"params": self._backbone_params, "lr": self.backbone_lr, "name": "backbone"},
            {"params": self._head_params, "lr": self.lr, "name": "head"},
        ]
        groups = [g for g in groups if g["params"]]
        # fp16 needs a GradScaler, which Lightning cannot combine with a fused optimiser and clipping
        optimizer = adamw(groups, fused=self.trainer.precision != "16-mixed", weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        warmup = min(total // 2, int(total * self.warmup_epochs / epochs))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip here for the fused AdamW (fp32/bf16: gradients are not scaled, so clipping them is exact).

        Lightning's mixed-precision plugin refuses clipping with any fused optimiser, because under fp16 the
        gradients are still scaled at this point; :meth:`configure_optimizers` never fuses under fp16.
        """
        if not gradient_clip_val or not optimizer.defaults.get("fused"):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val, foreach=True)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val, foreach=True)


def build_module(net: nn.Module, num_classes: int, mean: Sequence[float], std: Sequence[float], on_gpu: bool,
                 **options: Any) -> tuple[ClassifierModule, dict[str, object]]:
    """The network with this run's CPU levers applied (``speed.cpu_levers``), wrapped in the Lightning module: the
    one place where ``train`` and ``bench`` build what they train. ``options`` are ``ClassifierModule``'s keyword
    arguments; returns the module and what the levers did (for the run's config)."""
    levers = cpu_levers(net, on_gpu)
    return ClassifierModule(net, num_classes, mean, std, **options), levers


def _update_from(outputs: list[tuple[torch.Tensor, torch.Tensor]], metrics: Sequence[Metric]) -> None:
    """Feed the predictions kept since the last call to ``metrics`` in one update each, then forget them."""
    if not outputs:
        return
    preds, labels = torch.cat([p for p, _ in outputs]), torch.cat([y for _, y in outputs])
    outputs.clear()
    for metric in metrics:
        metric.update(preds, labels)


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.01) -> float:
    """Linear warm-up to 1, then cosine decay to ``floor`` at ``total`` steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
