"""Commands that train: train (one architecture), compare (a bake-off with a verdict), demo."""

from pathlib import Path
from typing import Any, Optional

import typer

from classbench.cli._app import app, devices, friendly, int_or_auto, learning_rate, names
from classbench.cli.options import (
    Augment,
    Balance,
    BatchSize,
    CheckpointEvery,
    D,
    Epochs,
    ImgSize,
    Logger,
    Lr,
    MlflowUri,
    Overwrite,
    Precision,
    Pretrained,
    Test,
    Val,
    api_defaults,
)
from classbench.comparison.core import DEFAULT_OUT, ENGINES, REPORT_MODELS
from classbench.comparison.core import demo as api_demo
from classbench.comparison.folder import ARG_DEFAULTS as COMPARE
from classbench.console import console
from classbench.formatting import duration

DEMO = api_defaults(api_demo)
FOLDS_HELP = ("K-fold cross-validation over the non-test images (the test split stays locked): every model trains on "
              "the same K folds and the verdict uses out-of-fold predictions. 'auto': 5 folds when at most 3000 "
              "non-test images (fewer if the rarest class cannot fill 5; repeated twice, see --repeats), else 1 (one "
              "split).")


@app.command()
@friendly
def train(
    data: Optional[Path] = typer.Argument(None, help="Class folders, pre-split folders or a split manifest CSV."),
    model: str = typer.Option(D["model"], "--model", "-m", help="Any timm model name, or mobilenetv2/inceptionv3/..."),
    pretrained: Pretrained = D["pretrained"],
    weights: Optional[Path] = typer.Option(None, help="Start from a local .safetensors file, a classbench run or hf-hub:ORG/NAME."),
    epochs: Epochs = D["epochs"],
    img_size: ImgSize = None,
    batch_size: BatchSize = D["batch_size"],
    balance: Balance = D["balance"],
    augment: Augment = D["augment"],
    precision: Precision = D["precision"],
    patience: Optional[int] = typer.Option(None, help="Stop after N epochs without improvement."),
    monitor: str = typer.Option(D["monitor"], help="val_macro_f1|val_balanced_acc|val_acc|val_loss."),
    freeze_epochs: Optional[int] = typer.Option(None, help="Train only the new head for N epochs first (transfer)."),
    lr: Lr = None,
    grad_clip: float = typer.Option(D["grad_clip"], help="Clip the gradient norm to this value (0 turns clipping off)."),
    checkpoint_every: CheckpointEvery = D["checkpoint_every"],
    seed: int = typer.Option(D["seed"], help="Seed for split, initialisation and order."),
    val: Val = D["val"],
    test: Test = D["test"],
    cache: str = typer.Option(D["cache"], help="auto|memory|disk|off: cache decoded, resized images."),
    accelerator: str = typer.Option(D["accelerator"], help="auto|cpu|gpu"),
    devices_: str = typer.Option(D["devices"], "--devices", help="Number of devices, or 'auto'."),
    num_nodes: int = typer.Option(D["num_nodes"], help="Nodes for multi-node DDP."),
    strategy: str = typer.Option(D["strategy"], help="auto|ddp|ddp_spawn|..."),
    compile: bool = typer.Option(D["compile"], "--compile", help="torch.compile the model (slow start, sometimes faster)."),
    folds_: int = typer.Option(1, "--folds", help="Cross-validate this one architecture over K folds first (a compare of "
                               "one model: out-of-fold estimate and label check, then the model retrained on the whole split)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<model>)."),
    overwrite: Overwrite = D["overwrite"],
    logger: Logger = D["logger"],
    mlflow_uri: MlflowUri = D["mlflow_uri"],
    resume: Optional[Path] = typer.Option(None, help="Continue an interrupted run folder from last.ckpt (with its saved options)."),
) -> None:
    """Train one architecture end to end (from scratch or pretrained) into a run folder."""
    from classbench.workflow import resume as resume_run
    from classbench.workflow import train as run_train

    if resume is not None:
        result = resume_run(resume)
    else:
        if data is None:
            raise typer.BadParameter("give DATA (or --resume RUN)")
        options = dict(
            pretrained=pretrained, weights=str(weights) if weights else None, epochs=epochs, img_size=img_size,
            batch_size=int_or_auto("--batch-size", batch_size), balance=balance, augment=augment, precision=precision,
            patience=patience, monitor=monitor, freeze_epochs=freeze_epochs, lr=learning_rate(lr), grad_clip=grad_clip,
            checkpoint_every=checkpoint_every, seed=seed, val=val, test=test, cache=cache, accelerator=accelerator,
            devices=devices(devices_), num_nodes=num_nodes, strategy=strategy, compile=compile, overwrite=overwrite,
            logger=list(logger), mlflow_uri=mlflow_uri,
        )
        if folds_ > 1:
            _cross_validate(data, model, out, folds_, options)
            return
        result = run_train(data, model=model, out=str(out) if out else None, **options)
    if result.summary:
        print_train_summary(result)


def _cross_validate(data: Path, model: str, out: Path | None, folds: int, options: dict) -> None:
    """``train --folds K``: a compare of one architecture; every option reaches each fold's run."""
    from classbench.comparison import compare as run_compare
    from classbench.comparison import render_leaderboard

    board = run_compare(data, models=[model], out=out or Path("runs") / f"{model}-cv", folds=folds, **options)
    render_leaderboard(board, console)


def print_train_summary(result: Any) -> None:
    """The two lines after a training run: its best epoch and where the run folder is."""
    s = result.summary
    best = s.get("best_metrics", {})
    console.print(
        f"[bold green]Done[/] {s.get('model')}: {s.get('epochs_run')} epochs in {duration(s.get('training_seconds'))} "
        f"({s.get('train_images_per_s')} img/s). Best epoch {s.get('best_epoch')}: val macro-F1 "
        f"{best.get('val_macro_f1')}, balanced acc {best.get('val_balanced_acc')}, acc {best.get('val_acc')}."
    )
    console.print(f"Run folder: {result.path}  (next: classbench evaluate {result.path})")


@app.command()
@friendly
def compare(
    data: Path = typer.Argument(..., help="Class folders, pre-split folders or a CSV manifest."),
    models: Optional[str] = typer.Option(None, help=f"Comma-separated names (default: {','.join(REPORT_MODELS)})."),
    epochs: Epochs = D["epochs"],
    img_size: ImgSize = None,
    pretrained: Pretrained = D["pretrained"],
    batch_size: BatchSize = D["batch_size"],
    balance: Balance = D["balance"],
    augment: Augment = D["augment"],
    precision: Precision = D["precision"],
    seed: int = typer.Option(D["seed"], help="One seed for the split, the folds and every model (fold k of repeat r "
                             "trains with SEED + r*K + k)."),
    folds_: str = typer.Option(str(COMPARE["folds"]), "--folds", help=FOLDS_HELP),
    repeats_: str = typer.Option(str(COMPARE["repeats"]), "--repeats", help="Repeat the cross-validation R times "
                                 "with fresh folds (R x K runs per model): a narrower interval over folds, R times the "
                                 "cost. 'auto': 2 when --folds auto chose folds (a small pool), else 1."),
    seeds: int = typer.Option(COMPARE["seeds"], help="Instead of folds: train every model N times (seeds SEED.."
                              "SEED+N-1) on the one split."),
    refit: bool = typer.Option(COMPARE["refit"], help="Give the selected architecture a final model (after cross-validation: "
                               "retrained on the whole split) and test it once (--no-refit: the verdict only; the test "
                               "split stays unopened)."),
    lr: Lr = None,
    val: Val = D["val"],
    test: Test = D["test"],
    preset: Optional[str] = typer.Option(None, help="'report': the seed report's protocol, side by side with an honest test."),
    engine: str = typer.Option(ENGINES[0], help="local: one run after another here. ray: the runs as Ray tasks, in "
                               "parallel on this machine's GPUs/cores or on a cluster (pip install \"classbench[ray]\")."),
    ray_address: Optional[str] = typer.Option(None, help="--engine ray: join this cluster (HOST:PORT, ray://HOST:PORT "
                                              "or auto; default RAY_ADDRESS, else a Ray started for this compare)."),
    gpus_per_run: Optional[float] = typer.Option(None, help="--engine ray: GPUs per run; fractions share a GPU "
                                                 "(0.25: four runs per GPU). Default: 1 where there are GPUs, else 0."),
    cpus_per_run: Optional[float] = typer.Option(None, help="--engine ray: CPU cores per run (its torch threads). "
                                                 "Default: the node's cores shared by its GPUs; CPU only: 4 (or all)."),
    out: Path = typer.Option(DEFAULT_OUT, help="Compare folder (re-run to resume)."),
    checkpoint_every: CheckpointEvery = D["checkpoint_every"],
    overwrite: Overwrite = D["overwrite"],
    logger: Logger = D["logger"],
    mlflow_uri: MlflowUri = D["mlflow_uri"],
) -> None:
    """Train several architectures on the same folds; a verdict (ties called ties), never chosen on test."""
    from classbench.comparison import compare as run_compare
    from classbench.comparison import render_leaderboard

    board = run_compare(
        data, models=names(models), out=out, epochs=epochs, img_size=img_size, seed=seed, preset=preset,
        folds=int_or_auto("--folds", folds_), repeats=int_or_auto("--repeats", repeats_), seeds=seeds, refit=refit,
        overwrite=overwrite, engine=engine,
        ray_address=ray_address, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run, val=val, test=test,
        pretrained=pretrained, batch_size=int_or_auto("--batch-size", batch_size), balance=balance, augment=augment,
        precision=precision, lr=learning_rate(lr), checkpoint_every=checkpoint_every,
        logger=list(logger), mlflow_uri=mlflow_uri,
    )
    render_leaderboard(board, console)


@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path(DEMO["out"]), help="Where the demo data and the compare go."),
    epochs: int = typer.Option(DEMO["epochs"], help="Epochs per model."),
    overwrite: bool = typer.Option(DEMO["overwrite"], help="Start afresh (default) or resume with --no-overwrite."),
) -> None:
    """The whole path on built-in data: imbalanced digits -> 4-model compare -> report.html."""
    from classbench.comparison import render_leaderboard

    board = api_demo(out, epochs=epochs, overwrite=overwrite)
    render_leaderboard(board, console)
