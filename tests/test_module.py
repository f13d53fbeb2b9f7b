"""ClassifierModule's epoch metrics equal a direct computation from the same predictions; the progress bar
reads logged values (a GPU wait each) at most once per interval."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from classbench.training.module import ClassifierModule


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 3


def _scores(preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    recall, f1 = [], []
    for c in range(3):
        tp = ((preds == c) & (labels == c)).sum().item()
        fp, fn = ((preds == c) & (labels != c)).sum().item(), ((preds != c) & (labels == c)).sum().item()
        recall.append(tp / max(tp + fn, 1))
        f1.append(2 * tp / max(2 * tp + fp + fn, 1))
    return {"acc": (preds == labels).float().mean().item(), "balanced_acc": sum(recall) / 3, "macro_f1": sum(f1) / 3}


def test_epoch_metrics_match_a_direct_computation() -> None:
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", num_classes=3)
    module = ClassifierModule(net, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), lr=3e-3, backbone_lr=3e-3)
    train_logits: list[torch.Tensor] = []
    net.register_forward_hook(lambda m, args, out: train_logits.append(out.detach()) if m.training else None)
    (train_x, train_y), (val_x, val_y) = _images(40, 1), _images(22, 2)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    # uneven batches (16, 16, 8 and 8, 8, 6): the losses must be weighted by batch size
    trainer.fit(module, DataLoader(TensorDataset(train_x, train_y), batch_size=16),
                DataLoader(TensorDataset(val_x, val_y), batch_size=8))
    got = {k: float(v) for k, v in trainer.callback_metrics.items()}

    logits = torch.cat(train_logits)
    assert len(logits) == 40
    expected = _scores(logits.argmax(1), train_y)
    per_batch = [F.cross_entropy(chunk, y) * len(y) for chunk, y in zip(logits.split(16), train_y.split(16))]
    assert got["train_loss"] == pytest.approx(float(sum(per_batch)) / 40, rel=1e-4)
    for key in ("acc", "balanced_acc", "macro_f1"):
        assert got[f"train_{key}"] == pytest.approx(expected[key], abs=1e-6), key

    module.eval()
    with torch.inference_mode():
        val_logits = module(val_x)
    expected = _scores(val_logits.argmax(1), val_y)
    assert got["val_loss"] == pytest.approx(F.cross_entropy(val_logits, val_y).item(), rel=1e-4)
    for key in ("acc", "balanced_acc", "macro_f1"):
        assert got[f"val_{key}"] == pytest.approx(expected[key], abs=1e-6), key


def test_progress_bar_reads_logged_values_at_most_every_interval(monkeypatch, tmp_path) -> None:
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import RichProgressBar

    from classbench.training.callbacks import ProgressBar, RunRecorder

    reads = []
    monkeypatch.setattr(RichProgressBar, "get_metrics", lambda self, trainer, module: reads.append(1) or {"loss": 1.0})
    recorder = RunRecorder(tmp_path, "val_macro_f1", "max", {})
    recorder.images_per_s = 123.4
    bar = ProgressBar(recorder, metrics_every=60.0)
    training = SimpleNamespace(state=SimpleNamespace(stage="train"))
    for _ in range(5):  # every step of an epoch: one read (each read makes a GPU wait for the step)
        assert bar.get_metrics(training, None) == {"loss": 1.0, "img_s": "123"}
    assert len(reads) == 1
    bar.get_metrics(SimpleNamespace(state=SimpleNamespace(stage="validate")), None)  # validation: fresh values
    assert len(reads) == 2
    bar.metrics_every = 0.0
    bar.get_metrics(training, None)
    assert len(reads) == 3


def test_the_training_step_normalises_as_predict_does() -> None:
    """One preprocessing: the module's uint8 -> float step is predict's ``normalize`` (x / 255 - mean) / std."""
    from classbench.predict import Classifier

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    module = ClassifierModule(timm.create_model("test_efficientnet", num_classes=2), 2, mean, std, lr=1e-3,
                              backbone_lr=1e-3)
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    by_hand = (images.double() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    clf = Classifier({"classes": ["a", "b"], "img_size": 8, "mean": list(mean), "std": list(std)}, "torch",
                     lambda x: x, Path("."))
    assert torch.allclose(module.prepare(images).double(), by_hand, atol=1e-5)
    assert torch.equal(module.prepare(images), clf.normalise(images))
