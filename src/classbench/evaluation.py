"""Evaluate a trained run on its locked test split (or val, or any held-out folder/CSV).

Writes ``eval.json`` (schema in docs/DESIGN.md) plus figures, ``confusion.csv`` and ``predictions.csv`` (one
row per image: ``write_predictions`` / ``read_predictions``, kept in ``classbench.predict`` and importable from
here) into the run folder. Evaluating ``split="val"`` or ``data=...`` writes ``eval-val.json`` /
``eval-<name>.json`` and suffixed figures/CSVs instead, so the test result is never overwritten. Intervals and
class-level warnings come from ``classbench.intervals``. The temperature is always fitted on the run's
validation logits and stored in ``model.json``. Images are decoded and batched by
``classbench.inference.iter_batches`` and run by the ``Classifier`` of ``classbench.predict.load``: the same path
as ``predict``, so an image gets the same probabilities from both (fp32, any enclosing autocast disabled). An
unreadable image is skipped and listed in ``warnings``. When ``grad-cam`` is installed, the ``heatmaps`` (default
``EXPLAIN_MISTAKES``; 0: none) most confident mistakes get a heatmap row in ``misclassified.png``
(``classbench.explain``: where the model saw the class it wrongly chose); ``eval.json``'s ``explain`` says how
(method, layer, images) and what it cost (seconds).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classbench.data.manifest import Manifest, Sample
from classbench.errors import DataError, RunError
from classbench.formatting import duration, rate
from classbench.intervals import class_warnings, eval_intervals, headline_lines, interval_text
from classbench.predict import PREDICTION_COLUMNS, read_predictions, write_predictions
from classbench.runs import atomic_write_json, atomic_write_text, csv_text, read_json, read_yaml, safe_name

__all__ = ["PREDICTION_COLUMNS", "EvalResult", "evaluate", "read_predictions", "render_eval", "write_predictions"]

MAX_MISCLASSIFIED = 36
EXPLAIN_MISTAKES = 12  # heatmaps for the most confident mistakes: two rows of the sheet, a bounded cost
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
    ci_method: dict[str, str]  # how each ci95 interval was computed
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
    explain: dict[str, Any] | None = None  # the heatmap row: method, layer, n_images, seconds (None: no grad-cam)
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
             out: str | Path | None = None, batch_size: int = 64, progress: bool = True,
             heatmaps: int | None = None) -> EvalResult:
    """Evaluate ``run`` on its ``split`` ("test"/"val") or a held-out ``data`` folder/CSV (``heatmaps``: see the module)."""
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
    ci95, ci_method, ci_warnings = eval_intervals(summary, y_true, y_pred, N_BOOT)
    present = {s.label for s in inf.samples}
    missing = [c for c in classes if c not in present]
    if missing:
        warnings.append(f"{len(missing)} model class(es) have no readable images in {what}: "
                        f"{', '.join(map(repr, missing))} (support 0, metrics undefined)")
    critical = class_warnings(summary, what)
    wrong = _worst_mistakes(inf.samples, y_true, y_pred, probs, classes)
    maps, explained = _explain_mistakes(clf, wrong, classes, EXPLAIN_MISTAKES if heatmaps is None else heatmaps)
    cpm = M.class_probability_matrix(probs, y_true, len(classes))

    suffix = "" if tag is None else f"-{tag}"
    figures = {k: f"{k}{suffix}.png" for k in FIGURES}
    figures.update(confusion_csv=f"confusion{suffix}.csv", predictions_csv=f"predictions{suffix}.csv")
    result = EvalResult(
        run=str(run_dir), split=split, data=None if data is None else str(data), n_images=len(inf.samples),
        tta=bool(tta), classes=classes, metrics=metrics, ci95=ci95, ci_method=ci_method,
        per_class=summary["per_class"], confusion=summary["confusion_matrix"], class_probabilities=cpm.tolist(),
        warnings=critical + warnings + ci_warnings,
        unknown_classes=sorted(unknown), missing_classes=missing, figures=figures,
        inference={"seconds": inf.seconds, "images_per_s": len(inf.samples) / max(inf.seconds, 1e-9),
                   "backend": clf.backend, "batch_size": batch_size, "tta_views": len(views or [()])},
        n_unknown_images=sum(unknown.values()), skipped=inf.skipped,
        misclassified=[{"path": str(p), "true": t, "pred": q, "p": pr} for p, t, q, pr in wrong],
        critical=critical, explain=explained, out_dir=out_dir, json_path=out_dir / f"eval{suffix}.json",
    )
    title = f"{clf.meta.get('architecture', 'model')} on {what}"
    _write_files(result, inf.samples, y_true, probs, cpm, wrong, title, maps)
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
        tag = (safe_name(name) or "data") + ("" if split == "test" else f"-{split}")
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
    try:
        args = (read_yaml(run_dir / "config.yaml") or {}).get("args") or {}
    except (OSError, RunError, AttributeError):
        args = {}
    return [(), (3,), (2,)] if isinstance(args, dict) and args.get("augment") == "aerial" else [(), (3,)]


def _infer(clf: Any, samples: list[Sample], batch_size: int, views: list[tuple[int, ...]] | None,
           progress: bool) -> _Inference:
    """fp32 logits of every readable sample through ``iter_batches`` and ``clf.logits``, plain and TTA-averaged;
    the unreadable ones go to ``skipped`` as ``"<path>: <reason>"``."""
    import torch
    from rich.progress import track

    from classbench.console import console
    from classbench.inference import iter_batches

    plain, averaged, kept, skipped, seconds = [], [], [], [], 0.0
    batches: Any = iter_batches([s.path for s in samples], int(clf.img_size), batch_size)
    if progress:
        batches = track(batches, "evaluating", total=math.ceil(len(samples) / batch_size), console=console,
                        transient=True)
    with torch.inference_mode():
        for batch in batches:
            skipped += [str(err) for _, err in batch.failed]
            if batch.images is None:
                continue
            x = clf.normalise(batch.images)
            if not kept:
                clf.logits(x[:1])  # warm-up, not timed
            start = time.perf_counter()
            outs = [np.asarray(clf.logits(torch.flip(x, dims) if dims else x), dtype=np.float64)
                    for dims in (views or [()])]
            seconds += time.perf_counter() - start
            plain.append(outs[0])
            averaged.append(np.mean(outs, axis=0))
            kept += [samples[i] for i in batch.index]
    empty = np.zeros((0, len(clf.classes)))
    return _Inference(np.concatenate(plain) if plain else empty,
                      (np.concatenate(averaged) if averaged else empty) if views else None, kept, skipped, seconds)


# ---------------------------------------------------------------- calibration
def _temperature(clf: Any, run_dir: Path, classes: list[str], batch_size: int,
                 own_val: _Inference | None) -> tuple[float, str, list[str]]:
    """Fit T on the run's val logits and store it in ``model.json``; else keep the stored T."""
    from classbench.calibration import fit_temperature, stored_temperature

    stored = stored_temperature(clf.meta)
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
    from classbench import calibration as C
    from classbench import metrics as M

    probs = C.softmax(logits, temperature)
    summary = M.classification_summary(y_true, probs.argmax(axis=1), probs, classes)
    metrics = {key: summary[key] for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")}
    metrics.update({
        "top_k": {f"top_{k}": v for k, v in summary["top_k_accuracy"].items()},
        "worst_class_recall": summary["worst_class_recall"], "worst_class": summary["worst_class"],
        "ece": C.expected_calibration_error(probs, y_true),
        "ece_uncalibrated": C.expected_calibration_error(C.softmax(logits), y_true),
        "temperature": temperature, "nll": C.nll(logits, y_true, temperature),
    })
    return summary, metrics, probs


# ---------------------------------------------------------------- findings and files
def _worst_mistakes(samples: Sequence[Sample], y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray,
                    classes: list[str]) -> list[tuple[Path, str, str, float]]:
    """Misclassified images, highest wrong-class probability first (at most ``MAX_MISCLASSIFIED``)."""
    wrong = np.flatnonzero(y_true != y_pred)
    p_wrong = probs[wrong, y_pred[wrong]]
    order = wrong[np.argsort(-p_wrong, kind="stable")][:MAX_MISCLASSIFIED]
    return [(samples[i].path, classes[y_true[i]], classes[y_pred[i]], float(probs[i, y_pred[i]])) for i in order]


def _explain_mistakes(clf: Any, wrong: list[tuple[Path, str, str, float]], classes: list[str],
                      n: int) -> tuple[list[Any], dict[str, Any] | None]:
    """Heatmaps of the predicted (wrong) class for the first ``n`` mistakes, and what it took."""
    if not wrong or n < 1:
        return [], None
    from classbench.explain import mistake_heatmaps

    worst = wrong[:n]
    return mistake_heatmaps(clf, [p for p, *_ in worst], [classes.index(pred) for _, _, pred, _ in worst])


def _write_files(result: EvalResult, samples: Sequence[Sample], y_true: np.ndarray, probs: np.ndarray,
                 cpm: np.ndarray, wrong: list[tuple[Path, str, str, float]], title: str,
                 heatmaps: Sequence[Any] = ()) -> None:
    """The figures, ``confusion.csv`` and ``predictions.csv`` named in ``result.figures``."""
    from classbench.calibration import reliability_bins
    from classbench.report.plots import contact_sheet, plot_class_probabilities, plot_confusion, plot_reliability

    out, fig, classes, cm = result.out_dir, result.figures, result.classes, np.asarray(result.confusion)
    bins = reliability_bins(probs, y_true)
    plot_confusion(cm, classes, out / fig["confusion"], title)
    plot_class_probabilities(cpm, classes, out / fig["class_probabilities"], title)
    plot_reliability(bins, result.metrics["ece"], out / fig["reliability"],
                     f"{title} (T = {result.metrics['temperature']:.2f})")
    contact_sheet(wrong, out / fig["misclassified"], heatmaps=heatmaps)
    rows = [[name, *map(int, row)] for name, row in zip(classes, cm)]
    atomic_write_text(out / fig["confusion_csv"], csv_text([["true \\ predicted", *classes], *rows]))
    write_predictions(out / fig["predictions_csv"], [s.path for s in samples], [s.label for s in samples], probs,
                      classes)


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

    m = result.metrics
    table = Table(title=escape(f"{result.data or result.split}: {result.n_images} images"), title_justify="left",
                  caption="precision and recall: value, then its 95% Clopper-Pearson interval", caption_justify="left")
    table.add_column("class", overflow="fold")  # long names wrap, never cut
    for col in ("precision", "recall", "F1", "support", "predicted"):
        table.add_column(col, justify="right", no_wrap=True, min_width=9 if col in ("precision", "recall") else None)
    for row in result.per_class:
        style = "bold red" if row["support"] and row["recall"] == 0 else None
        cells = [f"{row[k]:.3f}\n{interval_text(row.get(k + '_ci'))}".strip() for k in ("precision", "recall")]
        table.add_row(escape(row["class"]), *cells, f"{row['f1']:.3f}", str(row["support"]), str(row["predicted"]),
                      style=style)
    console.print(table)
    for line in headline_lines(m, result.ci95, result.ci_method):
        console.print(escape(line))
    top = ", ".join(f"{k.replace('_', '-')} {v:.3f}" for k, v in m["top_k"].items() if k != "top_1")
    console.print(f"weighted F1 {m['weighted_f1']:.3f}" + (f"  {top}" if top else ""))
    if m["worst_class"] is not None:
        console.print(f"worst class: {escape(m['worst_class'])} (recall {m['worst_class_recall']:.3f})")
    console.print(f"calibration: ECE {m['ece']:.3f} at T = {m['temperature']:.2f} "
                  f"(uncalibrated {m['ece_uncalibrated']:.3f}), NLL {m['nll']:.3f}")
    inf = result.inference
    console.print(f"inference: {rate(inf['images_per_s'])} images/s ({duration(inf['seconds'])}, fp32"
                  + (", TTA" if result.tta else "") + ")")
    ex = result.explain or {}
    if ex.get("n_images"):
        console.print(f"heatmaps: {ex['n_images']} most confident mistakes, {escape(str(ex['method']))} at layer "
                      f"{escape(str(ex['layer']))} ({duration(ex['seconds'])})")
    elif ex.get("error"):
        console.print(f"[yellow]no heatmaps on misclassified.png:[/] {escape(str(ex['error']))}", soft_wrap=True)
    for w in result.warnings:
        style = "bold red" if w in result.critical else "bold yellow"
        console.print(f"[{style}]WARNING:[/] {escape(w)}", soft_wrap=True)
    console.print(f"Wrote {escape(str(result.json_path))}, per-image {escape(result.figures.get('predictions_csv', ''))} "
                  f"and figures in {escape(str(result.out_dir))}")
