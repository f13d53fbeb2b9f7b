"""``classbench bench``'s terminal output: three narrow tables (training, inference, full-run estimate) that fit
an 80-column terminal without cutting a cell, then the compare estimate lines."""

from __future__ import annotations

from typing import Any

from classbench.benchmark.rates import EXPORT_RATES
from classbench.formatting import duration, fmt


def _num(value: float | None, kind: str = "rate") -> str:
    """A number as ``formatting.fmt`` shows it, ``-`` when missing (the terminal's dash)."""
    return fmt(value, kind, missing="-")


def _table(title: str, columns: list[str], rows: list[Any]) -> Any:
    """A table whose first column (the model) is as wide as the longest name up to 24 characters (longer names
    fold onto a second line, never cut); numbers right-aligned; one space between columns, no borders."""
    from rich import box
    from rich.table import Table

    widest = min(max([len(r.model) for r in rows] + [len(columns[0])]), 24)
    table = Table(title=title, header_style="bold", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  collapse_padding=True, pad_edge=False)
    for i, name in enumerate(columns):
        text = i == 0 or name in ("backend", "precision")
        table.add_column(name, justify="left" if text else "right", overflow="fold", min_width=widest if i == 0 else None)
    return table


def training_table(rows: list[Any]) -> Any:
    """Model-only and pipeline training rates, peak memory."""
    table = _table("Training (img/s; ratio = pipeline / model-only)",
                   ["model", "px", "precision", "model-only", "pipeline", "ratio", "peak MB"], rows)
    for r in rows:
        table.add_row(r.model, str(r.img_size), r.precision, _num(r.train_images_per_s), _num(r.pipeline_images_per_s),
                      _num(r.pipeline_ratio, "ratio"), _num(r.peak_memory_mb, "int"))
    return table


def inference_table(rows: list[Any]) -> Any:
    """PyTorch and each exported runtime: img/s at the bench batch, ms at batch 1, speed vs ONNX Runtime fp32."""
    batch = rows[0].batch_size if rows else 32
    table = _table(f"Inference (img/s at batch {batch}, ms at batch 1)",
                   ["model", "backend", "precision", "img/s", "ms", "x onnx"], rows)
    for r in rows:
        base = r.exports.get("onnx", {}).get("images_per_s")
        entries = [("torch", {"images_per_s": r.infer_images_per_s, "ms_batch1": r.infer_ms_batch1,
                              "precision": "fp32"})]
        entries += [(v, r.exports[v]) for v in EXPORT_RATES if v in r.exports]
        for i, (variant, e) in enumerate(entries):
            ips = e.get("images_per_s")
            speed = f"{ips / base:.2f}" if ips and base else "-"
            if "error" in e:
                table.add_row(r.model if i == 0 else "", variant, "[dim]not run[/]", "-", "-", "-")
                continue
            table.add_row(r.model if i == 0 else "", variant, str(e.get("precision", "")), _num(ips),
                          _num(e.get("ms_batch1"), "ms"), speed)
        table.add_section()
    return table


def estimate_table(rows: list[Any]) -> Any | None:
    """The full-run estimate (with ``--data``): per epoch, whole run, one fold run and a compare; else None."""
    rows = [r for r in rows if r.estimated_run_seconds is not None]
    if not rows:
        return None
    table = _table("Full-run estimate", ["model", "epochs", "per epoch", "run", "fold run", "compare"], rows)
    for r in rows:
        fold = duration(r.estimated_fold_run_seconds) if r.estimated_fold_run_seconds is not None else "-"
        compare = duration(r.estimated_compare_seconds) if r.estimated_compare_seconds is not None else "-"
        table.add_row(r.model, str(r.epochs), duration(r.estimated_epoch_seconds or 0.0),
                      duration(r.estimated_run_seconds), fold, compare)
    return table


def render_bench(result: Any, console: Any) -> None:
    """Print a ``BenchResult``: the three tables, export errors, the compare estimate and the JSON path."""
    from rich.markup import escape

    console.print(training_table(result.rows))
    console.print(inference_table(result.rows))
    estimate = estimate_table(result.rows)
    if estimate is not None:
        console.print(estimate)
    for row in result.rows:
        for variant, entry in row.exports.items():
            if "error" in entry:
                console.print(f"[dim]{row.model} {variant} not run: {escape(entry['error'])}[/]")
        if row.estimated_compare_seconds is not None:
            console.print(f"{row.model}: {row.repeats * (row.folds or 0)} fold runs of "
                          f"{duration(row.estimated_fold_run_seconds or 0)} "
                          f"+ the refit: {duration(row.estimated_compare_seconds)} in a compare")
    total = result.estimated_compare_seconds
    if total is not None and len(result.rows) > 1:
        runs = f"{result.rows[0].repeats} x {result.rows[0].folds}" if result.rows[0].repeats > 1 else result.rows[0].folds
        console.print(f"The whole compare ({len(result.rows)} models x {runs} folds + the selected "
                      f"one's refit): about {duration(total)}")
    if result.path:
        console.print(f"Wrote {escape(str(result.path))}")
