"""Commands of the data stage: check, split, demo-data."""

from pathlib import Path
from typing import Optional

import typer

from classbench.cli._app import app, friendly
from classbench.cli.options import D, Data, api_defaults
from classbench.console import console
from classbench.data.demo import demo as api_demo_data

DEMO_DATA = api_defaults(api_demo_data)


@app.command()
@friendly
def check(
    data: Data,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the findings as JSON to this file."),
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
    data: Data,
    val: float = typer.Option(D["val"], help="Fraction of each class for validation."),
    test: float = typer.Option(D["test"], help="Fraction of each class locked away for the final test."),
    test_per_class: Optional[int] = typer.Option(None, help="Exactly N test images per class (the report's recipe)."),
    seed: int = typer.Option(D["seed"], help="Seed: the same seed gives the same split on any machine."),
    out: Path = typer.Option(Path("split.csv"), help="Manifest CSV to write (path,label,split,group)."),
    materialize: Optional[Path] = typer.Option(None, help="Also hard-link files into DIR/train|val|test/<class>/."),
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
    imbalance: float = typer.Option(DEMO_DATA["imbalance"], help="Largest class is this many times the smallest "
                                    "(1 = keep all)."),
    seed: int = typer.Option(DEMO_DATA["seed"], help="Seed of the subsample: the same seed, the same files."),
) -> None:
    """Write the built-in demo dataset (scikit-learn's real handwritten digits) as class folders."""
    path = api_demo_data(out, imbalance=imbalance, seed=seed)
    console.print(f"Wrote demo dataset to {path}")
