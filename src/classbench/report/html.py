"""The self-contained ``report.html`` of a run folder or a compare folder.

``collect_report_data(folder)`` gathers everything (tolerating missing optional files) into a plain
dict; ``build_report`` renders it with the Jinja2 template (autoescape on: user text is never trusted),
every figure embedded as a base64 ``data:`` URI, and writes it atomically. The page loads nothing: a
Content-Security-Policy allows only ``data:`` images and the page's own inline script (by hash).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import shlex
import struct
from pathlib import Path
from typing import Any

from classbench.comparison.leaderboard import TEST_METRICS
from classbench.data.manifest import SPLITS, Manifest, shown_path
from classbench.errors import ClassbenchError, RunError, first_line
from classbench.formatting import METRIC_LABELS, finite, fmt
from classbench.intervals import interval_text
from classbench.report.columns import COLUMNS, VERDICT_ORDER
from classbench.report.exports import export_rows
from classbench.runs import atomic_write_text, read_json, read_yaml, timestamp
from classbench.training.config import BALANCE_TEXT

MAX_FIGURE_BYTES = 25 << 20
COMPARE_FIGURES = [("class_counts.png", "Class counts per split"), ("curves_grid.png", "Training curves"),
                   ("training_time.png", "Training time"), ("score_vs_time.png", "Score vs training time")]
RUN_FIGURES = [("curves", "curves.png", "Training curves"), ("confusion", "confusion.png", "Confusion matrix"),
               ("class_probabilities", "class_probabilities.png", "Mean predicted probability per true class"),
               ("reliability", "reliability.png", "Calibration (reliability diagram)"),
               ("misclassified", "misclassified.png", "Misclassified images")]
MAX_LABEL_ISSUES_SHOWN = 24


def _figure(path: Path, title: str) -> dict[str, Any]:
    """A PNG/JPEG as a ``data:`` URI (None when missing, too big or not an image) with its pixel size."""
    uri, size = None, (None, None)
    if path.is_file() and path.stat().st_size <= MAX_FIGURE_BYTES:
        data = path.read_bytes()
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
            uri, size = f"data:image/png;base64,{base64.b64encode(data).decode('ascii')}", struct.unpack(">II", data[16:24])
        elif data[:3] == b"\xff\xd8\xff":
            uri = f"data:image/jpeg;base64,{base64.b64encode(data).decode('ascii')}"
    return {"title": title, "file": path.name, "uri": uri, "width": size[0], "height": size[1]}


def _load(path: Path, notes: list[dict[str, str]]) -> Any:
    """A JSON/YAML file's mapping; None when missing; a damaged file becomes a warning, not a crash."""
    if not path.is_file():
        return None
    try:
        value = read_yaml(path) if path.suffix == ".yaml" else read_json(path)
        if not isinstance(value, dict):
            raise TypeError(f"{path}: expected a mapping at the top level")
        return value
    except (ClassbenchError, OSError, ValueError, TypeError) as err:
        notes.append(_warn("warn", path.parent.name, f"cannot read {err}"))
    return None


def _read_csv(path: Path, notes: list[dict[str, str]]) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [dict(r) for r in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        notes.append(_warn("warn", path.parent.name, f"{path.name}: cannot read ({err})"))
        return []


def _cmd_path(path: Path) -> str:
    return shlex.quote(os.fspath(path))


def _train_command(config: dict[str, Any]) -> str | None:
    """The exact command the run recorded in config.yaml (None for runs made before it was recorded)."""
    return str(config["command"]) if config.get("command") else None


def _warn(level: str, scope: str, text: str) -> dict[str, str]:
    return {"level": level, "scope": scope, "text": text}


def _ci_text(interval: Any, digits: int = 3) -> str | None:
    """``"0.160–1.000"`` for a ``[low, high]`` of finite numbers (from eval.json), else None."""
    return interval_text(interval, digits, "\u2013") or None


def _heatmap_title(key: str, title: str, ev: dict[str, Any]) -> str:
    """The misclassified sheet's caption says what its heatmap row shows and what it cost (eval.json ``explain``)."""
    info = ev.get("explain") if isinstance(ev.get("explain"), dict) else {}
    if key != "misclassified" or not finite(info.get("n_images")):
        return title
    return (f"{title}; under the {fmt(info['n_images'], 'int')} most confident: where the model saw the class it "
            f"chose ({info.get('method')} at {info.get('layer')}, {fmt(info.get('seconds'), 'sec')})")


def _model(name: str, run_dir: Path | None, shown: Path, notes: list[dict[str, str]]) -> dict[str, Any]:
    """One run folder's files (``run_dir`` None: the folder is missing) and what the report derives from them."""
    def load(file: str) -> Any:
        return _load(run_dir / file, notes) if run_dir is not None else None

    summary, meta, config = load("summary.json") or {}, load("model.json") or {}, load("config.yaml") or {}
    ev, onepc, inference = load("eval.json"), load("eval-onepc.json"), load("inference.json") or {}
    ev_d = ev or {}
    per_class, zero, never = [], [], []
    for row in [r for r in ev_d.get("per_class") or [] if isinstance(r, dict)]:
        support, recall, predicted = finite(row.get("support")) or 0, finite(row.get("recall")), finite(row.get("predicted"))
        flags = {"zero_recall": support > 0 and recall == 0, "never": support > 0 and predicted == 0}
        cis = {f"{k}_ci_text": _ci_text(row.get(f"{k}_ci"), 2) for k in ("precision", "recall")}
        per_class.append({**row, "class": str(row.get("class")), **flags, **cis})
        if flags["never"]:
            never.append(f"{row.get('class')} (0 of {support:.0f})")
        elif flags["zero_recall"]:
            zero.append(f"{row.get('class')} (0 of {support:.0f} right, predicted {predicted or 0:.0f} times)")
    split = str(ev_d.get("split") or "test")
    warnings = [_warn(level, name, text) for level, text in (
        ("error", never and "never predicted: " + ", ".join(never)),
        ("error", zero and "zero recall: " + ", ".join(zero)),
        ("warn", ev_d.get("missing_classes") and "no test images of: " + ", ".join(map(str, ev_d["missing_classes"]))),
        ("warn", ev and split != "test" and f"eval.json is an evaluation of the {split!r} split, not the locked test"),
        ("info", ev is None and "not evaluated yet")) if text]
    metrics_, ci = ev_d.get("metrics") or {}, ev_d.get("ci95") or {}
    methods = ev_d["ci_method"] if isinstance(ev_d.get("ci_method"), dict) else {}
    rows = [{"label": label, "value": fmt(metrics_.get(key)), "ci": ci.get(key), "ci_text": _ci_text(ci.get(key)),
             "method": str(methods[key]) if methods.get(key) else None} for key, label in METRIC_LABELS.items()
            if metrics_.get(key) is not None]
    rows += [{"label": k.replace("_", "-") + " accuracy", "value": fmt(v), "ci": None, "ci_text": None, "method": None}
             for k, v in (metrics_.get("top_k") or {}).items()]
    fig_names = ev_d["figures"] if isinstance(ev_d.get("figures"), dict) else {}
    figures = [_figure(run_dir / Path(str(fig_names.get(key) or default)).name, _heatmap_title(key, title, ev_d))
               for key, default, title in RUN_FIGURES if run_dir is not None]
    return {"name": name, "dir": os.fspath(shown), "evaluate_cmd": f"classbench evaluate {_cmd_path(shown)}",
            "summary": summary, "meta": meta, "config": config, "eval": ev, "onepc": onepc, "inference": inference,
            "metrics": rows, "per_class": per_class, "warnings": warnings,
            "eval_warnings": [str(w) for w in ev_d.get("warnings") or []],
            "figures": [f for f in figures if f["uri"]], "missing_figures": [f["file"] for f in figures if not f["uri"]],
            "train_command": _train_command(config), "exports": export_rows(load("export.json"), run_dir)}


def _leaderboard(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Columns that have a value somewhere, rows as given; the verdict's selected row marked, or without a verdict
    the top validation macro-F1 (never a test score: the report must not pick a winner on the test split)."""
    order = VERDICT_ORDER if any(r.get("status") for r in rows) else list(COLUMNS)
    keys = [k for k in order if any(str(r.get(k) or "").strip() for r in rows)]
    keys += [k for k in (rows[0] if rows else {}) if k not in COLUMNS and k]
    columns = [{"key": k, "label": COLUMNS.get(k, (k, "text"))[0], "kind": COLUMNS.get(k, (k, "text"))[1]}
               for k in keys]
    score_key = "val_macro_f1" if any(finite(r.get("val_macro_f1")) is not None for r in rows) else None
    scores = [finite(r.get(score_key)) if score_key else None for r in rows]
    best = max((i for i, s in enumerate(scores) if s is not None), key=lambda i: scores[i], default=None)
    if any(r.get("status") for r in rows):
        best, score_key = next((i for i, r in enumerate(rows) if r.get("status") == "best"), None), "verdict"
    out = []
    for i, r in enumerate(rows):
        cells = []
        for c in columns:
            value, x = r.get(c["key"]), finite(r.get(c["key"]))
            numeric = c["kind"] != "text"
            cells.append({"text": fmt(value, c["kind"]), "sort": x if numeric and x is not None else str(value or ""),
                          "num": numeric})
        out.append({"cells": cells, "best": i == best})
    return {"columns": columns, "rows": out, "score_key": score_key}


def _split_sizes(folder: Path, models: list[dict[str, Any]], classes: list[str], notes: list) -> dict | None:
    """Images per class and split: from the compare's split.csv, else from what the first run recorded."""
    counts = _manifest_counts(folder / "split.csv", notes) or _recorded_counts(models)  # {split: {class: n}}
    if not counts:
        return None
    order = {s: i for i, s in enumerate(SPLITS)}
    splits = sorted(counts, key=lambda s: (order.get(s, len(SPLITS)), s))
    present = {c for per_class in counts.values() for c in per_class}
    labels = [c for c in classes if c in present] + sorted(present - set(classes))
    rows = [{"class": c, "counts": [counts[s].get(c, 0) for s in splits]} for c in labels]
    for r in rows:
        r["total"] = sum(r["counts"])
    totals = [sum(r["counts"][i] for r in rows) for i in range(len(splits))]
    return {"splits": splits, "rows": rows, "totals": totals, "total": sum(totals)}


def _manifest_counts(path: Path, notes: list) -> dict[str, dict[str, int]]:
    if not path.is_file():
        return {}
    try:
        manifest = Manifest.load(path)
    except (ClassbenchError, OSError, ValueError) as err:  # ValueError: an unknown split name, bad UTF-8
        notes.append(_warn("warn", path.parent.name, f"{path.name}: cannot read ({first_line(err)})"))
        return {}
    return manifest.split_counts(present_only=True)


def _recorded_counts(models: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    for m in models:
        recorded = (m["config"].get("split") or {}).get("counts") or m["summary"].get("class_counts") or {}
        counts = {split: {str(c): int(n) for c, n in (per_class or {}).items()} for split, per_class in recorded.items()}
        if counts:
            return counts
    return {}


def _imbalance_notes(models: list[dict[str, Any]]) -> list[str]:
    notes = {}
    for m in models:
        args, resolved = m["config"].get("args") or {}, m["config"].get("resolved") or {}
        if resolved.get("balance"):
            ratio = finite(resolved.get("imbalance_ratio"))
            notes[m["name"]] = (f"--balance {args.get('balance', 'auto')} \u2192 "
                                f"{BALANCE_TEXT.get(resolved['balance'], resolved['balance'])}"
                                + (f" (training split imbalance {ratio:.1f}:1)" if ratio else "")
                                + (f"; checkpoint picked on {args['monitor']}" if args.get("monitor") else ""))
    if len(set(notes.values())) == 1:
        return [("" if len(models) == 1 else "every model: ") + next(iter(notes.values()))]
    return [f"{name}: {text}" for name, text in notes.items()]


def _onepc_rows(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One-image-per-class (eval-onepc.json) next to the locked test split (eval.json), per model."""
    rows = []
    for m in models:
        one, ev = m["onepc"] or {}, m["eval"] or {}
        ci = (ev.get("ci95") or {}).get("macro_f1")
        ci_text = _ci_text(ci)
        rows.append({"name": m["name"], "has_onepc": bool(one), "has_eval": bool(ev),
                     "onepc_n": one.get("n_images"), "test_n": ev.get("n_images"),
                     **{f"{p}_{k}": fmt((d.get("metrics") or {}).get(key)) for p, d in (("onepc", one), ("test", ev))
                        for k, key in (("acc", "accuracy"), ("f1", "macro_f1"))},
                     "ci": ci_text, "ci_width": fmt(float(ci[1]) - float(ci[0])) if ci_text else None})
    return rows


def _run_row(m: dict[str, Any]) -> dict[str, Any]:
    """A leaderboard row for a single run folder (the columns compare writes)."""
    ev, best = m["eval"] or {}, m["summary"].get("best_metrics") or {}
    test = (ev.get("metrics") or {}) if ev.get("split", "test") == "test" else {}
    info = {**m["summary"], **{k: v for k, v in m["meta"].items() if v is not None}}
    return {"model": m["name"], "architecture": info.get("architecture") or info.get("model"),
            "params": info.get("num_params"), "img_size": info.get("img_size"),
            "train_seconds": info.get("training_seconds"), "train_images_per_s": info.get("train_images_per_s"),
            "infer_ms_batch1": m["inference"].get("ms_batch1"),
            "infer_images_per_s_batch32": m["inference"].get("images_per_s_batch32"),
            **{k: best.get(k) for k in ("val_acc", "val_macro_f1", "val_balanced_acc")},
            **{column: test.get(key) for column, key in TEST_METRICS.items()},
            "worst_class_recall": test.get("worst_class_recall"),
            "worst_class": test.get("worst_class"), "ece": test.get("ece")}


def _is_run(folder: Path) -> bool:
    return any((folder / f).is_file() for f in ("model.json", "summary.json", "config.yaml"))


def _compare_models(folder: Path, shown: Path, notes: list) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A compare folder's models (those on its leaderboard, then other run folders in it) and its leaderboard rows."""
    models: list[dict[str, Any]] = []
    lb_rows = _read_csv(folder / "leaderboard.csv", notes)
    for r in lb_rows:
        name = str(r.get("model") or "")
        if r.get("status") and not r.get("run_dir"):  # cross-validated only: its numbers are in the verdict;
            continue  # a final run left from an earlier verdict (other --repeats) is not this verdict's model
        cands = [folder / n for n in (name, Path(str(r.get("run_dir") or "")).name) if n]
        run_dir = next((c for c in cands if c.name not in (".", "..") and c.parent.resolve() == folder
                        and c.is_dir()), None)
        if run_dir is None:  # only subfolders of the compare folder are read
            notes.append(_warn("warn", name, f"run folder not found in {shown}"))
        models.append(_model(name, run_dir, shown / (run_dir.name if run_dir else name), notes))
    listed = {Path(m["dir"]).name for m in models}  # runs without eval.json are not on the leaderboard
    extra = [_model(p.name, p, shown / p.name, notes) for p in sorted(folder.iterdir())
             if p.name not in listed and p.is_dir() and _is_run(p)]
    models += extra
    if not lb_rows:  # no leaderboard.csv (yet): rows from the run folders, best validation macro-F1 first
        lb_rows = sorted((_run_row(m) for m in extra), key=lambda r: -(finite(r["val_macro_f1"]) or -1.0))
    return models, lb_rows


def collect_report_data(folder: str | os.PathLike) -> dict[str, Any]:
    """Everything the report shows, as plain data (see the template for how it is used)."""
    shown = Path(folder)
    folder = shown.resolve()
    if not folder.is_dir():
        raise RunError(f"{shown}: not found; give a run folder (classbench train) or a compare folder")
    is_compare = (folder / "leaderboard.csv").is_file() or (folder / "compare.json").is_file()
    if not is_compare and not _is_run(folder):
        raise RunError(f"{shown}: not a classbench run or compare folder (no model.json, summary.json, "
                       "config.yaml, leaderboard.csv or compare.json)")
    notes: list[dict[str, str]] = []
    compare = _load(folder / "compare.json", notes) if is_compare else None
    in_compare = not is_compare and (folder.parent / "compare.json").is_file()  # a run inside a compare folder
    check = _load((folder.parent if in_compare else folder) / "check.json", notes)
    if is_compare:
        models, lb_rows = _compare_models(folder, shown, notes)
    else:
        m = _model(folder.name, folder, shown, notes)
        models, lb_rows = [m], [_run_row(m)]
    classes = [str(c) for c in (check or {}).get("classes") or []] or next(
        ([str(c) for c in m["meta"]["classes"]] for m in models if m["meta"].get("classes")), [])
    warnings = [w for m in models for w in m["warnings"]]
    if check:
        if check.get("problem"):
            warnings.insert(0, _warn("error", "data", str(check["problem"])))
        warnings += [_warn("warn", "data", str(w)) for w in check.get("warnings") or []]
    environment = (compare or {}).get("environment") or next(
        (m["config"]["environment"] for m in models if m["config"].get("environment")), None)
    command = (compare or {}).get("command") or (models[0]["train_command"] if not is_compare else None)
    verdict = _verdict(folder, models, notes) if is_compare else None
    preset = (compare or {}).get("preset")
    onepc = _onepc_rows(models) if preset == "report" or any(m["onepc"] for m in models) else None
    return {
        "kind": "compare" if is_compare else "run", "title": folder.name, "folder": os.fspath(shown),
        "generated": timestamp(),
        "compare": compare, "preset": preset, "command": command,
        "report_command": f"classbench report {_cmd_path(shown)}",
        "leaderboard": _leaderboard(lb_rows), "models": models, "classes": classes,
        "figures": [f for f in (_figure(folder / n, t) for n, t in COMPARE_FIGURES) if f["uri"]] if is_compare else [],
        "check": check, "imbalance_notes": _imbalance_notes(models),
        "split": _split_sizes(folder, models, classes, notes), "onepc": onepc,
        "environment": environment, "warnings": notes + warnings, "verdict": verdict,
    }


def _verdict(folder: Path, models: list[dict[str, Any]], notes: list[dict[str, str]]) -> dict[str, Any] | None:
    """``verdict.json`` with its figure, the selected model's test estimate and the label check, for the report."""
    verdict = _load(folder / "verdict.json", notes)
    if verdict is None:
        return None
    for m in models:  # a model that was not selected is never opened on the test split: say so, not "not evaluated"
        if m["eval"] is None:
            m["warnings"] = [w for w in m["warnings"] if w["level"] != "info"]
    final = next((m for m in models if m["name"] == verdict.get("selected") and m["eval"]), None)
    issues = _read_csv(folder / "label_issues.csv", notes)
    return {**verdict, "figure": _figure(folder / "verdict.png", "Verdict"),
            "final": final and {"name": final["name"], "metrics": final["metrics"],
                                "n_images": final["eval"].get("n_images")},
            "no_final": not verdict.get("final"),
            "label_issues": issues[:MAX_LABEL_ISSUES_SHOWN], "label_issues_total": len(issues),
            "label_issues_figure": _figure(folder / "label_issues.png", "Images whose label to check first")}


def _csp_hash(text: Any) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(str(text).encode("utf-8")).digest()).decode("ascii")


def render_report(data: dict[str, Any]) -> str:
    """The HTML text for ``collect_report_data``'s dict."""
    from jinja2 import ChainableUndefined, Environment, PackageLoader, Undefined, select_autoescape

    env = Environment(loader=PackageLoader("classbench.report", "templates"), undefined=ChainableUndefined,
                      autoescape=select_autoescape(["html", "j2"], default=True), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=lambda v, kind="score": fmt(None if isinstance(v, Undefined) else v, kind),
                       csp_hash=_csp_hash, rel=shown_path)
    return env.get_template("report.html.j2").render(d=data)


def build_report(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``report.html`` (or ``out``) for a run folder or a compare folder; returns its path."""
    html = render_report(collect_report_data(folder))
    return atomic_write_text(Path(out) if out is not None else Path(folder) / "report.html", html)
