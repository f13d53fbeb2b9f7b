"""Commands that use a trained model: predict and export."""

import sys
from pathlib import Path
from typing import Optional

import typer

from classbench.cli._app import app, friendly
from classbench.cli.options import api_defaults
from classbench.console import console
from classbench.exporting import export as api_export
from classbench.predict import Classifier, render_predictions
from classbench.predict import load as api_load

X, L, P = api_defaults(api_export), api_defaults(api_load), api_defaults(Classifier.predict_batch)
SHOWN = api_defaults(render_predictions)


@app.command()
@friendly
def predict(
    run: Path = typer.Argument(..., help="A run folder, model.safetensors/model.json, or an exported .onnx."),
    paths: list[str] = typer.Argument(..., help="Images, folders (recursive) and globs ('photos/*.jpg')."),
    top_k: int = typer.Option(SHOWN["top_k"], help="Classes to show per image."),
    format: str = typer.Option("table", "--format", help="table|csv|json"),
    out: Optional[Path] = typer.Option(None, help="Write CSV/JSON here instead of stdout."),
    reject_below: Optional[float] = typer.Option(None, help="Label 'unknown' when the top probability is below P."),
    backend: str = typer.Option(L["backend"], help="auto|torch|onnx|onnx-fp16|onnx-int8|openvino|openvino-int8: the "
                                "export to run (auto: model.onnx when up to date, else PyTorch; never a "
                                "reduced-precision file unless named)."),
    batch_size: int = typer.Option(P["batch_size"], help="Images per batch."),
) -> None:
    """Predict classes with probabilities; unreadable files are reported and do not stop the batch."""
    from classbench.predict import expand_inputs, predictions_to_csv, predictions_to_json, render_predictions
    from classbench.runs import atomic_write_text

    if format not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    clf = api_load(run, backend=backend)
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
    format: str = typer.Option(X["format"], "--format", help="onnx|openvino|tensorrt|hf (tensorrt: CUDA GPU only; on a "
                               "Jetson use trtexec, docs/deploy.md; hf: a Hugging Face Hub model folder timm loads)."),
    int8: bool = typer.Option(X["int8"], "--int8", help="Static INT8 (ONNX Runtime QDQ, NNCF for OpenVINO), calibrated "
                              "on the run's training images; refused below --min-agreement."),
    fp16: bool = typer.Option(X["fp16"], "--fp16", help="Half-precision weights (float32 inputs/outputs kept)."),
    min_agreement: float = typer.Option(X["min_agreement"], help="INT8: refuse when top-1 agreement with PyTorch is below this."),
    parity_split: str = typer.Option(X["parity_split"], help="val|test: the split of the run's split.csv parity is measured on."),
    calibration_images: int = typer.Option(X["calibration_images"], help="INT8: training images to calibrate on (a seeded sample)."),
    opset: Optional[int] = typer.Option(X["opset"], help="ONNX opset (default 17; 13 for older TensorRT)."),
    dynamic_batch: bool = typer.Option(X["dynamic_batch"], help="Dynamic batch axis (--no-dynamic-batch for a fixed batch of 1)."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: inside the run folder)."),
) -> None:
    """Export for deployment (ONNX, OpenVINO, TensorRT) and show its top-1 agreement with PyTorch per class."""
    if format == "hf":  # a model folder to share, not a runtime: no parity to check
        from classbench.hub import export_hf

        folder = export_hf(run, out or run / "hf")
        console.print(f"Wrote {folder} (config.json, model.safetensors, model.json, README.md); upload it with "
                      f"classbench push {run} ORG/NAME", soft_wrap=True)
        return
    from classbench.exporting import render_export

    result = api_export(run, format=format, opset=opset, dynamic_batch=dynamic_batch, fp16=fp16, int8=int8, out=out,
                        min_agreement=min_agreement, parity_split=parity_split, calibration_images=calibration_images)
    render_export(result, console)
