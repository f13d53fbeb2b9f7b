"""The command that shows where a trained model looks: explain (class activation maps)."""

from pathlib import Path
from typing import Any, Optional

import typer

from classbench.cli._app import app, friendly
from classbench.cli.options import api_defaults
from classbench.console import console
from classbench.explain import METHODS, explain_files
from classbench.formatting import duration

EXPLAIN = api_defaults(explain_files)


@app.command()
@friendly
def explain(
    run: Path = typer.Argument(..., help="A run folder (or its model.safetensors)."),
    paths: list[str] = typer.Argument(..., help="Images, folders (recursive) and globs ('photos/*.jpg')."),
    method: str = typer.Option(EXPLAIN["method"], help=f"{', '.join(list(METHODS)[:-1])} or {list(METHODS)[-1]}."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Explain this class (default: the predicted one)."),
    layer: Optional[str] = typer.Option(None, help="Layer to take the map at (default: picked for the architecture)."),
    out: Optional[Path] = typer.Option(None, help="Folder for the overlay PNGs (default: RUN/explain)."),
    batch_size: int = typer.Option(EXPLAIN["batch_size"], help="Images per batch."),
) -> None:
    """Heatmaps of where the model looked (Grad-CAM and friends): one overlay PNG per image with its prediction."""
    result = explain_files(run, paths, method=method, target=class_name, layer=layer, out=out, batch_size=batch_size)
    _render(result)
    if result.problems:
        console.print(f"[yellow]{len(result.problems)} input(s) could not be explained (listed above with reasons)[/]")


def _render(result: Any) -> None:
    """A table of the images (prediction, truth, overlay file), the unreadable inputs in red, where they went."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for col in ("image", "predicted", "true", "heatmap of", "overlay"):
        table.add_column(col, overflow="fold")
    for exp, file in zip(result.explanations, result.files):
        wrong = exp.true is not None and exp.true != exp.predicted
        table.add_row(escape(str(exp.path)), escape(f"{exp.predicted} ({exp.probability:.2f})"),
                      f"[red]{escape(exp.true)}[/]" if wrong else escape(exp.true or "-"), escape(exp.target),
                      escape(file.name))
    console.print(table)
    for path, reason in result.problems:
        console.print(f"[red]{escape(path)}: {escape(reason)}[/]", soft_wrap=True)
    how = next((f" ({e.method} at layer {e.layer})" for e in result.explanations), "")
    console.print(f"Wrote {len(result.files)} heatmap overlay(s) to {escape(str(result.out_dir) + how)} "
                  f"in {duration(result.seconds)}")
