"""Experiment loggers: ``--logger csv|tensorboard|mlflow|wandb`` through Lightning's own loggers.

``csv`` is always on: it is the run folder's ``metrics.csv`` (written by ``RunRecorder``, the source of truth).
The others are Lightning's ``TensorBoardLogger`` (``RUN/tensorboard/``), ``MLFlowLogger`` (the tracking URI that
``config.resolve_mlflow_uri`` chose, by default a SQLite store; experiment ``$MLFLOW_EXPERIMENT_NAME`` or
``classbench``) and ``WandbLogger`` (``RUN/wandb/``, project ``$WANDB_PROJECT`` or ``classbench``;
``WANDB_MODE=offline`` works as usual). Each receives what Lightning logs during training (per-step loss, per-epoch
train/val metrics), the run's configuration as hyperparameters (when a fresh run starts) and its best epoch's
validation metrics as ``best/...`` (when training ends). A resumed run continues the same MLflow and W&B runs:
their ids are kept in ``RUN/loggers.json``. Nothing here changes the process's environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

from classbench.errors import ClassbenchError, first_line
from classbench.runs import atomic_write_json, read_json_or
from classbench.training.config import run_home

IDS_FILE = "loggers.json"


def run_label(run_dir: Path) -> str:
    """The run's name in MLflow and W&B: its folder, relative to the compare folder when it belongs to one."""
    run_dir = Path(run_dir).absolute()
    home = run_home(run_dir)
    if (home / "compare.json").is_file():
        return f"{home.name}/{run_dir.relative_to(home).as_posix()}"
    return run_dir.name


def build_loggers(names: Sequence[str], run_dir: Path, mlflow_uri: str | None) -> list[Any]:
    """Lightning loggers for ``names`` (``csv`` needs none: metrics.csv is always written), ``mlflow_uri`` as
    resolved by ``config.resolve``; the MLflow and W&B runs of an earlier session of this run (``loggers.json``)
    are continued."""
    ids = _read_ids(run_dir)
    loggers: list[Any] = []
    if "tensorboard" in names:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False))
    if "mlflow" in names:
        from lightning.pytorch.loggers import MLFlowLogger

        uri = str(mlflow_uri)
        loggers.append(MLFlowLogger(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", "classbench"),
                                    run_name=run_label(run_dir), tracking_uri=uri, run_id=ids.get("mlflow_run_id"),
                                    artifact_location=_sqlite_artifacts(uri)))
    if "wandb" in names:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(project=os.environ.get("WANDB_PROJECT", "classbench"), name=run_label(run_dir),
                                   save_dir=str(run_dir), id=ids.get("wandb_id"), resume="allow"))
    for i, logger in enumerate(loggers):
        try:
            _start(logger)
        except ClassbenchError:
            for started in loggers[:i]:
                started.finalize("failed")
            raise
    return loggers


def _sqlite_artifacts(uri: str) -> str | None:
    """For a local SQLite store: its folder is created and its artifacts go to ``mlartifacts/`` beside it (MLflow's
    own default would be ``./mlruns`` in whatever the working directory is); None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    folder = Path(uri.removeprefix("sqlite:///")).parent
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / "mlartifacts").resolve().as_uri()


def _start(logger: Any) -> None:
    """Open the logger's run now, so a tracking server that cannot be reached or W&B without credentials is one
    line before training starts (rank 0 only: the others get a dummy experiment)."""
    hints = {"MLFlowLogger": "check --mlflow-uri / $MLFLOW_TRACKING_URI (a file: store needs MLFLOW_ALLOW_FILE_STORE=true)",
             "WandbLogger": "run `wandb login`, or set WANDB_MODE=offline"}
    name = type(logger).__name__
    if name not in hints:
        return
    try:
        logger.experiment  # noqa: B018 (the property creates the run)
    except Exception as err:  # any failure of the third-party client: reported as one line
        first = first_line(err)
        raise ClassbenchError(f"--logger {name[:-6].lower()}: {type(err).__name__}: {first}; {hints[name]}") from err


def _read_ids(run_dir: Path) -> dict[str, Any]:
    """``loggers.json`` of an earlier session of this run (empty when there is none or it is unreadable)."""
    return read_json_or(Path(run_dir) / IDS_FILE, {})


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    """The run's options (``config.yaml``'s ``args``) with the resolved values under ``resolved/``; every value a
    number, a bool or a string (lists and dicts as JSON), as every logger accepts."""
    def plain(value: Any) -> Any:
        return value if isinstance(value, (int, float, bool, str)) else json.dumps(value, default=str)

    args = {k: plain(v) for k, v in config.items() if k != "resolved" and v is not None}
    resolved = {f"resolved/{k}": plain(v) for k, v in (config.get("resolved") or {}).items() if v is not None}
    return {**args, **resolved}


class LoggerSummary(L.Callback):
    """Logs the run's configuration as hyperparameters when a fresh run starts (a resumed MLflow/W&B run has
    them), keeps the MLflow/W&B run ids in ``loggers.json``, and logs the recorder's best epoch and its validation
    metrics as ``best/...`` when training ends (to TensorBoard together with the hyperparameters, which is what
    its HParams tab shows)."""

    def __init__(self, run_dir: Path, config: dict[str, Any], recorder: Any, fresh: bool) -> None:
        self.run_dir, self.config, self.recorder, self.fresh = Path(run_dir), config, recorder, fresh

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.loggers:
            return
        params = hyperparameters(self.config)
        for logger in trainer.loggers:
            if self.fresh:
                logger.log_hyperparams(params)
        if trainer.is_global_zero:
            ids = {type(lg).__name__: lg for lg in trainer.loggers}
            saved = {"mlflow_run_id": getattr(ids.get("MLFlowLogger"), "run_id", None),
                     "wandb_id": getattr(ids.get("WandbLogger"), "version", None)}
            atomic_write_json(self.run_dir / IDS_FILE, {k: v for k, v in saved.items() if v})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        best = next((r for r in self.recorder.rows if r["epoch"] == self.recorder.best_epoch), None)
        if best is None or not trainer.loggers:
            return
        metrics = {f"best/{k}": float(v) for k, v in best.items() if k.startswith("val_") and v is not None}
        metrics["best/epoch"] = float(best["epoch"])
        for logger in trainer.loggers:
            if type(logger).__name__ == "TensorBoardLogger":  # TensorBoard's HParams tab: the options and these
                logger.log_hyperparams(hyperparameters(self.config), metrics=metrics)
            else:
                logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
