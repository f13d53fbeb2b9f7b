"""Evaluate a trained run on its locked test split (or val, or any held-out folder/CSV).

Writes ``eval.json`` (schema in docs/DESIGN.md) plus figures and ``confusion.csv`` into the run folder.
Evaluating ``split="val"`` or ``data=...`` writes ``eval-val.json`` / ``eval-<name>.json`` and suffixed
figures instead, so the test result is never overwritten. The temperature is always fitted on the run's
validation logits and stored in ``model.json``; inference is fp32, batched, under ``inference_mode``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classbench.data.manifest import Manifest, Sample
from classbench.errors import DataError, ImageLoadError, RunError
from classbench.runs import atomic_write_json, atomic_write_text, read_json

MAX_MISCLASSIFIED = 36
N_BOOT = 1000
FIGURES = ("confusion", "class_probabilities", "reliability", "misclassified")


@dataclass
class EvalResult:
    """Everything ``eval.json`` holds (``to_dict``), plus where it was written."""

    run: str
    split: str
    data: str | None
    n_images: int
    tta: bool
    classes: list[str]
    metrics: dict[str, Any]
    ci95: dict[str, list[float]]
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    class_probabilities: list[list[float | None]]
    warnings: list[str]
    unknown_classes: list[str]
    missing_classes: list[str]
    figures: dict[str, str]
    inference: dict[str, Any]
    n_unknown_images: int = 0
    skipped: list[str] = field(default_factory=list)
    misclassified: list[dict[str, Any]] = field(default_factory=list)
    critical: list[str] = field(default_factory=list)  # the class-level subset of ``warnings`` (shown in red)
    out_dir: Path = Path(".")
    json_path: Path = Path("eval.json")

    def to_dict(self) -> dict[str, Any]:
        skip = {"critical", "out_dir", "json_path"}
        return _finite({k: v for k, v in self.__dict__.items() if k not in skip})


@dataclass
class _Inference:
    logits: np.ndarray  # plain (no TTA) logits [N, C]
    tta_logits: np.ndarray | None
    samples: list[Sample]  # the readable samples, in logits order
    skipped: list[str]
    seconds: float


def evaluate(run: str | Path, split: str = "test", data: str | Path | None = None, tta: bool = False,
             out: str | Path | None = None, batch_size: int = 64, progress: bool = True) -> EvalResult:
    """Evaluate ``run`` on its ``split`` ("test" or "val") or on a held-out ``data`` folder/CSV."""
    from classbench import metrics as M
    from classbench.predict import load

    if split not in ("test", "val") or batch_size < 1:
        raise DataError(f"--split must be 'test' or 'val' and --batch-size >= 1 (got {split!r}, {batch_size})")
    run_dir = _run_dir(run)
    out_dir = Path(out) if out is not None else run_dir
    clf = load(run_dir, "torch", device="auto")
    classes = list(clf.classes)
    samples, unknown, what, tag, warnings = _eval_samples(run_dir, split, data, classes)
    views = _tta_views(run_dir) if tta else None
    inf = _infer(clf, samples, batch_size, views, progress)
    warnings += [f"skipped unreadable image {s}" for s in inf.skipped]
    if not inf.samples:
        raise DataError(f"{data or run_dir}: none of the {len(samples)} {what} images could be read "
                        f"(first: {inf.skipped[0]})")
    own_val = inf if data is None and split == "val" else None
    temperature, t_source, t_warn = _temperature(clf, run_dir, classes, batch_size, own_val)
    warnings += t_warn

    logits = inf.tta_logits if inf.tta_logits is not None else inf.logits
    y_true = np.array([classes.index(s.label) for s in inf.samples], dtype=np.int64)
    summary, metrics, probs = _score(logits, y_true, classes, temperature)
    metrics["temperature_source"] = t_source
    y_pred = probs.argmax(axis=1)
    ci95 = {m: list(M.bootstrap_ci(y_true, y_pred, m, n_boot=N_BOOT, seed=0)) for m in ("accuracy", "macro_f1")}
    present = {s.label for s in inf.samples}
    missing = [c for c in classes if c not in present]
    if missing:
        warnings.append(f"{len(missing)} model class(es) have no readable images in {what}: "
                        f"{', '.join(map(repr, missing))} (support 0, metrics undefined)")
    critical = _class_warnings(summary, what)
    wrong = _worst_mistakes(inf.samples, y_true, y_pred, probs, classes)
    cpm = M.class_probability_matrix(probs, y_true, len(classes))

    suffix = "" if tag is None else f"-{tag}"
    figures = {k: f"{k}{suffix}.png" for k in FIGURES}
    figures["confusion_csv"] = f"confusion{suffix}.csv"
    result = EvalResult(
        run=str(run_dir), split=split, data=None if data is None else str(data), n_images=len(inf.samples),
        tta=bool(tta), classes=classes, metrics=metrics, ci95=ci95, per_class=summary["per_class"],
        confusion=summary["confusion_matrix"], class_probabilities=cpm.tolist(), warnings=critical + warnings,
        unknown_classes=sorted(unknown), missing_classes=missing, figures=figures,
        inference={"seconds": inf.seconds, "images_per_s": len(inf.samples) / max(inf.seconds, 1e-9),
                   "backend": clf.backend, "batch_size": batch_size, "tta_views": len(views or [()])},
        n_unknown_images=sum(unknown.values()), skipped=inf.skipped,
        misclassified=[{"path": str(p), "true": t, "pred": q, "p": pr} for p, t, q, pr in wrong],
        critical=critical, out_dir=out_dir, json_path=out_dir / f"eval{suffix}.json",
    )
    title = f"{clf.meta.get('architecture', 'model')} on {what}"
    _write_figures(result, np.asarray(summary["confusion_matrix"]), cpm, M.reliability_bins(probs, y_true), wrong,
                   title)
    atomic_write_json(result.json_path, result.to_dict())
    return result


# ---------------------------------------------------------------- what to evaluate
def _run_dir(run: str | Path) -> Path:
    path = Path(run)
    folder = path if path.is_dir() else path.parent
    if not (folder / "model.json").is_file():
        raise RunError(f"{run}: no model.json here; pass a classbench run folder (has training finished?)")
    return folder


def _eval_samples(run_dir: Path, split: str, data: str | Path | None,
                  classes: list[str]) -> tuple[list[Sample], dict[str, int], str, str | None, list[str]]:
    """``(known samples, unknown label counts, description, file-name tag, warnings)``."""
    warnings: list[str] = []
    if data is None:
        split_csv = run_dir / "split.csv"
        if not split_csv.is_file():
            raise RunError(f"{run_dir}: no split.csv; pass --data FOLDER to evaluate on held-out images")
        picked = Manifest.load(split_csv).subset(split)
        if not picked:
            raise DataError(f"{split_csv}: the {split} split is empty; pass --data FOLDER or use the other split")
        what, tag = f"{split}", None if split == "test" else split
    else:
        from classbench.data.sources import read_source

        source = read_source(data)
        warnings += source.warnings
        if source.skipped:
            warnings.append(f"{len(source.skipped)} file(s) in {data} are not images and were ignored")
        part = [s for s in source.samples if s.split == split]
        picked = part if part else source.samples
        if source.samples and not part and any(s.split for s in source.samples):
            warnings.append(f"{data} has no {split} part; evaluating on all {len(picked)} images")
        name = Path(data).stem if Path(data).is_file() else Path(data).resolve().name
        what = str(name) if split == "test" else f"{name} ({split})"
        tag = (re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "data") + ("" if split == "test" else f"-{split}")
    known = [s for s in picked if s.label in classes]
    unknown = Counter(s.label for s in picked if s.label not in classes)
    if unknown:
        listed = ", ".join(f"'{c}' ({n})" for c, n in sorted(unknown.items()))
        warnings.append(f"{sum(unknown.values())} image(s) of class(es) the model was never trained on were left "
                        f"out of the metrics: {listed}")
    if not known:
        raise DataError(f"{data or run_dir}: no images of the model's classes ({', '.join(classes)}) to evaluate")
    return known, dict(unknown), what, tag, warnings


# ---------------------------------------------------------------- inference
def _tta_views(run_dir: Path) -> list[tuple[int, ...]]:
    """Flip dims per view: identity + horizontal (+ vertical when the run trained with ``--augment aerial``)."""
    import yaml

    try:
        args = (yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}).get("args") or {}
    except (OSError, yaml.YAMLError, AttributeError, UnicodeDecodeError):
        args = {}
    return [(), (3,), (2,)] if isinstance(args, dict) and args.get("augment") == "aerial" else [(), (3,)]


def _batches(samples: list[Sample], size: int, batch_size: int, skipped: list[str]) -> Iterator[tuple[Any, list[Sample]]]:
    """uint8 ``[B, 3, S, S]`` batches of the readable samples; unreadable ones go to ``skipped``."""
    import torch

    from classbench.data.imageio import load_image
    from classbench.data.transforms import to_uint8_tensor

    def read(sample: Sample) -> Any:
        try:
            return to_uint8_tensor(load_image(sample.path), size)
        except ImageLoadError as err:
            return err

    chunks = [samples[i:i + batch_size] for i in range(0, len(samples), batch_size)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending = [pool.submit(read, s) for s in chunks[0]] if chunks else []
        for k, chunk in enumerate(chunks):  # the next chunk decodes while this one runs through the model
            items = [f.result() for f in pending]
            pending = [pool.submit(read, s) for s in chunks[k + 1]] if k + 1 < len(chunks) else []
            skipped += [str(item) for item in items if isinstance(item, ImageLoadError)]
            good = [(s, item) for s, item in zip(chunk, items) if not isinstance(item, ImageLoadError)]
            if good:
                yield torch.stack([item for _, item in good]), [s for s, _ in good]


def _infer(clf: Any, samples: list[Sample], batch_size: int, views: list[tuple[int, ...]] | None,
           progress: bool) -> _Inference:
    """fp32 logits (any enclosing autocast disabled) of every readable sample, plain and TTA-averaged."""
    import torch
    from rich.progress import track

    from classbench.console import console
    from classbench.data.transforms import normalize

    plain, averaged, kept, skipped, seconds = [], [], [], [], 0.0
    batches = _batches(samples, int(clf.img_size), batch_size, skipped)
    if progress:
        batches = track(batches, "evaluating", total=math.ceil(len(samples) / batch_size), console=console,
                        transient=True)
    with torch.inference_mode(), _no_autocast():
        for batch, batch_samples in batches:
            x = normalize(batch, clf.meta["mean"], clf.meta["std"]).float()
            if not kept:
                clf.logits(x[:1])  # warm-up, not timed
            start = time.perf_counter()
            outs = [np.asarray(clf.logits(torch.flip(x, dims) if dims else x), dtype=np.float64)
                    for dims in (views or [()])]
            seconds += time.perf_counter() - start
            plain.append(outs[0])
            averaged.append(np.mean(outs, axis=0))
            kept += batch_samples
    empty = np.zeros((0, len(clf.classes)))
    return _Inference(np.concatenate(plain) if plain else empty,
                      (np.concatenate(averaged) if averaged else empty) if views else None, kept, skipped, seconds)


def _no_autocast() -> contextlib.ExitStack:
    """Disable autocast on CPU and CUDA (a measured bf16 eval once cost 7 accuracy points)."""
    import torch

    stack = contextlib.ExitStack()
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        stack.enter_context(torch.autocast(device, enabled=False))
    return stack


# ---------------------------------------------------------------- calibration
def _temperature(clf: Any, run_dir: Path, classes: list[str], batch_size: int,
                 own_val: _Inference | None) -> tuple[float, str, list[str]]:
    """Fit T on the run's val logits and store it in ``model.json``; else keep the stored T."""
    from classbench.metrics import fit_temperature

    stored = float(clf.meta.get("temperature") or 1.0)
    val = own_val
    if val is None and (run_dir / "split.csv").is_file():
        samples = [s for s in Manifest.load(run_dir / "split.csv").subset("val") if s.label in classes]
        val = _infer(clf, samples, batch_size, None, False) if samples else None
    if val is None or not val.samples:
        lost = [f"none of the val images could be read; kept T = {stored:g} from model.json"] if val else []
        return stored, "model.json", lost
    labels = np.array([classes.index(s.label) for s in val.samples])
    temperature = fit_temperature(val.logits, labels)
    meta_path = run_dir / "model.json"
    try:
        atomic_write_json(meta_path, {**read_json(meta_path), "temperature": temperature})
    except (RunError, OSError) as err:
        return temperature, "val", [f"{meta_path}: could not store the temperature ({err})"]
    warns = [] if own_val is not None else [f"val: skipped unreadable image {s}" for s in val.skipped]
    return temperature, "val", warns


def _score(logits: np.ndarray, y_true: np.ndarray, classes: list[str],
           temperature: float) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """``(classification summary, eval.json metrics, calibrated probabilities)``."""
    from classbench import metrics as M

    probs = M.softmax(logits, temperature)
    summary = M.classification_summary(y_true, probs.argmax(axis=1), probs, classes)
    p_true = probs[np.arange(len(y_true)), y_true]
    metrics = {key: summary[key] for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")}
    metrics.update({
        "top_k": {f"top_{k}": v for k, v in summary["top_k_accuracy"].items()},
        "worst_class_recall": summary["worst_class_recall"], "worst_class": summary["worst_class"],
        "ece": M.expected_calibration_error(probs, y_true),
        "ece_uncalibrated": M.expected_calibration_error(M.softmax(logits), y_true),
        "temperature": temperature, "nll": float(-np.mean(np.log(np.clip(p_true, 1e-12, 1.0)))),
    })
    return summary, metrics, probs


# ---------------------------------------------------------------- findings and files
def _class_warnings(summary: dict[str, Any], what: str) -> list[str]:
    """One loud line per class with images but zero recall (naming what it was taken for) or zero predictions."""
    cm = np.asarray(summary["confusion_matrix"])
    classes = summary["classes"]
    out = []
    for i, row in enumerate(summary["per_class"]):
        name, support, predicted = row["class"], row["support"], row["predicted"]
        if support and not predicted:
            out.append(f"class '{name}' was never predicted (0 of {support} {what} images)")
        elif support and cm[i, i] == 0:
            confused = classes[int(np.argmax(np.where(np.arange(len(classes)) == i, -1, cm[i])))]
            out.append(f"class '{name}' has zero recall: none of its {support} {what} images was recognised "
                       f"(mostly predicted as '{confused}')")
    return out


def _worst_mistakes(samples: Sequence[Sample], y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray,
                    classes: list[str]) -> list[tuple[Path, str, str, float]]:
    """Misclassified images, highest wrong-class probability first (at most ``MAX_MISCLASSIFIED``)."""
    wrong = np.flatnonzero(y_true != y_pred)
    p_wrong = probs[wrong, y_pred[wrong]]
    order = wrong[np.argsort(-p_wrong, kind="stable")][:MAX_MISCLASSIFIED]
    return [(samples[i].path, classes[y_true[i]], classes[y_pred[i]], float(probs[i, y_pred[i]])) for i in order]


def _write_figures(result: EvalResult, cm: np.ndarray, cpm: np.ndarray, bins: dict[str, list],
                   wrong: list[tuple[Path, str, str, float]], title: str) -> None:
    from classbench.report.plots import contact_sheet, plot_class_probabilities, plot_confusion, plot_reliability

    out, fig, classes = result.out_dir, result.figures, result.classes
    plot_confusion(cm, classes, out / fig["confusion"], title)
    plot_class_probabilities(cpm, classes, out / fig["class_probabilities"], title)
    plot_reliability(bins, result.metrics["ece"], out / fig["reliability"],
                     f"{title} (T = {result.metrics['temperature']:.2f})")
    contact_sheet(wrong, out / fig["misclassified"])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true \\ predicted", *classes])
    writer.writerows([name, *map(int, row)] for name, row in zip(classes, cm))
    atomic_write_text(out / fig["confusion_csv"], buf.getvalue())


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None (strict JSON for the HTML report), numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    return int(obj) if isinstance(obj, np.integer) else obj


# ---------------------------------------------------------------- console
def render_eval(result: EvalResult, console: Any) -> None:
    """Per-class table, headline numbers with 95% CIs, calibration, and every warning (loudly)."""
    from rich.markup import escape
    from rich.table import Table

    m, ci = result.metrics, result.ci95
    table = Table(title=escape(f"{result.data or result.split}: {result.n_images} images"), title_justify="left")
    for col in ("class", "precision", "recall", "F1", "support", "predicted"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in result.per_class:
        style = "bold red" if row["support"] and row["recall"] == 0 else None
        table.add_row(escape(row["class"]), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["support"]), str(row["predicted"]), style=style)
    console.print(table)

    def with_ci(key: str) -> str:
        low, high = ci.get(key) or (None, None)
        return f"{m[key]:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else "")

    top = ", ".join(f"{k.replace('_', '-')} {v:.3f}" for k, v in m["top_k"].items() if k != "top_1")
    console.print(f"accuracy {with_ci('accuracy')}  macro-F1 {with_ci('macro_f1')}  (95% bootstrap CI)")
    console.print(f"balanced accuracy {m['balanced_accuracy']:.3f}  weighted F1 {m['weighted_f1']:.3f}"
                  + (f"  {top}" if top else ""))
    if m["worst_class"] is not None:
        console.print(f"worst class: {escape(m['worst_class'])} (recall {m['worst_class_recall']:.3f})")
    console.print(f"calibration: ECE {m['ece']:.3f} at T = {m['temperature']:.2f} "
                  f"(uncalibrated {m['ece_uncalibrated']:.3f}), NLL {m['nll']:.3f}")
    inf = result.inference
    console.print(f"inference: {inf['images_per_s']:.1f} images/s ({inf['seconds']:.2f} s, fp32"
                  + (", TTA" if result.tta else "") + ")")
    for w in result.warnings:
        style = "bold red" if w in result.critical else "bold yellow"
        console.print(f"[{style}]WARNING:[/] {escape(w)}", soft_wrap=True)
    console.print(f"Wrote {escape(str(result.json_path))} and figures in {escape(str(result.out_dir))}")
