"""``--lr auto``: a learning rate per architecture from Lightning's learning-rate range test (Smith 2017),
so a bake-off does not favour the architectures that happen to like the default 1e-3."""

from __future__ import annotations

import copy
import math
import tempfile
from typing import Any

from classbench.console import warn
from classbench.training.config import DEFAULT_LR

MIN_LR, MAX_LR = 1e-5, 1e-1
STEPS = 60


def find_lr(module: Any, train_loader: Any, precision: str, accelerator: str, steps: int = STEPS) -> dict[str, Any]:
    """Run the range test on a copy of ``module`` (its weights are untouched) over ``steps`` training batches
    from ``MIN_LR`` to ``MAX_LR``; returns ``{"lr": suggestion, "source": ...}``. The suggestion is Lightning's
    steepest-descent point, clamped to [1e-4, 1e-2]; when the test gives none, 1e-3 with a warning."""
    import lightning as L
    from lightning.pytorch.tuner import Tuner

    probe = copy.deepcopy(module)
    with tempfile.TemporaryDirectory(prefix="classbench-lr-") as tmp:
        trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, max_epochs=1000, default_root_dir=tmp)
        finder = Tuner(trainer).lr_find(probe, train_dataloaders=train_loader, min_lr=MIN_LR, max_lr=MAX_LR,
                                        num_training=steps, update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None or not math.isfinite(suggestion):
        warn(f"--lr auto: the learning-rate range test gave no suggestion; training with {DEFAULT_LR:g}")
        return {"lr": DEFAULT_LR, "source": "fallback (range test gave no suggestion)"}
    lr = float(min(1e-2, max(1e-4, suggestion)))
    return {"lr": lr, "source": f"lr_find over {steps} steps (suggested {suggestion:.3g})"}
