"""The ``classbench`` command: a thin Typer layer over the Python API (no logic of its own)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from classbench.comparison.folder import ARG_DEFAULTS as COMPARE
from classbench.console import console
from classbench.training.config import DEFAULTS as D

app = typer.Typer(
    name="classbench",
    help="Train, compare, evaluate and export image classifiers on your own folders of images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
LR_HELP = ("Learning rate (default 1e-3), or 'auto': Lightning's learning-rate range test picks one per "
           "architecture (recorded in config.yaml).")
FOLDS_HELP = ("K-fold cross-validation over the non-test images (the test split stays locked): every model trains on "
              "the same K folds and the verdict uses out-of-fold predictions. 'auto': 5 folds when at most 3000 "
              "non-test images (fewer if the rarest class cannot fill 5), else 1 (one split).")
CHECKPOINT_EVERY_HELP = ("Write last.ckpt at the end of an epoch once this many seconds have passed since the last write "
                         "(0: every epoch); also after a new best model and after the final epoch.")


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing errors into one red line and a non-zero exit code (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rich.markup import escape

        from classbench.errors import ClassbenchError

        try:
            return func(*args, **kwargs)
        except ClassbenchError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except PermissionError as err:
            console.print(f"[bold red]error:[/] {escape(str(err.filename))}: permission denied; choose a writable "
                          "location", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


# -- data ------------------------------------------------------------------------------------
@app.command()
@friendly
def check(
    data: Path = typer.Argument(..., help="Class folders, pre-split folders (train/val/test) or a CSV manifest."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the findings as JSON to this file."),
) -> None:
    """Scan a dataset: class counts, imbalance, broken files, duplicates and label conflicts."""
    from classbench.data.check import check as run_check
    from classbench.data.check import render_check
    from classbench.runs import atomic_write_json

    report = run_check(data)
    render_check(report, console)
    if json_out:
        atomic_write_json(json_out, report.to_dict())
        console.print(f"Wrote {json_out}")
    if not report.usable:
        raise typer.Exit(1)


@app.command()
@friendly
def split(
    data: Path = typer.Argument(..., help="Class folders, pre-split folders or a CSV manifest."),
    val: float = typer.Option(0.2, help="Fraction of each class for validation."),
    test: float = typer.Option(0.1, help="Fraction of each class locked away for the final test."),
    test_per_class: int | None = typer.Option(None, help="Exactly N test images per class (the report's recipe)."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same split on any machine."),
    out: Path = typer.Option(Path("split.csv"), help="Manifest CSV to write (path,label,split,group)."),
    materialize: Path | None = typer.Option(None, help="Also hard-link files into DIR/train|val|test/<class>/."),
) -> None:
    """Make a stratified, seeded, leakage-aware train/val/test split."""
    from classbench.data.split import render_split
    from classbench.data.split import split as run_split

    result = run_split(data, val=val, test=test, test_per_class=test_per_class, seed=seed, out=out,
                       materialize=materialize)
    render_split(result, console)


@app.command("demo-data")
@friendly
def demo_data(
    out: Path = typer.Argument(Path("demo-data"), help="Folder to write the demo dataset into."),
    imbalance: float = typer.Option(10.0, help="Largest class is this many times the smallest (1 = keep all)."),
    seed: int = typer.Option(0),
) -> None:
    """Write the built-in demo dataset (scikit-learn's real handwritten digits) as class folders."""
    from classbench.data.demo import demo

    path = demo(out, imbalance=imbalance, seed=seed)
    console.print(f"Wrote demo dataset to {path}")


# -- training --------------------------------------------------------------------------------
@app.command()
@friendly
def train(
    data: Path | None = typer.Argument(None, help="Class folders, pre-split folders or a split manifest CSV."),
    model: str = typer.Option(D["model"], "--model", "-m", help="Any timm model name, or mobilenetv2/inceptionv3/..."),
    pretrained: bool = typer.Option(D["pretrained"], help="Start from the model's pretrained weights (downloads via timm)."),
    weights: Path | None = typer.Option(None, help="Start from a local .safetensors file or a classbench run."),
    epochs: int = typer.Option(D["epochs"], help="Training epochs."),
    img_size: int | None = typer.Option(None, help="Input size in pixels (default: the model's own)."),
    batch_size: str = typer.Option(D["batch_size"], help="Batch size or 'auto'."),
    balance: str = typer.Option(D["balance"], help="auto|none|weights|sampler: how class imbalance is handled."),
    augment: str = typer.Option(D["augment"], help="none|light|strong|aerial (aerial adds vertical flips and 90° turns)."),
    precision: str = typer.Option(D["precision"], help="auto|32|bf16-mixed|16-mixed (auto: bf16 where it is native)."),
    patience: int | None = typer.Option(None, help="Stop after N epochs without improvement."),
    monitor: str = typer.Option(D["monitor"], help="val_macro_f1|val_balanced_acc|val_acc|val_loss."),
    freeze_epochs: int | None = typer.Option(None, help="Train only the new head for N epochs first (transfer)."),
    lr: Optional[str] = typer.Option(None, help=LR_HELP),
    grad_clip: float = typer.Option(D["grad_clip"], help="Clip the gradient norm to this value (0 turns clipping off)."),
    checkpoint_every: float = typer.Option(D["checkpoint_every"], help=CHECKPOINT_EVERY_HELP),
    seed: int = typer.Option(D["seed"], help="Seed for split, initialisation and order."),
    val: float = typer.Option(D["val"], help="Validation fraction when classbench makes the split."),
    test: float = typer.Option(D["test"], help="Test fraction when classbench makes the split."),
    cache: str = typer.Option(D["cache"], help="auto|memory|disk|off: cache decoded, resized images."),
    accelerator: str = typer.Option(D["accelerator"], help="auto|cpu|gpu"),
    devices: str = typer.Option(D["devices"], help="Number of devices, or 'auto'."),
    num_nodes: int = typer.Option(D["num_nodes"], help="Nodes for multi-node DDP."),
    strategy: str = typer.Option(D["strategy"], help="auto|ddp|ddp_spawn|..."),
    compile: bool = typer.Option(D["compile"], "--compile", help="torch.compile the model (slow start, sometimes faster)."),
    folds: int = typer.Option(1, help="Cross-validate this one architecture over K folds first (a compare of one "
                              "model: out-of-fold estimate and label check, then the model retrained on the whole split)."),
    out: Path | None = typer.Option(None, help="Run folder (default runs/<model>)."),
    overwrite: bool = typer.Option(D["overwrite"], help="Replace an existing run folder."),
    resume: Path | None = typer.Option(None, help="Continue an interrupted run folder from last.ckpt (with its saved options)."),
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
            batch_size=_int_or_auto("--batch-size", batch_size), balance=balance, augment=augment, precision=precision,
            patience=patience, monitor=monitor, freeze_epochs=freeze_epochs, lr=_lr(lr), grad_clip=grad_clip,
            checkpoint_every=checkpoint_every, seed=seed, val=val, test=test, cache=cache, accelerator=accelerator,
            devices=_devices(devices), num_nodes=num_nodes, strategy=strategy, compile=compile, overwrite=overwrite,
        )
        if folds > 1:  # a compare of one architecture: every option reaches each fold's run
            from classbench.comparison import compare as run_compare
            from classbench.comparison import render_leaderboard

            board = run_compare(data, models=[model], out=out or Path("runs") / f"{model}-cv", folds=folds, **options)
            render_leaderboard(board, console)
            return
        result = run_train(data, model=model, out=str(out) if out else None, **options)
    if result.summary:
        _print_train_summary(result)


def _int_or_auto(option: str, value: str) -> int | str:
    """'auto' or a positive integer, else a one-line error."""
    from classbench.errors import ClassbenchError

    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise ClassbenchError(f"{option} must be a whole number or 'auto' (got {value!r})") from None
    if number < 1:
        raise ClassbenchError(f"{option} must be >= 1 (got {number})")
    return number


def _lr(value: str | None) -> float | str | None:
    """None (the default), 'auto', or a positive number; else a one-line error."""
    from classbench.errors import ClassbenchError

    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise ClassbenchError(f"--lr must be a number or 'auto' (got {value!r})") from None
    if not number > 0:
        raise ClassbenchError(f"--lr must be > 0 (got {number})")
    return number


def _folds(value: str) -> int | str:
    """'auto' or a whole number >= 1."""
    return "auto" if value == "auto" else _int_or_auto("--folds", value)


def _devices(value: str) -> int | str:
    """'auto', a count ('2') or a device list ('0,1') passed through to Lightning."""
    return int(value) if value.isdigit() else value


def _print_train_summary(result: Any) -> None:
    s = result.summary
    best = s.get("best_metrics", {})
    console.print(
        f"[bold green]Done[/] {s.get('model')}: {s.get('epochs_run')} epochs in {s.get('training_seconds')} s "
        f"({s.get('train_images_per_s')} img/s). Best epoch {s.get('best_epoch')}: val macro-F1 "
        f"{best.get('val_macro_f1')}, balanced acc {best.get('val_balanced_acc')}, acc {best.get('val_acc')}."
    )
    console.print(f"Run folder: {result.path}  (next: classbench evaluate {result.path})")


# -- prediction and export ------------------------------------------------------------------
@app.command()
@friendly
def predict(
    run: Path = typer.Argument(..., help="A run folder, model.safetensors/model.json, or an exported .onnx."),
    paths: list[str] = typer.Argument(..., help="Images, folders (recursive) and globs ('photos/*.jpg')."),
    top_k: int = typer.Option(3, help="Classes to show per image."),
    format: str = typer.Option("table", "--format", help="table|csv|json"),
    out: Optional[Path] = typer.Option(None, help="Write CSV/JSON here instead of stdout."),
    reject_below: Optional[float] = typer.Option(None, help="Label 'unknown' when the top probability is below P."),
    backend: str = typer.Option("auto", help="auto|torch|onnx (auto: ONNX Runtime when an up-to-date export exists)."),
    batch_size: int = typer.Option(32, help="Images per batch."),
) -> None:
    """Predict classes with probabilities; unreadable files are reported and do not stop the batch."""
    from classbench.predict import expand_inputs, load, predictions_to_csv, predictions_to_json, render_predictions
    from classbench.runs import atomic_write_text

    if format not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    clf = load(run, backend=backend)
    files, problems = expand_inputs(paths)
    preds = problems + clf.predict_batch(files, batch_size=batch_size, top_k=top_k, reject_below=reject_below)
    if format == "table":
        if out:
            raise typer.BadParameter("--out needs --format csv or json")
        if getattr(clf, "note", None):
            console.print(clf.note, markup=False, style="dim")
        render_predictions(preds, console, top_k=top_k)
    else:
        text = predictions_to_csv(preds, top_k) if format == "csv" else predictions_to_json(preds, top_k)
        if out:
            atomic_write_text(out, text)
            console.print(f"Wrote {len(preds)} predictions to {out}")
        else:
            sys.stdout.write(text)
    failed = sum(1 for p in preds if p.error)
    if failed:
        console.print(f"[yellow]{failed} of {len(preds)} inputs could not be read (listed above with reasons)[/]")
        if failed == len(preds):
            raise typer.Exit(1)


@app.command()
@friendly
def export(
    run: Path = typer.Argument(..., help="A run folder."),
    format: str = typer.Option("onnx", "--format", help="onnx (the one format: ONNX Runtime, TensorRT, OpenVINO)."),
    opset: Optional[int] = typer.Option(None, help="ONNX opset (default 17; 13 for older TensorRT)."),
    dynamic_batch: bool = typer.Option(True, help="Dynamic batch axis (--no-dynamic-batch for a fixed batch of 1)."),
    fp16: bool = typer.Option(False, "--fp16", help="Half-precision weights (float32 inputs/outputs kept)."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: inside the run folder)."),
) -> None:
    """Export for deployment (ONNX for ONNX Runtime / TensorRT on Jetson) and check parity with PyTorch."""
    from classbench.exporting import export as run_export
    from classbench.exporting import render_export

    result = run_export(run, format=format, opset=opset, dynamic_batch=dynamic_batch, fp16=fp16, out=out)
    render_export(result, console)


# -- evaluation and reports ------------------------------------------------------------------
@app.command()
@friendly
def evaluate(
    run: Path = typer.Argument(..., help="A run folder (or its model.safetensors)."),
    split: str = typer.Option("test", help="test|val: which split of the run's own split.csv."),
    data: Path | None = typer.Option(None, help="Evaluate on another folder or CSV instead (held-out data)."),
    tta: bool = typer.Option(False, "--tta", help="Average predictions over flips."),
    batch_size: int = typer.Option(64, help="Images per inference batch."),
) -> None:
    """Per-class truth on the locked test split: metrics with CIs, confusion, calibration, mistakes."""
    from classbench.evaluation import evaluate as run_evaluate
    from classbench.evaluation import render_eval

    result = run_evaluate(run, split=split, data=data, tta=tta, batch_size=batch_size)
    render_eval(result, console)


@app.command()
@friendly
def compare(
    data: Path = typer.Argument(..., help="Class folders, pre-split folders or a CSV manifest."),
    models: Optional[str] = typer.Option(None, help="Comma-separated names (default: densenet121,inception_v3,mobilenetv2,resnet50)."),
    epochs: int = typer.Option(D["epochs"], help="Epoch budget, the same for every model."),
    img_size: int | None = typer.Option(None, help="Force one input size for all (default: each model's own)."),
    pretrained: bool = typer.Option(D["pretrained"], help="Fine-tune pretrained weights instead of training from scratch."),
    batch_size: str = typer.Option(D["batch_size"], help="Batch size or 'auto'."),
    balance: str = typer.Option(D["balance"], help="auto|none|weights|sampler"),
    augment: str = typer.Option(D["augment"], help="none|light|strong|aerial"),
    precision: str = typer.Option(D["precision"], help="auto|32|bf16-mixed|16-mixed"),
    seed: int = typer.Option(D["seed"], help="One seed for the split, the folds and every model."),
    folds: str = typer.Option(str(COMPARE["folds"]), help=FOLDS_HELP),
    seeds: int = typer.Option(COMPARE["seeds"], help="Instead of folds: train every model N times (seeds SEED.."
                              "SEED+N-1) on the one split."),
    refit: bool = typer.Option(COMPARE["refit"], help="Give the selected architecture a final model (after cross-validation: "
                               "retrained on the whole split) and test it once (--no-refit: the verdict only; the test "
                               "split stays unopened)."),
    lr: Optional[str] = typer.Option(None, help=LR_HELP),
    val: float = typer.Option(D["val"], help="Validation fraction."),
    test: float = typer.Option(D["test"], help="Locked test fraction."),
    preset: str | None = typer.Option(None, help="'report': the seed report's protocol, side by side with an honest test."),
    parallel: bool = typer.Option(False, "--parallel", help="Spread the runs over the GPUs of this machine."),
    out: Path = typer.Option(Path("runs/compare"), help="Compare folder (re-run to resume)."),
    checkpoint_every: float = typer.Option(D["checkpoint_every"], help=CHECKPOINT_EVERY_HELP),
    overwrite: bool = typer.Option(D["overwrite"], help="Start the compare folder afresh."),
) -> None:
    """Train several architectures on the same folds; a verdict (ties called ties), never chosen on test."""
    from classbench.comparison import compare as run_compare
    from classbench.comparison import render_leaderboard

    board = run_compare(
        data, models=[m.strip() for m in models.split(",") if m.strip()] if models else None, out=out, epochs=epochs, img_size=img_size,
        seed=seed, preset=preset, folds=_folds(folds), seeds=seeds, refit=refit, parallel=parallel, overwrite=overwrite,
        val=val, test=test, pretrained=pretrained, batch_size=_int_or_auto("--batch-size", batch_size), balance=balance,
        augment=augment, precision=precision, lr=_lr(lr), checkpoint_every=checkpoint_every,
    )
    render_leaderboard(board, console)


@app.command()
@friendly
def report(run: Path = typer.Argument(..., help="A compare folder or a run folder.")) -> None:
    """(Re)generate the self-contained report.html for a compare or a run."""
    from classbench.report.html import build_report

    console.print(f"Wrote {build_report(run)}")


@app.command()
@friendly
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Where the demo data and the compare go."),
    epochs: int = typer.Option(8, help="Epochs per model."),
    overwrite: bool = typer.Option(True, help="Start afresh (default) or resume with --no-overwrite."),
) -> None:
    """The whole path on built-in data: imbalanced digits -> 4-model compare -> report.html."""
    from classbench.comparison import demo as run_demo
    from classbench.comparison import render_leaderboard

    board = run_demo(out, epochs=epochs, overwrite=overwrite)
    render_leaderboard(board, console)


@app.command()
@friendly
def bench(
    models: str = typer.Option("resnet18", help="Comma-separated model names."),
    img_size: Optional[int] = typer.Option(None, help="Input size (default: each model's own)."),
    batch_size: int = typer.Option(32, help="Batch size."),
    precision: str = typer.Option(D["precision"], help="auto|32|bf16-mixed|16-mixed"),
    data: Optional[Path] = typer.Option(None, help="Also measure the real data pipeline and estimate a full run."),
    epochs: int = typer.Option(D["epochs"], help="Epochs for the full-run estimate."),
    steps: int = typer.Option(6, help="Timed steps per measurement."),
    folds: int = typer.Option(1, help="With --data: also estimate a compare --folds K (K fold runs per model + the refit)."),
    json_out: Path = typer.Option(Path("bench.json"), "--json", help="Where to write the JSON results."),
) -> None:
    """Measure training/inference speed and memory here, and what a full run would cost."""
    from classbench.benchmark import bench as run_bench
    from classbench.benchmark import render_bench

    result = run_bench([m.strip() for m in models.split(",") if m.strip()], img_size=img_size, batch_size=batch_size,
                       precision=precision, data=data, epochs=epochs, steps=steps, out=json_out, folds=folds)
    render_bench(result, console)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exit_:
        sys.exit(exit_.code)


if __name__ == "__main__":
    main()
