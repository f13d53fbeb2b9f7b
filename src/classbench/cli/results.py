"""Commands that measure and report: evaluate, report, bench."""

from pathlib import Path
from typing import Optional

import typer

from classbench.benchmark.core import bench as api_bench
from classbench.cli._app import app, friendly, names
from classbench.cli.options import Precision, api_defaults
from classbench.console import console
from classbench.evaluation import evaluate as api_evaluate

E, B = api_defaults(api_evaluate), api_defaults(api_bench)


@app.command()
@friendly
def evaluate(
    run: Path = typer.Argument(..., help="A run folder (or its model.safetensors)."),
    split: str = typer.Option(E["split"], help="test|val: which split of the run's own split.csv."),
    data: Optional[Path] = typer.Option(None, help="Evaluate on another folder or CSV instead (held-out data)."),
    tta: bool = typer.Option(E["tta"], "--tta", help="Average predictions over flips."),
    batch_size: int = typer.Option(E["batch_size"], help="Images per inference batch."),
) -> None:
    """Per-class truth on the locked test split: metrics with CIs, confusion, calibration, mistakes."""
    from classbench.evaluation import render_eval

    result = api_evaluate(run, split=split, data=data, tta=tta, batch_size=batch_size)
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
    models: str = typer.Option(",".join(B["models"]), help="Comma-separated model names."),
    img_size: Optional[int] = typer.Option(B["img_size"], help="Input size (default: each model's own)."),
    batch_size: int = typer.Option(B["batch_size"], help="Batch size."),
    precision: Precision = B["precision"],
    data: Optional[Path] = typer.Option(None, help="Also measure the real data pipeline and estimate a full run."),
    epochs: int = typer.Option(B["epochs"], help="Epochs for the full-run estimate."),
    steps: int = typer.Option(B["steps"], help="Timed steps per measurement."),
    folds: int = typer.Option(B["folds"], help="With --data: also estimate a compare --folds K (K fold runs per model + the refit)."),
    repeats: int = typer.Option(B["repeats"], help="With --folds: the compare's --repeats R (R x K fold runs per model)."),
    exports: str = typer.Option("all", help="Exported runtimes to time on the CPU: all, none, or some of "
                                "onnx,onnx-int8,openvino,openvino-int8."),
    json_out: Path = typer.Option(Path("bench.json"), "--json", help="Where to write the JSON results."),
) -> None:
    """Measure training/inference speed and memory here, and what a full run would cost."""
    from classbench.benchmark import EXPORT_RATES, render_bench

    keyword = {"all": list(EXPORT_RATES), "none": []}
    chosen = keyword[exports.strip()] if exports.strip() in keyword else names(exports) or []
    result = api_bench(names(models) or [], img_size=img_size, batch_size=batch_size, precision=precision, data=data,
                       epochs=epochs, steps=steps, out=json_out, folds=folds, repeats=repeats,
                       exports=chosen)
    render_bench(result, console)
