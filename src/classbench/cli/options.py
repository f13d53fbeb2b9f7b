"""Options that several commands share, declared once (help text here, defaults from the dataclass).

Each alias is ``Annotated[type, typer.Option(...)]``; a command writes ``epochs: Epochs = D["epochs"]``, so the
default a user sees comes from :data:`classbench.training.config.DEFAULTS`, the one source of options; commands
that wrap one API function take theirs from its signature (:func:`api_defaults`).
``Optional[...]`` is spelled out because typer releases before 0.15 do not read ``X | None``.
"""

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from classbench.training.config import DEFAULT_LR
from classbench.training.config import DEFAULTS as D

__all__ = ["D", "api_defaults", "Data", "Epochs", "ImgSize", "Pretrained", "BatchSize", "Balance", "Augment", "Precision", "Lr",
           "Val", "Test", "CheckpointEvery", "Overwrite", "Logger", "MlflowUri"]

LR_HELP = (f"Learning rate (default {DEFAULT_LR:g}), or 'auto': Lightning's learning-rate range test picks one per "
           "architecture (recorded in config.yaml).")
LOGGER_HELP = ("Also log to csv|tensorboard|mlflow|wandb through Lightning's loggers (several: comma-separated or "
               "repeated); metrics.csv is always written. tensorboard/mlflow/wandb need "
               'pip install "classbench\\[tensorboard]" (or \\[mlflow], \\[wandb]).')  # \\[: not rich markup
MLFLOW_URI_HELP = "MLflow tracking URI or folder for its mlflow.db (default: $MLFLOW_TRACKING_URI, else mlflow.db beside the runs)."
CHECKPOINT_EVERY_HELP = ("Write last.ckpt at the end of an epoch once this many seconds have passed since the last write "
                         "(0: every epoch); also after a new best model and after the final epoch.")

def api_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of a Python API function, so a command's flags default to what the API does."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


Data = Annotated[Path, typer.Argument(help="Class folders, pre-split folders (train/val/test) or a CSV manifest.")]
Epochs = Annotated[int, typer.Option(help="Training epochs (the same budget for every model of a compare).")]
ImgSize = Annotated[Optional[int], typer.Option(help="Input size in pixels (default: each model's own).")]
Pretrained = Annotated[bool, typer.Option(help="Fine-tune the model's pretrained weights (downloads via timm) "
                                          "instead of training from scratch.")]
BatchSize = Annotated[str, typer.Option(help="Batch size or 'auto'.")]
Balance = Annotated[str, typer.Option(help="auto|none|weights|sampler: how class imbalance is handled.")]
Augment = Annotated[str, typer.Option(help="none|light|strong|aerial (aerial adds vertical flips and 90° turns).")]
Precision = Annotated[str, typer.Option(help="auto|32|bf16-mixed|16-mixed (auto: bf16 where it is native).")]
Lr = Annotated[Optional[str], typer.Option(help=LR_HELP)]
Val = Annotated[float, typer.Option(help="Validation fraction when classbench makes the split.")]
Test = Annotated[float, typer.Option(help="Locked test fraction when classbench makes the split.")]
CheckpointEvery = Annotated[float, typer.Option(help=CHECKPOINT_EVERY_HELP)]
Overwrite = Annotated[bool, typer.Option(help="Start the output folder afresh.")]
Logger = Annotated[list[str], typer.Option("--logger", help=LOGGER_HELP)]  # TrainConfig.logger parses the names
MlflowUri = Annotated[Optional[str], typer.Option("--mlflow-uri", help=MLFLOW_URI_HELP)]
