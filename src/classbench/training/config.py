"""Training configuration: every argument, and how "auto" values are resolved on this machine."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classbench.data.split import DEFAULT_TEST, DEFAULT_VAL
from classbench.errors import ClassbenchError
from classbench.hub import is_hub_spec
from classbench.runs import usable_cores

BALANCE_MODES = ("auto", "none", "weights", "sampler")
BALANCE_TEXT = {"weights": "class-weighted loss", "sampler": "class-balanced sampling",
                "none": "nothing (no re-weighting, no re-sampling)"}
PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed")
MONITORS = {"val_macro_f1": "max", "val_balanced_acc": "max", "val_acc": "max", "val_loss": "min"}
DEFAULT_LR = 1e-3  # the learning rate when --lr is not given (and lr_find's fallback)
DEFAULT_GRAD_CLIP = 2.0  # gradient-norm clipping of `train`, and of `bench`'s training step
DEFAULT_CHECKPOINT_EVERY = 60.0  # seconds between last.ckpt writes at epoch ends (also: new best model, final epoch)
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")  # csv: the run's metrics.csv, always written
# logger -> (the modules any one of which it needs, the classbench extra that installs it)
LOGGER_PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"), "mlflow": (("mlflow",), "mlflow"),
                   "wandb": (("wandb",), "wandb")}


@dataclass
class TrainConfig:
    """All options of one training run (saved verbatim to ``config.yaml``)."""

    data: str
    model: str = "resnet18"
    out: str | None = None
    pretrained: bool = False
    weights: str | None = None
    epochs: int = 20
    img_size: int | None = None
    batch_size: int | str = "auto"
    balance: str = "auto"
    augment: str = "light"
    precision: str = "auto"
    patience: int | None = None
    monitor: str = "val_macro_f1"
    seed: int = 0
    lr: float | str | None = None  # None: DEFAULT_LR; "auto": Lightning's learning-rate range test (lr_find.py)
    backbone_lr_scale: float = 1.0  # drone_maritime fine-tune, 3 seeds: 0.1 -> bal. acc 0.726, 0.3 -> 0.769, 1.0 -> 0.781
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    freeze_epochs: int | None = None
    grad_clip: float = DEFAULT_GRAD_CLIP
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY
    val: float = DEFAULT_VAL
    test: float = DEFAULT_TEST
    test_per_class: int | None = None
    cache: str = "auto"
    cache_pool: str | None = None  # a manifest CSV whose images share one decoded-image cache (set by compare)
    workers: int | str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    overwrite: bool = False
    progress: bool = True
    logger: str | list[str] | tuple[str, ...] = ("csv",)  # names, each may be comma-separated: csv (always on),
    # tensorboard, mlflow, wandb (kept as given, a tuple as a list; config.resolve parses it)
    mlflow_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the SQLite store mlflow.db beside the runs
    resolved: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.logger, tuple):
            self.logger = list(self.logger)  # config.yaml holds plain lists

    def validate(self) -> None:
        _choice("--balance", self.balance, BALANCE_MODES)
        from classbench.data.transforms import AUGMENT_KINDS  # where the kinds are built

        _choice("--augment", self.augment, AUGMENT_KINDS)
        _choice("--precision", str(self.precision), PRECISIONS)
        _choice("--monitor", self.monitor, tuple(MONITORS))
        _choice("--channels-last", self.channels_last, ("auto", "on", "off"))
        if self.epochs < 1:
            raise ClassbenchError(f"--epochs must be >= 1 (got {self.epochs})")
        if self.checkpoint_every < 0:
            raise ClassbenchError(f"--checkpoint-every must be >= 0 seconds (got {self.checkpoint_every})")
        if isinstance(self.lr, str) and self.lr != "auto" or isinstance(self.lr, (int, float)) and not self.lr > 0:
            raise ClassbenchError(f"--lr must be a positive number or 'auto' (got {self.lr})")
        if self.batch_size != "auto" and int(self.batch_size) < 1:
            raise ClassbenchError(f"--batch-size must be >= 1 or 'auto' (got {self.batch_size})")
        if self.weights and self.pretrained:
            raise ClassbenchError("use either --pretrained (download) or --weights FILE, not both")
        if self.weights and not is_hub_spec(str(self.weights)) and not Path(self.weights).exists():
            raise ClassbenchError(f"{self.weights}: weights file not found; check the --weights path")
        check_installed(parse_loggers(self.logger))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @property
    def transfer(self) -> bool:
        return bool(self.pretrained or self.weights)


DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # the CLI's defaults too


@dataclass(frozen=True)
class Resolved:
    """Every "auto" of a run, decided once on this machine for this data (recorded in config.yaml)."""

    architecture: str
    img_size: int
    batch_size: int
    balance: str
    imbalance_ratio: float
    precision: str
    on_gpu: bool
    workers: int
    channels_last: bool
    lr: float
    backbone_lr: float
    freeze_epochs: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    loggers: tuple[str, ...] = ("csv",)
    mlflow_uri: str | None = None

    def with_lr(self, lr: float, backbone_lr_scale: float, transfer: bool) -> Resolved:
        """The same decisions with another learning rate (``--lr auto`` found one)."""
        return dataclasses.replace(self, lr=lr, backbone_lr=lr * backbone_lr_scale if transfer else lr)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values.update(mean=list(self.mean), std=list(self.std), loggers=list(self.loggers))
        return values


def resolve(config: TrainConfig, arch: str, train_counts: list[int]) -> Resolved:
    """The one place where a run's "auto" options become values: image size (the model's own), batch size,
    class balance, precision, device, loader workers, memory format, learning rates, head-only epochs, and the
    loggers (with MLflow's tracking URI, whose default needs ``config.out``, the run folder)."""
    import torch

    from classbench.models import check_input_size, default_config

    model_cfg = default_config(arch)
    img_size = int(config.img_size or model_cfg["img_size"])
    check_input_size(arch, img_size)
    from classbench.data.check import imbalance_ratio

    imbalance = imbalance_ratio(train_counts) or 1.0
    on_gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    lr = float(config.lr) if isinstance(config.lr, (int, float)) else DEFAULT_LR
    loggers = parse_loggers(config.logger)
    return Resolved(
        architecture=arch, img_size=img_size, batch_size=resolve_batch_size(config.batch_size, sum(train_counts)),
        balance=resolve_balance(config.balance, imbalance), imbalance_ratio=round(imbalance, 3),
        precision=resolve_precision(str(config.precision), config.accelerator), on_gpu=on_gpu,
        workers=resolve_workers(config.workers, config.cache != "off", on_gpu),
        channels_last=resolve_channels_last(config.channels_last, arch), lr=lr,
        backbone_lr=lr * config.backbone_lr_scale if config.transfer else lr,
        freeze_epochs=config.freeze_epochs if config.freeze_epochs is not None else (1 if config.transfer else 0),
        mean=tuple(model_cfg["mean"]), std=tuple(model_cfg["std"]), loggers=loggers,
        mlflow_uri=resolve_mlflow_uri(config.mlflow_uri, Path(config.out or ".")) if "mlflow" in loggers else None,
    )


def _choice(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ClassbenchError(f"{option} {value!r} is not one of: {', '.join(allowed)}")


def parse_loggers(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"csv,tensorboard"``, ``["mlflow", "wandb"]`` (items may hold commas too) or None -> the loggers, ``csv``
    first and always there, each once. An unknown name is a one-line ``ClassbenchError``."""
    items = [value] if value is None or isinstance(value, str) else list(value)
    names = [part.strip().lower() for item in items if item for part in str(item).split(",") if part.strip()]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ClassbenchError(f"--logger {unknown[0]!r} is not one of: {', '.join(LOGGERS)}")
    return tuple(dict.fromkeys(["csv", *names]))


def check_installed(loggers: Sequence[str]) -> None:
    """A logger whose package is missing: one line naming the install command (before anything is written)."""
    import importlib.util

    for name in loggers:
        modules, extra = LOGGER_PACKAGES.get(name, ((), ""))
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            raise ClassbenchError(f'--logger {name} needs the {modules[0]} package: pip install "classbench[{extra}]"')


def resolve_mlflow_uri(given: str | None, run_dir: Path) -> str:
    """``--mlflow-uri`` as given when it is a URI, a plain folder as the SQLite store ``FOLDER/mlflow.db``; else
    ``$MLFLOW_TRACKING_URI``; else the SQLite store ``mlflow.db`` beside the runs (in the enclosing compare folder
    for a compare's runs, else beside the run folder). SQLite, not a ``file:`` store: MLflow >= 3.7 refuses file
    stores unless the process opts in through an environment variable, which a library must not set for its host."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and ("://" in uri or uri.startswith("file:")):
        return uri
    folder = Path(uri) if uri else run_home(run_dir)
    return f"sqlite:///{(folder / 'mlflow.db').resolve().as_posix()}"


def run_home(run_dir: Path) -> Path:
    """The folder a run belongs to: its compare folder (the nearest of three parents with ``compare.json``),
    else the run folder's parent."""
    run_dir = Path(run_dir).absolute()
    for parent in list(run_dir.parents)[:3]:
        if (parent / "compare.json").is_file():
            return parent
    return run_dir.parent


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed where the hardware runs bf16 natively (faster), else fp32."""
    if precision != "auto":
        return precision
    import torch

    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32"
    return "bf16-mixed" if cpu_has_native_bf16() else "32"


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX (bf16 autocast is then 2-2.7x faster than fp32)."""
    from classbench.runs import cpu_info

    return bool(cpu_info().flags & {"avx512_bf16", "amx_bf16"})


def resolve_balance(balance: str, imbalance_ratio: float) -> str:
    """``auto`` turns on class-weighted loss when the training split is imbalanced beyond
    ``data.check.IMBALANCE_THRESHOLD`` (3:1), the ratio at which ``check`` warns."""
    from classbench.data.check import IMBALANCE_THRESHOLD

    if balance != "auto":
        return balance
    return "weights" if imbalance_ratio > IMBALANCE_THRESHOLD else "none"


def resolve_batch_size(batch_size: int | str, n_train: int) -> int:
    if batch_size != "auto":
        return int(batch_size)
    return max(2, min(32, n_train // 4 or 2))


def resolve_workers(workers: int | str, cached: bool, on_gpu: bool, cores: int | None = None) -> int:
    """Loader worker processes for ``"auto"``: none on few cores (or with a decoded-image cache on CPU), where extra
    processes only slow the loop; else one per core but one, at most 8. ``cores``: the CPUs this run may use
    (default: those this process may use, ``runs.usable_cores``; a Ray task passes the CPUs it was given)."""
    if workers != "auto":
        return int(workers)
    cores = cores or usable_cores()
    if cores <= 4 or (cached and not on_gpu):
        return 0
    return min(8, cores - 1)


def resolve_channels_last(setting: str, model_name: str) -> bool:
    if setting != "auto":
        return setting == "on"
    return not any(part in model_name for part in ("vit", "deit", "swin", "beit", "mixer", "test_vit"))
