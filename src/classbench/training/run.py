"""``train()``: one model, end to end, into a self-describing run folder (resumable)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classbench.console import info, warn
from classbench.errors import ClassbenchError, Interrupted, RunError, first_line
from classbench.runs import atomic_write_json, atomic_write_yaml, command_line, environment_info, prepare_run_dir, read_yaml
from classbench.training.config import BALANCE_TEXT, DEFAULTS, MONITORS, Resolved, TrainConfig, resolve

RUN_DIR_ENV = "CLASSBENCH_RUN_DIR"  # lets DDP worker processes find the folder rank 0 prepared


@dataclass
class TrainResult:
    """What a finished run produced; ``path`` is the run folder."""

    path: Path
    best_epoch: int | None
    best_metrics: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False

    def load(self, backend: str = "auto") -> Any:
        from classbench.predict import load

        return load(self.path, backend=backend)


def train(data: str | os.PathLike, model: str = DEFAULTS["model"], **options: Any) -> TrainResult:
    """Train ``model`` on ``data`` (class folders, pre-split folders or a manifest CSV).

    Options are the fields of :class:`TrainConfig` (epochs, img_size, pretrained, weights, balance, ...).
    """
    config = TrainConfig(data=str(data), model=model, **options)
    return _run(config, resume_from=None)


def resume(run_dir: str | os.PathLike, progress: bool = True) -> TrainResult:
    """Continue an interrupted run from its ``last.ckpt`` with the same configuration."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise RunError(f"{run_dir}: no config.yaml; --resume needs a classbench run folder")
    if (run_dir / "summary.json").is_file():
        raise RunError(f"{run_dir}: this run has already finished (summary.json); nothing to resume")
    saved = read_yaml(config_path)
    if not isinstance(saved, dict) or not isinstance(saved.get("args"), dict):
        raise RunError(f"{config_path}: no 'args' mapping; --resume needs the config.yaml a classbench run wrote")
    args = {**saved["args"], "out": str(run_dir), "progress": progress}
    if args.get("lr") == "auto" and isinstance((saved.get("resolved") or {}).get("lr"), (int, float)):
        args["lr"] = saved["resolved"]["lr"]  # the rate the range test found; a resumed run does not search again
    config = TrainConfig.from_dict(args)
    return _run(config, resume_from=run_dir)


def default_run_dir(model: str, root: str = "runs") -> Path:
    base = Path(root) / model.replace("/", "_")
    candidate, n = base, 2
    while candidate.exists() and any(candidate.iterdir()):
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


def _is_worker_process() -> bool:
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def _run(config: TrainConfig, resume_from: Path | None) -> TrainResult:
    import shutil

    from classbench.models import check_input_size, default_config, resolve_name
    config.validate()
    arch = resolve_name(config.model)
    check_input_size(arch, int(config.img_size or default_config(arch)["img_size"]))  # refused before any write
    worker = _is_worker_process()
    fresh = False
    if worker and os.environ.get(RUN_DIR_ENV):
        run_dir = Path(os.environ[RUN_DIR_ENV])
    elif resume_from is not None:
        run_dir = resume_from
    else:
        run_dir = Path(config.out) if config.out else default_run_dir(arch)
        run_dir, fresh = prepare_run_dir(run_dir, overwrite=config.overwrite), True
    config.out = str(run_dir)
    try:
        with run_dir_env(run_dir), quiet_lightning():
            return _fit(config, arch, run_dir, resume_from, worker)
    except KeyboardInterrupt:  # Ctrl-C anywhere: before training, or inside Lightning's fit (see _fit)
        if (run_dir / "config.yaml").is_file():
            raise Interrupted(f"interrupted; continue with: classbench train --resume {run_dir}") from None
        if fresh and not worker:
            shutil.rmtree(run_dir, ignore_errors=True)  # stopped before training began: nothing to resume
        raise Interrupted("interrupted before training began; nothing was kept") from None
    except ClassbenchError:
        if fresh and not worker and not (run_dir / "last.ckpt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing trained yet: leave no half-made run folder
        raise


def _fit(config: TrainConfig, arch: str, run_dir: Path, resume_from: Path | None, worker: bool) -> TrainResult:
    """Plain wiring: split -> resolved options -> model, loaders, learning rate -> Lightning -> run folder."""
    from classbench.training.callbacks import RunRecorder

    manifest, split_note = _load_or_make_split(config, run_dir, reuse=resume_from is not None or worker)
    counts = manifest.counts("train")
    train_counts = [counts.get(c, 0) for c in manifest.classes]
    plan = resolve(config, arch, train_counts)
    if not worker:
        _announce(config, plan, split_note)
    module, loaders, meta, extras = _build(config, plan, manifest, train_counts, worker)
    if config.lr == "auto":
        from classbench.training.lr_find import find_lr

        extras["lr_search"] = find_lr(module, loaders.train, plan.precision, config.accelerator)
        plan = plan.with_lr(extras["lr_search"]["lr"], config.backbone_lr_scale, config.transfer)
        module.lr, module.backbone_lr = plan.lr, plan.backbone_lr
        if not worker:
            info(f"--lr auto: {plan.lr:.3g} ({extras['lr_search']['source']}).", markup=False)
    config.resolved = {**plan.to_dict(), **extras}
    recorder = RunRecorder(run_dir, config.monitor, MONITORS[config.monitor], meta)
    trainer = _trainer(config, plan, run_dir, recorder, loaders.train.sampler, worker, fresh=resume_from is None)
    if trainer.is_global_zero and resume_from is None:
        _write_config(run_dir, config, manifest, trainer)
    wall = _run_trainer(trainer, module, loaders, run_dir, resume_from)
    if not trainer.is_global_zero:
        return TrainResult(run_dir, recorder.best_epoch, {})
    return _finish(run_dir, recorder, manifest, loaders, wall, trainer, config)


def _announce(config: TrainConfig, plan: Resolved, split_note: str | None) -> None:
    """What the user should know before training starts: imbalance handling, where the split went."""
    from classbench.data.check import IMBALANCE_THRESHOLD

    if plan.imbalance_ratio > IMBALANCE_THRESHOLD and plan.balance != "none":
        info(f"Imbalance {plan.imbalance_ratio:.1f}:1 in the training split -> {BALANCE_TEXT[plan.balance]} "
             f"(--balance {config.balance}).")
    elif plan.imbalance_ratio > IMBALANCE_THRESHOLD:
        warn(f"imbalance {plan.imbalance_ratio:.1f}:1 and --balance none: minority classes may never be predicted.")
    if split_note:
        info(split_note, markup=False)


def _build(config: TrainConfig, plan: Resolved, manifest: Any, train_counts: list[int],
           worker: bool) -> tuple[Any, Any, dict[str, Any], dict[str, Any]]:
    """The seeded model, the loaders and the Lightning module; the model file's metadata; what else was done."""
    import lightning as L
    import torch

    from classbench.data.manifest import Manifest
    from classbench.models import count_parameters, create_model
    from classbench.training.loaders import build_loaders, class_weights
    from classbench.training.module import build_module

    L.seed_everything(config.seed, workers=True, verbose=False)
    net = create_model(plan.architecture, len(manifest.classes), pretrained=config.pretrained, weights=config.weights)
    pool = Manifest.load(config.cache_pool) if config.cache_pool and Path(config.cache_pool).is_file() else None
    loaders = build_loaders(manifest, plan.img_size, plan.batch_size, config.augment, plan.balance, config.cache,
                            plan.workers, config.seed, plan.on_gpu, progress=config.progress and not worker,
                            cache_pool=pool)
    module, levers = build_module(
        net, len(manifest.classes), plan.mean, plan.std, plan.on_gpu, lr=plan.lr, backbone_lr=plan.backbone_lr,
        weight_decay=config.weight_decay, warmup_epochs=config.warmup_epochs, label_smoothing=config.label_smoothing,
        class_weights=class_weights(train_counts) if plan.balance == "weights" else None,
        freeze_epochs=plan.freeze_epochs, channels_last=plan.channels_last,
    )
    if config.compile:
        module.model = torch.compile(module.model)
    meta = {"architecture": plan.architecture, "classes": manifest.classes, "img_size": plan.img_size,
            "mean": list(plan.mean), "std": list(plan.std), "temperature": 1.0, "num_params": count_parameters(net),
            "pretrained": "hub" if config.pretrained else (str(config.weights) if config.weights else None)}
    extras = {"cache": loaders.cache_mode, "num_params": meta["num_params"], "cpu_levers": levers, "lr_search": None}
    return module, loaders, meta, extras


def _trainer(config: TrainConfig, plan: Resolved, run_dir: Path, recorder: Any, sampler: Any, worker: bool,
             fresh: bool) -> Any:
    """Lightning's Trainer with classbench's callbacks (recorder, last.ckpt, per-epoch seeding, progress) and the
    loggers of ``--logger`` (hyperparameters logged when ``fresh``, i.e. not resuming)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping

    from classbench.training.callbacks import EpochSeed, LastCheckpoint, ProgressBar
    from classbench.training.loggers import LoggerSummary, build_loggers

    loggers = build_loggers(plan.loggers, run_dir, plan.mlflow_uri)
    callbacks: list[Any] = [recorder, LastCheckpoint(run_dir, config.checkpoint_every, recorder),
                            EpochSeed(config.seed, sampler)]
    if loggers:
        callbacks.append(LoggerSummary(run_dir, config.to_dict(), recorder, fresh))
    if config.patience:
        callbacks.append(EarlyStopping(monitor=config.monitor, mode=MONITORS[config.monitor], patience=config.patience))
    if config.progress and not worker:
        callbacks.append(ProgressBar(recorder))
    return L.Trainer(
        max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices,
        num_nodes=config.num_nodes, strategy=config.strategy, precision=plan.precision,
        gradient_clip_val=config.grad_clip or None, callbacks=callbacks, logger=loggers or False,
        enable_progress_bar=config.progress and not worker, enable_model_summary=False,
        num_sanity_val_steps=0, deterministic=False, default_root_dir=run_dir, log_every_n_steps=50,
    )


def _run_trainer(trainer: Any, module: Any, loaders: Any, run_dir: Path, resume_from: Path | None) -> float:
    """``trainer.fit`` (from ``last.ckpt`` when resuming); Ctrl-C comes back as KeyboardInterrupt. Seconds taken."""
    ckpt = run_dir / "last.ckpt"
    if resume_from and not ckpt.is_file() and trainer.is_global_zero:
        info(f"{run_dir}: no last.ckpt was written before the run stopped; training starts again at epoch 1.",
             markup=False)
    start = time.perf_counter()
    path = str(ckpt) if resume_from and ckpt.is_file() else None
    try:
        trainer.fit(module, loaders.train, loaders.val, ckpt_path=path, **_weights_only(trainer, path))
    except SystemExit:
        if trainer.interrupted:  # Lightning handles Ctrl-C itself, then exits: _run reports it
            raise KeyboardInterrupt from None
        raise
    if trainer.interrupted:  # Lightning < 2.5 returns from fit after Ctrl-C
        raise KeyboardInterrupt
    return time.perf_counter() - start


def _weights_only(trainer: Any, ckpt_path: str | None) -> dict[str, Any]:
    """Resume never unpickles arbitrary objects: Lightning >= 2.6 is told ``weights_only=True``; an older one
    (its ``fit`` has no such argument and unpickles the file itself) is given the file only after torch's
    weights-only unpickler has read all of it (the same bytes then hold no other object to build); a file it
    refuses is a ``RunError``."""
    import inspect

    if "weights_only" in inspect.signature(trainer.fit).parameters:
        return {"weights_only": True}
    if ckpt_path is not None:
        import pickle

        import torch

        try:
            torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise RunError(f"{ckpt_path}: holds more than weights and training state, so it is not loaded "
                           f"({first_line(err, 160)}); start the run afresh with --overwrite") from err
    return {}


def _load_or_make_split(config: TrainConfig, run_dir: Path, reuse: bool) -> tuple[Any, str | None]:
    from classbench.data.manifest import Manifest
    from classbench.data.split import training_split

    saved = run_dir / "split.csv"
    if reuse and saved.is_file():
        return Manifest.load(saved), None
    result = training_split(config.data, val=config.val, test=config.test, test_per_class=config.test_per_class,
                            seed=config.seed, out=saved)
    for message in result.warnings:
        warn(message)
    counts = {s: sum(c.values()) for s, c in result.manifest.split_counts().items()}
    how = "as given" if result.given else "test locked away"  # a compare's fold run: its test part is the held-out fold
    note = f"Split saved to {saved}: train {counts['train']}, val {counts['val']}, test {counts['test']} ({how})."
    if counts["val"] == 0:
        raise ClassbenchError(f"{config.data}: the split has no validation images; use --val > 0 or add images")
    return result.manifest, note


def _write_config(run_dir: Path, config: TrainConfig, manifest: Any, trainer: Any) -> None:
    split_path = run_dir / "split.csv"
    atomic_write_yaml(run_dir / "config.yaml", {
        "command": command_line(),
        "args": {k: v for k, v in config.to_dict().items() if k != "resolved"},
        "resolved": config.resolved,
        "split": {"path": str(split_path), "sha256": manifest.sha256(), "classes": manifest.classes,
                  "counts": manifest.split_counts()},
        "trainer": {"accelerator": type(trainer.accelerator).__name__, "world_size": trainer.world_size},
        "environment": environment_info(),
    })


def _finish(run_dir: Path, recorder: Any, manifest: Any, loaders: Any, wall: float, trainer: Any,
            config: TrainConfig) -> TrainResult:
    rows = recorder.rows
    best = next((r for r in rows if r["epoch"] == recorder.best_epoch), {})
    steady = [r["train_images_per_s"] for r in rows[1:]] or [r["train_images_per_s"] for r in rows]
    summary = {
        "model": config.resolved.get("architecture"),
        "epochs_run": len(rows), "epochs_planned": config.epochs,
        "stopped_early": len(rows) < config.epochs,
        "training_seconds": round(sum(r["epoch_seconds"] for r in rows), 2),
        "wall_seconds_this_session": round(wall, 2),
        "train_images_per_s": round(sum(steady) / max(len(steady), 1), 2),
        "best_epoch": recorder.best_epoch, "monitor": config.monitor, "best_value": recorder.best_value,
        "best_metrics": best,
        "class_counts": manifest.split_counts(),
        "num_params": config.resolved.get("num_params"), "img_size": config.resolved.get("img_size"),
        "precision": config.resolved.get("precision"),
    }
    atomic_write_json(run_dir / "summary.json", summary)
    return TrainResult(run_dir, recorder.best_epoch, best, summary)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's start-up chatter and the warnings that do not apply to classbench's loops, silenced for the
    body only: the host's logger levels and warning filters are restored after it."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning", "lightning.pytorch.utilities.rank_zero",
             "lightning.fabric.utilities.rank_zero")
    levels = {name: logging.getLogger(name).level for name in names}
    with warnings.catch_warnings():
        for name in names:
            logging.getLogger(name).setLevel(logging.WARNING)
        for message in (".*does not have many workers.*", ".*isn't a multiple of.*", ".*LeafSpec.*",
                        ".*Checkpoint directory.*exists and is not empty.*", ".*smaller than the logging interval.*"):
            warnings.filterwarnings("ignore", message=message)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def run_dir_env(run_dir: Path) -> Iterator[None]:
    """``$CLASSBENCH_RUN_DIR`` set to the prepared run folder for the body (Lightning's DDP launcher starts the
    other ranks as child processes, which inherit it and train into the same folder); afterwards it and the
    variables ``L.seed_everything`` sets for the same purpose (``PL_GLOBAL_SEED``, ``PL_SEED_WORKERS``) are
    restored to what the caller had."""
    names = (RUN_DIR_ENV, "PL_GLOBAL_SEED", "PL_SEED_WORKERS")
    previous = {name: os.environ.get(name) for name in names}
    os.environ[RUN_DIR_ENV] = str(Path(run_dir).resolve())
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
