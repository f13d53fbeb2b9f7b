"""Commands that measure and report: evaluate, report, bench."""

from pathlib import Path
from typing import Optional

import typer

from classbench.cli._app import app, friendly, names
from classbench.cli.options import D, Precision
from classbench.console import console


@app.command()
@friendly
def evaluate(
    run: Path = typer.Argument(..., help="A run folder (or its model.safetensors)."),
    split: str = typer.Option("test", help="test|val: which split of the run's own split.csv."),
    data: Optional[Path] = typer.Option(None, help="Evaluate on another folder or CSV instead (held-out data)."),
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
def report(run: Path = typer.Argument(..., help="A compare folder or a run folder.")) -> None:
    """(Re)generate the self-contained report.html for a compare or a run."""
    from classbench.report.html import build_report

    console.print(f"Wrote {build_report(run)}")


@app.command()
@friendly
def bench(
    models: str = typer.Option("resnet18", help="Comma-separated model names."),
    img_size: Optional[int] = typer.Option(None, help="Input size (default: each model's own)."),
    batch_size: int = typer.Option(32, help="Batch size."),
    precision: Precision = D["precision"],
    data: Optional[Path] = typer.Option(None, help="Also measure the real data pipeline and estimate a full run."),
    epochs: int = typer.Option(D["epochs"], help="Epochs for the full-run estimate."),
    steps: int = typer.Option(6, help="Timed steps per measurement."),
    folds: int = typer.Option(1, help="With --data: also estimate a compare --folds K (K fold runs per model + the refit)."),
    repeats: int = typer.Option(1, help="With --folds: the compare's --repeats R (R x K fold runs per model)."),
    exports: str = typer.Option("all", help="Exported runtimes to time on the CPU: all, none, or some of "
                                "onnx,onnx-int8,openvino,openvino-int8."),
    json_out: Path = typer.Option(Path("bench.json"), "--json", help="Where to write the JSON results."),
) -> None:
    """Measure training/inference speed and memory here, and what a full run would cost."""
    from classbench.benchmark import EXPORT_RATES, render_bench
    from classbench.benchmark import bench as run_bench

    keyword = {"all": list(EXPORT_RATES), "none": []}
    chosen = keyword[exports.strip()] if exports.strip() in keyword else names(exports) or []
    result = run_bench(names(models) or [], img_size=img_size, batch_size=batch_size, precision=precision, data=data,
                       epochs=epochs, steps=steps, out=json_out, folds=folds, repeats=repeats,
                       exports=chosen)
    render_bench(result, console)
