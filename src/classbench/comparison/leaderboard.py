"""The leaderboard of a compare: one row per architecture in verdict order (never sorted by test), written as
CSV and Markdown, drawn as figures and rendered for the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classbench.formatting import duration, fmt, md
from classbench.intervals import interval_text
from classbench.runs import atomic_write_csv, atomic_write_text, read_json, read_metrics

LEADERBOARD_COLUMNS = [
    "model", "architecture", "status", "heldout_macro_f1", "delta", "delta_low", "delta_high", "fold_delta_low",
    "fold_delta_high", "fold_mean", "fold_std", "fold_low", "fold_high", "replicates", "params", "img_size", "lr", "train_seconds",
    "train_images_per_s", "infer_ms_batch1", "infer_images_per_s_batch32", "heldout_worst_class_recall",
    "heldout_worst_class", "test_acc", "test_acc_low", "test_acc_high", "test_macro_f1", "test_macro_f1_low",
    "test_macro_f1_high", "test_balanced_acc", "test_balanced_acc_low", "test_balanced_acc_high", "worst_class_recall",
    "worst_class", "ece", "run_dir",
]
TEST_METRICS = {"test_acc": "accuracy", "test_macro_f1": "macro_f1", "test_balanced_acc": "balanced_accuracy"}
MARKDOWN_COLUMNS = ["model", "status", "heldout_macro_f1", "delta", "delta_low", "delta_high", "fold_delta_low",
                    "fold_delta_high", "fold_mean", "fold_std",
                    "params", "img_size", "train_seconds", "infer_ms_batch1", "test_macro_f1", "test_balanced_acc",
                    "test_acc"]


def measure_inference(run_dir: Path) -> dict[str, Any]:
    """Batch-1 latency (ms) and batch-32 throughput (img/s) of the model users get, in fp32 (bench's timer)."""
    from classbench.benchmark.rates import time_runner
    from classbench.predict import load

    clf = load(run_dir, backend="torch")
    images_per_s, ms = time_runner(clf.logits, 32, clf.img_size)
    return {"ms_batch1": ms, "images_per_s_batch32": images_per_s, "backend": clf.backend}


def _r(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, (int, float)) else value


def build_row(standing: dict[str, Any], runs: list[Path], final: Path | None, heldout_worst: tuple[Any, Any],
              lr: float | None) -> dict[str, Any]:
    """One architecture's row: the verdict numbers, cost (mean over its runs), and test for the final model."""
    summaries = [read_json(r / "summary.json") for r in runs]
    first = summaries[0]
    inference = read_json(runs[0] / "inference.json") if (runs[0] / "inference.json").is_file() else {}
    test: dict[str, Any] = {}
    ci: dict[str, Any] = {}
    if final is not None and (final / "eval.json").is_file():
        ev = read_json(final / "eval.json")
        test, ci = ev.get("metrics", {}), ev.get("ci95", {})
    intervals = {f"{column}_{end}": _r((ci.get(key) or [None, None])[i])
                 for column, key in TEST_METRICS.items() for i, end in enumerate(("low", "high"))}
    delta_ci = standing.get("delta_ci") or [None, None]
    fold_delta_ci = standing.get("fold_delta_ci") or [None, None]
    fold_ci = standing.get("fold_ci") or [None, None]

    def mean(key: str) -> float | None:
        values = [s[key] for s in summaries if isinstance(s.get(key), (int, float))]
        return round(sum(values) / len(values), 2) if values else None

    return {
        "model": standing["name"], "architecture": first.get("model"), "status": standing["status"],
        "heldout_macro_f1": _r(standing["score"]), "delta": _r(standing["delta"]) if standing["status"] != "best" else None,
        "delta_low": _r(delta_ci[0]), "delta_high": _r(delta_ci[1]),
        "fold_delta_low": _r(fold_delta_ci[0]), "fold_delta_high": _r(fold_delta_ci[1]), "fold_mean": _r(standing.get("fold_mean")),
        "fold_std": _r(standing.get("fold_std")), "fold_low": _r(fold_ci[0]), "fold_high": _r(fold_ci[1]),
        "replicates": len(runs), "params": first.get("num_params"), "img_size": first.get("img_size"),
        "lr": lr, "train_seconds": mean("training_seconds"), "train_images_per_s": mean("train_images_per_s"),
        "infer_ms_batch1": inference.get("ms_batch1"), "infer_images_per_s_batch32": inference.get("images_per_s_batch32"),
        "heldout_worst_class_recall": _r(heldout_worst[1]), "heldout_worst_class": heldout_worst[0],
        **{column: _r(test.get(key)) for column, key in TEST_METRICS.items()}, **intervals,
        "worst_class_recall": _r(test.get("worst_class_recall")),
        "worst_class": test.get("worst_class"), "ece": _r(test.get("ece")),
        "run_dir": str(final) if final is not None else "",
    }


def write_leaderboard(out: Path, rows: list[dict[str, Any]], sentence: str) -> None:
    """``leaderboard.csv`` (every column) and ``leaderboard.md`` (the verdict sentence, then the key columns)."""
    atomic_write_csv(out / "leaderboard.csv", rows, LEADERBOARD_COLUMNS)
    lines = [f"**Verdict:** {md(sentence)}", "", "| " + " | ".join(MARKDOWN_COLUMNS) + " |",
             "|" + "---|" * len(MARKDOWN_COLUMNS)]
    lines += ["| " + " | ".join(md(row.get(c)) for c in MARKDOWN_COLUMNS) + " |" for row in rows]
    atomic_write_text(out / "leaderboard.md", "\n".join(lines) + "\n")


def write_figures(out: Path, rows: list[dict[str, Any]], first_runs: dict[str, Path], standings: list[dict]) -> None:
    """Curves (first run of each model), training time and score vs time (per run), class counts, verdict."""
    from classbench.data.manifest import Manifest
    from classbench.report import plots
    from classbench.report.verdict_plot import plot_verdict

    curves = {name: read_metrics(run) for name, run in first_runs.items()}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        plots.plot_curves_grid(curves, out / "curves_grid.png")
    names = [r["model"] for r in rows]
    seconds = [r["train_seconds"] for r in rows]
    plots.plot_training_time(names, seconds, out / "training_time.png")
    plots.plot_score_vs_time(names, [r["heldout_macro_f1"] for r in rows], seconds, out / "score_vs_time.png",
                             score_label="held-out macro-F1")
    plot_verdict(standings, out / "verdict.png")
    manifest = Manifest.load(out / "split.csv")
    plots.plot_class_counts(manifest.counts(), out / "class_counts.png",
                            split_counts=manifest.split_counts())


def _bracketed(row: dict[str, Any], column: str, sep: str = ",") -> str:
    """``[low,high]`` of ``column_low``/``column_high``, or ``""`` when the row has no interval."""
    text = interval_text((row.get(f"{column}_low"), row.get(f"{column}_high")), 2, sep)
    return f"[{text}]" if text else ""


def _delta(row: dict[str, Any]) -> str:
    return "-" if row.get("delta") is None else f"{row['delta']:.2f} {_bracketed(row, 'delta')}".rstrip()


def _fold_delta(row: dict[str, Any]) -> str:
    return _bracketed(row, "fold_delta") or "-"


def _with_ci(row: dict[str, Any], column: str) -> str:
    low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
    if isinstance(low, float) and isinstance(high, float) and high - low < 1e-9:
        return f"{row[column]:.3f} [bootstrap: no spread]"  # every resample scored the same: no spread to show
    return f"{row[column]:.3f} {_bracketed(row, column, ', ')}".rstrip()


def render_leaderboard(board: Any, console: Any) -> None:
    """The verdict table (fits 80 columns; time, speed and size columns join from 100), the verdict sentence, the
    test estimate of the selected model, the label check."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    wide = console.width >= 100
    table = Table(title=escape(f"Verdict ({board.protocol})"), header_style="bold", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    unit = "folds" if "fold" in board.protocol else "seeds"
    columns = ["model", "status", "F1", "\u0394 F1 \\[images]", f"\\[{unit}]", "mean\u00b1sd"]
    columns += ["time/run", "ms/img", "params"] if wide else []
    for title in columns:
        table.add_column(title, justify="left" if title in ("model", "status") else "right", no_wrap=True,
                         overflow="ellipsis", max_width=16 if title == "model" else None)
    for row in board.rows:
        spread = "-" if row.get("fold_std") is None else f"{row['fold_mean']:.2f}\u00b1{row['fold_std']:.2f}"
        cells = [escape(str(row["model"])), row["status"], fmt(row["heldout_macro_f1"], missing="-"), _delta(row),
                 _fold_delta(row), spread]
        if wide:
            cells += [duration(row.get("train_seconds")),
                      fmt(row.get("infer_ms_batch1"), "ms", "-"), fmt(row.get("params"), "params", "-")]
        table.add_row(*cells, style="bold green" if row["status"] == "best" else None)
    console.print(table)
    console.print(f"[bold]Verdict:[/] {escape(board.sentence)}", soft_wrap=False)
    for row in board.rows:
        if row.get("heldout_worst_class_recall") == 0:
            console.print(f"[bold red]warning:[/] {escape(str(row['model']))} never recognises class "
                          f"{escape(str(row.get('heldout_worst_class')))} on its held-out images (recall 0)")
    final = next((r for r in board.rows if r.get("test_macro_f1") is not None), None)
    if final:
        numbers = ", ".join(f"{label} {_with_ci(final, column)}" for label, column in (
            ("macro-F1", "test_macro_f1"), ("balanced acc", "test_balanced_acc"), ("acc", "test_acc")))
        console.print(f"[bold]Test[/] (the final, unbiased estimate; opened once, for {escape(str(final['model']))}):"
                      f" {numbers} (95% CI); details: classbench evaluate {escape(str(final['run_dir']))}")
        if final.get("worst_class_recall") == 0:
            console.print(f"[bold red]warning:[/] on the test split {escape(str(final['model']))} never recognises "
                          f"class {escape(str(final.get('worst_class')))} (recall 0)")
    if board.label_issues:
        console.print(f"Label check: {board.label_issues} image(s) where the models confidently disagree with the "
                      f"label, likeliest errors first: {escape(str(board.path / 'label_issues.csv'))}")
    if board.report:
        console.print(f"Report: {escape(str(board.report))}")
