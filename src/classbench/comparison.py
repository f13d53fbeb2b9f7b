"""The bake-off: several architectures, one split, one seed, one budget; a leaderboard and a report."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from classbench.console import info, warn
from classbench.errors import RunError
from classbench.runs import atomic_write_csv, atomic_write_json, atomic_write_text, environment_info, read_json

REPORT_MODELS = ("densenet121", "inception_v3", "mobilenetv2", "resnet50")
LEADERBOARD_COLUMNS = [
    "model", "architecture", "params", "img_size", "train_seconds", "train_images_per_s", "infer_ms_batch1",
    "infer_images_per_s_batch32", "val_acc", "val_macro_f1", "val_balanced_acc", "test_acc", "test_macro_f1",
    "test_balanced_acc", "worst_class_recall", "worst_class", "ece", "run_dir",
]
PRESETS: dict[str, dict[str, Any]] = {
    # The report's protocol: four architectures from scratch, 20 epochs, 70/30 train/val, and one
    # held-out image per class -- evaluated side by side with a locked, stratified test split.
    # test 0.2 is locked away first; val 0.24 of the whole is 30% of the remaining 80% (the report's 70/30).
    "report": {"models": REPORT_MODELS, "epochs": 20, "val": 0.24, "test": 0.2, "pretrained": False},
}


@dataclass
class Leaderboard:
    """Rows sorted by test macro-F1; ``best`` loads the winner for prediction."""

    path: Path
    rows: list[dict[str, Any]]
    report: Path | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def best(self) -> Any:
        from classbench.predict import load

        if not self.rows:
            raise RunError(f"{self.path}: no finished model to load")
        return load(self.rows[0]["run_dir"])


def compare(data: str | os.PathLike, models: Sequence[str] | None = None, out: str | os.PathLike | None = None,
            epochs: int = 20, img_size: int | None = None, seed: int = 0, preset: str | None = None,
            parallel: bool = False, overwrite: bool = False, progress: bool = True, val: float = 0.2,
            test: float = 0.1, **train_options: Any) -> Leaderboard:
    """Train every model in ``models`` under identical conditions on one saved split, then rank them.

    Re-running with the same ``out`` resumes: finished models are kept, an unfinished one resumes
    from its ``last.ckpt``.
    """
    from classbench.data.check import check
    from classbench.data.split import split

    if preset:
        if preset not in PRESETS:
            raise RunError(f"--preset {preset!r} is unknown; choose one of: {', '.join(PRESETS)}")
        settings = PRESETS[preset]
        models = models or settings["models"]
        val, test = settings["val"], settings["test"]
        train_options["pretrained"] = settings["pretrained"]
    models = list(models or REPORT_MODELS)
    out = Path(out) if out else Path("runs") / "compare"
    state_file = out / "compare.json"
    args = {"data": str(data), "models": list(models), "epochs": epochs, "img_size": img_size, "seed": seed,
            "preset": preset, "val": val, "test": test, "train_options": train_options}
    if state_file.is_file() and not overwrite:
        previous = read_json(state_file).get("args", {})
        changed = [k for k in ("data", "models", "epochs", "img_size", "seed", "preset", "val", "test")
                   if previous.get(k) != args[k]]
        changed += _changed_training_options(previous.get("train_options", {}), train_options)
        if changed:
            raise RunError(f"{out}: holds a compare with other {', '.join(changed)}; pass --overwrite or another --out")
        info(f"Resuming the compare in {out}: finished models are kept.", markup=False)
    else:
        if out.exists() and any(out.iterdir()):
            if not overwrite:
                raise RunError(f"{out}: folder exists and is not a compare; pass --overwrite or another --out")
            if not state_file.is_file():
                raise RunError(f"{out}: not a classbench compare folder, so --overwrite will not delete it")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(state_file, {"args": args, "command": _command_line(), "models": list(models),
                                       "seed": seed, "preset": preset, "data": str(data), "img_size": img_size,
                                       "epochs": epochs, "environment": environment_info(),
                                       "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    manifest_path = out / "split.csv"
    if not manifest_path.is_file():
        report = check(data)
        atomic_write_json(out / "check.json", report.to_dict())
        split(data, val=val, test=test, seed=seed, out=manifest_path, report=report)
    if preset == "report":
        _write_one_per_class(manifest_path, out / "onepc.csv", seed)

    names = [_safe_name(m) for m in models]
    common = {"epochs": epochs, "img_size": img_size, "seed": seed, "progress": progress, **train_options}
    if parallel:
        _train_parallel(manifest_path, models, names, out, common)
    for model, name in zip(models, names):
        options = {**common, "img_size": _size_for(model, img_size)}
        _train_and_evaluate(manifest_path, model, out / name, options, one_per_class=preset == "report")
    rows = [_leaderboard_row(name, out / name) for name in names if (out / name / "eval.json").is_file()]
    rows.sort(key=lambda r: (r["test_macro_f1"] is None, -(r["test_macro_f1"] or 0.0)))
    _write_leaderboard(out, rows)
    _write_figures(out, names)
    from classbench.report.html import build_report

    report_path = build_report(out)
    return Leaderboard(out, rows, report_path)


def _changed_training_options(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Options that would train the remaining models under other conditions (compared as saved in JSON; an
    option a folder predates counts as its default; how often last.ckpt is written does not count)."""
    from classbench.training.config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    now = json.loads(json.dumps(now, default=str))
    return sorted(k for k in (set(before) | set(now)) - {"checkpoint_every"}
                  if before.get(k, defaults.get(k)) != now.get(k, defaults.get(k)))


def _size_for(model: str, img_size: int | None) -> int | None:
    """A forced size below a model's minimum is raised to that minimum (with a note), not a failed compare."""
    from classbench.models import min_input_size

    if img_size is None:
        return None
    smallest = min_input_size(model)
    if img_size < smallest:
        warn(f"{model} cannot run at {img_size} px; it trains at its minimum, {smallest} px.")
        return smallest
    return img_size


def _train_and_evaluate(manifest: Path, model: str, run_dir: Path, options: dict[str, Any],
                        one_per_class: bool) -> None:
    from classbench.evaluation import evaluate
    from classbench.training import resume, train

    if (run_dir / "summary.json").is_file():
        info(f"{model}: already trained, kept.", markup=False)
    elif (run_dir / "last.ckpt").is_file():
        info(f"{model}: resuming from {run_dir / 'last.ckpt'}", markup=False)
        resume(run_dir, progress=options.get("progress", True))
    else:
        info(f"{model}: training into {run_dir}", markup=False)
        train(manifest, model=model, out=run_dir, overwrite=run_dir.exists(), **options)
    if not (run_dir / "eval.json").is_file():
        evaluate(run_dir, split="test", progress=options.get("progress", True))
    if one_per_class and not (run_dir / "eval-onepc.json").is_file():
        evaluate(run_dir, data=manifest.parent / "onepc.csv", progress=False)
    if not (run_dir / "inference.json").is_file():
        atomic_write_json(run_dir / "inference.json", measure_inference(run_dir))


def _train_parallel(manifest: Path, models: Sequence[str], names: list[str], out: Path,
                    options: dict[str, Any]) -> None:
    """One model per GPU, each in its own training process (``training/child.py``; resumable on its own)."""
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        warn("--parallel needs several GPUs; training one model after another.")
        return
    from classbench.training.child import child_command

    pending = [(m, n) for m, n in zip(models, names) if not (out / n / "summary.json").is_file()]
    while pending:
        batch, pending = pending[:gpus], pending[gpus:]
        procs = []
        for gpu, (model, name) in enumerate(batch):
            cmd = child_command(manifest, model, out / name, {**options, "img_size": _size_for(model, options["img_size"])})
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
            procs.append((model, subprocess.Popen(cmd, env=env)))
        failed = [model for model, proc in procs if proc.wait() != 0]
        if failed:
            raise RunError(f"training failed for {', '.join(failed)}; re-run the same compare to resume")


def measure_inference(run_dir: Path, repeats: int = 20) -> dict[str, float]:
    """Batch-1 latency (ms) and batch-32 throughput (img/s) of the model users get, in fp32."""
    import torch

    from classbench.predict import load

    clf = load(run_dir, backend="torch")
    size = clf.img_size
    result: dict[str, float] = {}
    for batch, key in ((1, "ms_batch1"), (32, "images_per_s_batch32")):
        x = torch.randn(batch, 3, size, size)
        clf.logits(x)
        n = repeats if batch == 1 else max(3, repeats // 4)
        start = time.perf_counter()
        for _ in range(n):
            clf.logits(x)
        seconds = (time.perf_counter() - start) / n
        result[key] = round(seconds * 1000, 3) if batch == 1 else round(batch / seconds, 2)
    result["backend"] = clf.backend
    return result


def _leaderboard_row(name: str, run_dir: Path) -> dict[str, Any]:
    summary, ev = read_json(run_dir / "summary.json"), read_json(run_dir / "eval.json")
    inference = read_json(run_dir / "inference.json") if (run_dir / "inference.json").is_file() else {}
    best, metrics = summary.get("best_metrics", {}), ev.get("metrics", {})
    return {
        "model": name, "architecture": summary.get("model"), "params": summary.get("num_params"),
        "img_size": summary.get("img_size"), "train_seconds": summary.get("training_seconds"),
        "train_images_per_s": summary.get("train_images_per_s"),
        "infer_ms_batch1": inference.get("ms_batch1"),
        "infer_images_per_s_batch32": inference.get("images_per_s_batch32"),
        "val_acc": best.get("val_acc"), "val_macro_f1": best.get("val_macro_f1"),
        "val_balanced_acc": best.get("val_balanced_acc"), "test_acc": _r(metrics.get("accuracy")),
        "test_macro_f1": _r(metrics.get("macro_f1")), "test_balanced_acc": _r(metrics.get("balanced_accuracy")),
        "worst_class_recall": _r(metrics.get("worst_class_recall")), "worst_class": metrics.get("worst_class"),
        "ece": _r(metrics.get("ece")), "run_dir": str(run_dir),
    }


def _r(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, (int, float)) else value


def _write_leaderboard(out: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_csv(out / "leaderboard.csv", rows, LEADERBOARD_COLUMNS)
    shown = ["model", "params", "img_size", "train_seconds", "train_images_per_s", "infer_ms_batch1",
             "infer_images_per_s_batch32", "val_acc", "val_macro_f1", "val_balanced_acc", "test_acc", "test_macro_f1",
             "test_balanced_acc", "worst_class_recall", "worst_class", "ece"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        lines.append("| " + " | ".join(_md(row.get(c)) for c in shown) + " |")
    atomic_write_text(out / "leaderboard.md", "\n".join(lines) + "\n")


def _md(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _write_figures(out: Path, names: list[str]) -> None:
    from classbench.report import plots

    runs = {}
    for name in names:
        metrics = out / name / "metrics.csv"
        if metrics.is_file():
            with open(metrics, newline="") as fh:
                runs[name] = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                              for row in csv.DictReader(fh)]
    if runs:
        plots.plot_curves_grid(runs, out / "curves_grid.png")
    finished = [n for n in names if (out / n / "summary.json").is_file()]
    seconds = [read_json(out / n / "summary.json")["training_seconds"] for n in finished]
    if finished:
        plots.plot_training_time(finished, seconds, out / "training_time.png")
        scored = [n for n in finished if (out / n / "eval.json").is_file()]
        scores = [read_json(out / n / "eval.json")["metrics"]["macro_f1"] for n in scored]
        if scored:
            plots.plot_score_vs_time(scored, scores, [seconds[finished.index(n)] for n in scored],
                                     out / "score_vs_time.png")
    from classbench.data.manifest import Manifest

    manifest = Manifest.load(out / "split.csv")
    totals = manifest.counts()
    plots.plot_class_counts(totals, out / "class_counts.png",
                            split_counts={s: manifest.counts(s) for s in ("train", "val", "test")})


def _write_one_per_class(manifest_path: Path, target: Path, seed: int) -> None:
    """The report's protocol: one held-out image per class, drawn from the locked test split."""
    import random

    from classbench.data.manifest import Manifest

    if target.is_file():
        return
    manifest = Manifest.load(manifest_path)
    rng = random.Random(seed)
    chosen = []
    for cls in manifest.classes:
        pool = sorted((s for s in manifest.subset("test") if s.label == cls), key=lambda s: str(s.path))
        if pool:
            chosen.append(rng.choice(pool))
    Manifest(chosen, manifest.classes).save(target)


def _safe_name(model: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model)


def _command_line() -> str:
    import shlex

    argv = sys.argv[:]
    if argv and argv[0].endswith(("classbench", "cli.py", "__main__.py")):
        argv[0] = "classbench"
        return " ".join(shlex.quote(a) for a in argv)
    return "python -c 'import classbench; classbench.compare(...)'"


# From scratch at 32 px, 8 epochs on the demo digits (test macro-F1, Xeon): resnet10t 1.00, resnet18 0.88,
# densenet121 0.86, mobilenetv2 0.32 (its depthwise stages learn slowly this small; the leaderboard says which
# class it misses), efficientnet_b0 0.57 (replaced by resnet10t), regnetx_002 0.43, vgg11_bn 0.14.
DEMO_MODELS = ("resnet10t", "resnet18", "mobilenetv2", "densenet121")


def demo(out: str | os.PathLike = "runs/demo", epochs: int = 8, overwrite: bool = True,
         models: Sequence[str] = DEMO_MODELS, progress: bool = True) -> Leaderboard:
    """Built-in demo: write the imbalanced digits dataset, compare four small models at 32 px, report."""
    from classbench.data.demo import demo as demo_data

    out = Path(out)
    data_dir = out / "data"
    if overwrite and out.exists() and any(out.iterdir()):
        if not (out / "compare" / "compare.json").is_file() and not (data_dir / "digit_0").is_dir():
            raise RunError(f"{out}: exists and is not a classbench demo folder; choose another --out")
        shutil.rmtree(out)
    if not data_dir.is_dir():
        demo_data(data_dir, imbalance=10.0, seed=0, size=32)
    board = compare(data_dir, models=models, out=out / "compare", epochs=epochs, img_size=32, seed=0,
                    progress=progress)
    return board


def render_leaderboard(board: Leaderboard, console: Any) -> None:
    """The leaderboard as a rich table, best first, with the report's location."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Leaderboard ({board.path})", header_style="bold")
    columns = [("model", "model"), ("test_macro_f1", "F1"), ("test_balanced_acc", "bal.acc"), ("test_acc", "acc"),
               ("worst_class_recall", "worst"), ("train_seconds", "train s"), ("infer_ms_batch1", "ms/img"),
               ("params", "params")]
    if console.width >= 110:
        columns += [("img_size", "px"), ("train_images_per_s", "train img/s"), ("ece", "ECE")]
    for _, title in columns:
        table.add_column(title, justify="left" if title == "model" else "right", no_wrap=title == "model")
    for i, row in enumerate(board.rows):
        cells = [escape(_fmt(row.get(key), key)) for key, _ in columns]
        table.add_row(*cells, style="bold green" if i == 0 else None)
    console.print(table)
    weak = [r for r in board.rows if (r.get("worst_class_recall") or 0) == 0]
    for row in weak:
        console.print(f"[bold red]warning:[/] {escape(str(row['model']))} never recognises class "
                      f"{escape(str(row.get('worst_class')))} on the test split (recall 0)")
    if board.report:
        console.print(f"Report: {board.report}")


def _fmt(value: Any, key: str) -> str:
    if value is None or value == "":
        return "-"
    if key == "params":
        return f"{float(value) / 1e6:.2f}M"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
