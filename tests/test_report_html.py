"""classbench.report.html: a self-contained, escaped, offline report for compare and run folders."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from classbench.data.check import BadFile, CheckReport, ClassStats
from classbench.errors import RunError
from classbench.metrics import proportion_interval
from classbench.report.html import build_report, collect_report_data, render_report

EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
CLASSES = ["cat", "dog & co", EVIL]
BAD_FILE = 'data/cat/a&b"c.png'
ODD_MODEL = 'vit "x" & <y>'
COMPARE_FIGS = ["curves_grid.png", "training_time.png", "class_counts.png"]  # score_vs_time.png missing
EVAL_FIGS = ["confusion.png", "class_probabilities.png", "reliability.png", "misclassified.png"]
COMMAND = "classbench compare data --models resnet18,mobilenetv3,vit --preset report --out runs/cmp"
LB_COLUMNS = ["model", "architecture", "params", "img_size", "train_seconds", "train_images_per_s", "infer_ms_batch1",
              "infer_images_per_s_batch32", "val_acc", "val_macro_f1", "val_balanced_acc", "test_acc", "test_macro_f1",
              "test_balanced_acc", "worst_class_recall", "worst_class", "ece", "run_dir"]


def png(path: Path, color: tuple[int, int, int] = (30, 120, 200)) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (12, 8), color).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


def environment() -> dict:
    return {"python": "3.11.2", "platform": "Linux-6.1-x86_64", "cpu": "Test CPU 9000", "cpu_count": 2,
            "torch_threads": 2, "cuda": False, "versions": {"classbench": "0.1.0", "torch": "2.14.1", "onnx": None}}


def eval_dict(recalls: list[float], n_images: int = 30, split: str = "test") -> dict:
    per_class = [{"class": c, "precision": 0.0 if r == 0 else 0.8, "recall": r, "f1": 0.0 if r == 0 else 0.75,
                  "support": 10, "predicted": 0 if r == 0 else 12, "precision_ci": None if r == 0 else [0.52, 0.96],
                  "recall_ci": list(proportion_interval(round(r * 10), 10))} for c, r in zip(CLASSES, recalls)]
    never = [f"class '{p['class']}' was never predicted (0 of 10 test images)" for p in per_class if not p["predicted"]]
    return {"run": "runs/x", "split": split, "data": None, "n_images": n_images, "tta": False, "classes": CLASSES,
            "metrics": {"accuracy": 0.9, "balanced_accuracy": 0.85, "macro_f1": round(sum(recalls) / len(recalls), 4), "weighted_f1": 0.9,
                        "top_k": {"top_3": 1.0}, "worst_class_recall": min(recalls), "worst_class": CLASSES[-1],
                        "ece": 0.04, "ece_uncalibrated": 0.07, "temperature": 1.3, "nll": 0.31},
            "ci95": {"accuracy": [0.8, 0.97], "balanced_accuracy": [0.71, 0.93], "macro_f1": [0.7, 0.9]},
            "ci_method": {"accuracy": "Clopper-Pearson exact", "balanced_accuracy": "Clopper-Pearson per class, Bonferroni-combined",
                          "macro_f1": "bootstrap, 1000 resamples"}, "per_class": per_class,
            "confusion": [[8, 1, 1], [1, 8, 1], [0, 0, 10]], "warnings": never, "unknown_classes": [],
            "missing_classes": [], "figures": {"confusion": "confusion.png", "class_probabilities":
                                               "class_probabilities.png", "reliability": "reliability.png",
                                               "misclassified": "misclassified.png"},
            "inference": {"seconds": 0.3, "images_per_s": 100.0, "backend": "torch"}}


def make_run(run: Path, arch: str, recalls: list[float] | None, onepc: bool = False, data: str = "data") -> None:
    run.mkdir(parents=True)
    args = {"data": data, "model": arch, "out": str(run), "epochs": 3, "seed": 0, "balance": "auto",
            "pretrained": False, "img_size": None, "batch_size": "auto"}
    config = {"command": f"classbench train {data} --model {arch} --epochs 3",  # recorded by train as typed
              "args": args, "resolved": {"architecture": arch, "img_size": 32, "balance": "weights",
                                         "imbalance_ratio": 5.0, "batch_size": 16, "precision": "32"},
              "split": {"counts": {"train": {c: 7 for c in CLASSES}, "test": {c: 1 for c in CLASSES}}},
              "environment": environment()}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "model.json").write_text(json.dumps({"format": "classbench-model/1", "architecture": arch,
                                                "classes": CLASSES, "img_size": 32, "num_params": 11_177_538}))
    (run / "summary.json").write_text(json.dumps({
        "model": arch, "epochs_run": 3, "epochs_planned": 3, "stopped_early": False, "training_seconds": 12.5,
        "train_images_per_s": 88.0, "best_epoch": 2, "monitor": "val_macro_f1", "best_value": 0.8,
        "best_metrics": {"val_acc": 0.82, "val_macro_f1": 0.8, "val_balanced_acc": 0.79}, "precision": "32"}))
    (run / "metrics.csv").write_text("epoch,train_loss,val_acc\n1,1.0,0.5\n2,0.5,0.8\n")
    png(run / "curves.png")
    if recalls is not None:
        (run / "eval.json").write_text(json.dumps(eval_dict(recalls)))
        for name in EVAL_FIGS:
            png(run / name, (200, 60, 40))
    if onepc:
        (run / "eval-onepc.json").write_text(json.dumps(eval_dict([1.0, 1.0, 0.0], n_images=3)))


def write_split(path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "group"])
        for c in CLASSES:
            for i, split in enumerate(["train"] * 7 + ["val"] * 2 + ["test"]):
                w.writerow([f"data/{c}/{i}.png", c, split, f"g{i}"])
        w.writerow([BAD_FILE, "cat", "train", "gx"])


def check_dict() -> dict:
    stats = {c: ClassStats(count=n, share=n / 33, bad=int(c == "cat"), min_width=32, max_width=64, min_height=32,
                           max_height=32) for c, n in zip(CLASSES, [20, 9, 4])}
    report = CheckReport(
        path="data", layout="class folders", classes=CLASSES, stats=stats, usable=True, problem=None, imbalance=5.0,
        warnings=["imbalance 5.0:1 (largest 'cat' 20, smallest '" + EVIL + "' 4)"],
        bad_files=[BadFile(BAD_FILE, "cat", "truncated image file; re-export it or delete it")],
        skipped=[("data/notes.txt", "not an image")], exact_duplicates=[["data/cat/1.png", "data/cat/2.png"]],
        near_duplicates=[["data/cat/3.png", f"data/{EVIL}/3.png"]],
        label_conflicts=[{"labels": ["cat", EVIL], "files": ["data/cat/3.png", f"data/{EVIL}/3.png"]}],
        split_counts={}, scanned=34, scan_seconds=0.1, images_per_second=340.0, near_dup_threshold=4)
    return report.to_dict()


@pytest.fixture
def compare_dir(tmp_path: Path) -> Path:
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_text(json.dumps({
        "command": COMMAND, "models": ["resnet18", "mobilenetv3", ODD_MODEL], "seed": 0, "preset": "report",
        "data": "data", "img_size": None, "epochs": 3, "environment": environment(), "created": "2026-01-01T00:00"}))
    (out / "check.json").write_text(json.dumps(check_dict()))
    write_split(out / "split.csv")
    for name in COMPARE_FIGS:
        png(out / name, (0, 160, 80))
    rows = [("resnet18", [0.9, 0.8, 0.7], 0.8312), ("mobilenetv3", [0.9, 0.8, 0.0], 0.55), (ODD_MODEL, None, None)]
    with open(out / "leaderboard.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, LB_COLUMNS)
        w.writeheader()
        for name, recalls, f1 in rows:
            make_run(out / name, name.split()[0], recalls, onepc=recalls is not None)
            w.writerow({"model": name, "architecture": name.split()[0], "params": 11177538, "img_size": 32,
                        "train_seconds": 12.5, "train_images_per_s": 88.0, "infer_ms_batch1": 3.21,
                        "infer_images_per_s_batch32": 950.0, "val_acc": 0.82, "val_macro_f1": 0.8,
                        "val_balanced_acc": 0.79, "test_acc": "" if f1 is None else 0.9,
                        "test_macro_f1": "" if f1 is None else f1, "test_balanced_acc": "" if f1 is None else 0.85,
                        "worst_class_recall": "" if recalls is None else min(recalls),
                        "worst_class": "" if recalls is None else EVIL, "ece": "" if f1 is None else 0.04,
                        "run_dir": f"runs/cmp/{name}"})
    return out


def leaderboard_rows(html: str) -> list[str]:
    table = re.search(r'<table id="leaderboard".*?<tbody>(.*?)</tbody>', html, re.DOTALL)
    assert table, "no leaderboard table"
    return re.findall(r"<tr[^>]*>.*?</tr>", table.group(1), re.DOTALL)


def assert_offline(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?!data:|#)[a-z]+:""", html, re.IGNORECASE)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*//""", html)
    for src in re.findall(r'<img[^>]*\ssrc="([^"]*)"', html):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ compare folder
def test_compare_report_renders_everything(compare_dir: Path) -> None:
    path = build_report(compare_dir)
    assert path == compare_dir / "report.html"
    assert not [p for p in compare_dir.iterdir() if p.name.endswith(".tmp")]
    html = path.read_text(encoding="utf-8")
    rows = leaderboard_rows(html)
    assert len(rows) == 3
    assert "resnet18" in rows[0] and 'class="best"' in rows[0] and ">0.831<" in rows[0]
    assert not any('class="best"' in r for r in rows[1:])
    assert "11.2M" in rows[0] and "12 s" in rows[0] and "3.21" in rows[0]
    assert "vit &#34;x&#34; &amp; &lt;y&gt;" in rows[2]
    # per-class tables for the two evaluated models; zero recall flagged red
    assert html.count('class="sortable per-class"') == 2
    zero_rows = re.findall(r'<tr class="zero">\s*<td data-sort="([^"]*)"', html)
    assert zero_rows == [EVIL_ESCAPED]
    assert "never predicted" in html
    # the unevaluated model says what to run
    assert "Not evaluated yet — run <code>classbench evaluate" in html
    assert html.count("Not evaluated yet") == 1
    # figures embedded: 3 compare figures + curves for 3 runs + 4 eval figures for 2 runs
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) == 3 + 3 + 2 * 4
    assert_offline(html)
    # warnings on top, before the leaderboard
    warnings = html[html.index('id="warnings"'):html.index('id="leaderboard-section"')]
    assert "mobilenetv3:" in warnings and "never predicted" in warnings and EVIL_ESCAPED in warnings
    assert "imbalance 5.0:1" in warnings
    # one-image-per-class section with both protocols and the CI width
    onepc = html[html.index('id="onepc"'):html.index('id="models"')]
    assert "not a test set" in onepc and "0.700–0.900" in onepc and "0.200" in onepc
    # data check, split, environment, reproduce
    data = html[html.index('id="data"'):html.index('id="split"')]
    assert "5.0:1" in data and "class-weighted loss" in data and "truncated image file" in data
    assert "label conflict" in data and "near-duplicate" in data
    split = html[html.index('id="split"'):html.index('id="environment"')]
    assert re.search(r"<td>all classes</td>.*?>22<.*?>6<.*?>3<.*?>31<", split, re.DOTALL)
    assert "2.14.1" in html and "Test CPU 9000" in html and "not installed" in html
    assert COMMAND in html and "classbench report" in html


def test_user_text_is_escaped(compare_dir: Path) -> None:
    html = build_report(compare_dir).read_text(encoding="utf-8")
    assert EVIL not in html and "alert(1)</script>" not in html
    assert EVIL_ESCAPED in html
    assert "a&amp;b&#34;c.png" in html and BAD_FILE not in html
    assert ODD_MODEL not in html
    # exactly the two scripts of the template: the JSON data island and the page's own code
    assert len(re.findall(r"<script\b", html)) == 2
    data = re.search(r'<script type="application/json" id="cb-data">(.*?)</script>', html, re.DOTALL).group(1)
    assert json.loads(data) == {"leaderboard_rows": 3, "models": ["resnet18", "mobilenetv3", ODD_MODEL]}
    assert "<" not in data and "&" not in data  # tojson escapes <, >, & and '


def test_csp_allows_exactly_the_page_script(compare_dir: Path) -> None:
    html = build_report(compare_dir).read_text(encoding="utf-8")
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.DOTALL).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp and "img-src data:" in csp


def test_collect_report_data(compare_dir: Path) -> None:
    d = collect_report_data(compare_dir)
    assert d["kind"] == "compare" and d["preset"] == "report" and d["command"] == COMMAND
    assert [m["name"] for m in d["models"]] == ["resnet18", "mobilenetv3", ODD_MODEL]
    assert [r["best"] for r in d["leaderboard"]["rows"]] == [True, False, False]
    assert d["leaderboard"]["score_key"] == "val_macro_f1"
    errors = [(w["scope"], w["text"]) for w in d["warnings"] if w["level"] == "error"]
    assert errors == [("mobilenetv3", f"never predicted: {EVIL} (0 of 10)")]
    assert any(w["level"] == "info" and w["scope"] == ODD_MODEL for w in d["warnings"])
    assert [r["ci_width"] for r in d["onepc"]] == ["0.200", "0.200", None]
    assert d["split"]["splits"] == ["train", "val", "test"] and d["split"]["totals"] == [22, 6, 3]
    assert d["classes"] == CLASSES
    assert len(d["figures"]) == 3 and all(f["uri"].startswith("data:image/png;base64,") for f in d["figures"])


def test_without_a_verdict_the_best_row_is_picked_on_validation_never_on_test(compare_dir: Path) -> None:
    """A leaderboard with no verdict columns (an older compare): the highlighted row has the top val macro-F1,
    although another row has the higher test macro-F1."""
    text = (compare_dir / "leaderboard.csv").read_text().splitlines()
    header, rows = text[0].split(","), [line.split(",") for line in text[1:3]]
    val, test = header.index("val_macro_f1"), header.index("test_macro_f1")
    rows[0][val], rows[0][test], rows[1][val], rows[1][test] = "0.7", "0.9", "0.8", "0.5"
    (compare_dir / "leaderboard.csv").write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    board = collect_report_data(compare_dir)["leaderboard"]
    assert [r["best"] for r in board["rows"]] == [False, True] and board["score_key"] == "val_macro_f1"


def test_compare_folder_without_runs_or_extras(tmp_path: Path) -> None:
    out = tmp_path / "bare"
    out.mkdir()
    (out / "leaderboard.csv").write_text("model,test_macro_f1,run_dir\nresnet18,0.5,../../etc\n../escape,0.9,x\n")
    html = build_report(out).read_text(encoding="utf-8")
    assert len(leaderboard_rows(html)) == 2
    assert "run folder not found" in html and html.count("Not evaluated yet") == 2
    assert f"classbench evaluate {out}/resnet18</code>" in html
    assert "No data check recorded" in html and "No split recorded" in html and "No environment recorded" in html
    assert "<img" not in html
    assert_offline(html)


def test_runs_missing_from_the_leaderboard_get_a_section(compare_dir: Path) -> None:
    lines = (compare_dir / "leaderboard.csv").read_text().splitlines()
    (compare_dir / "leaderboard.csv").write_text("\n".join(lines[:3]) + "\n")  # compare lists evaluated runs only
    html = build_report(compare_dir).read_text(encoding="utf-8")
    assert len(leaderboard_rows(html)) == 2
    assert html.count("Not evaluated yet") == 1 and "vit &#34;x&#34; &amp; &lt;y&gt;" in html
    (compare_dir / "leaderboard.csv").unlink()  # no leaderboard at all: rows come from the run folders,
    summary = json.loads((compare_dir / "resnet18" / "summary.json").read_text())  # best validation score first:
    summary["best_metrics"]["val_macro_f1"] = 0.7  # resnet18 has the top test score, but the lowest val score
    (compare_dir / "resnet18" / "summary.json").write_text(json.dumps(summary))
    d = collect_report_data(compare_dir)
    names = [r["cells"][0]["text"] for r in d["leaderboard"]["rows"]]
    assert names == ["mobilenetv3", ODD_MODEL, "resnet18"] and d["leaderboard"]["rows"][0]["best"]


# ------------------------------------------------------------------ single run folders
def test_single_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    make_run(run, "resnet18", [0.9, 0.0, 0.8])
    write_split(run / "split.csv")
    (run / "inference.json").write_text(json.dumps({"ms_batch1": 4.567, "images_per_s_batch32": 321.0}))
    html = build_report(run).read_text(encoding="utf-8")
    rows = leaderboard_rows(html)
    assert ">4.57<" in rows[0] and ">321<" in rows[0]
    assert len(rows) == 1 and "r1" in rows[0] and ">0.567<" in rows[0] and 'class="best"' in rows[0]
    assert html.count('class="sortable per-class"') == 1
    assert "classbench train data --model resnet18 --epochs 3" in html
    assert re.findall(r'<tr class="zero">\s*<td data-sort="([^"]*)"', html) == ["dog &amp; co"]
    assert len(re.findall(r"<img ", html)) == 5 and 'id="onepc"' not in html
    assert_offline(html)


def per_class_cells(html: str) -> list[list[str]]:
    """The per-class table's cells (inner HTML) of the first model, row by row."""
    table = re.search(r'<table class="sortable per-class">.*?<tbody>(.*?)</tbody>', html, re.DOTALL).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL) for row in re.findall(r"<tr.*?</tr>", table, re.DOTALL)]


def test_intervals_and_their_methods_are_shown(tmp_path: Path) -> None:
    run = tmp_path / "r5"
    make_run(run, "resnet18", [0.9, 0.0, 1.0])
    html = build_report(run).read_text(encoding="utf-8")
    metrics = re.search(r'<table class="metrics">(.*?)</table>', html, re.DOTALL).group(1)
    assert "95% CI</th><th>interval method</th>" in metrics
    for label, ci, method in (("accuracy", "0.800–0.970", "Clopper-Pearson exact"),
                              ("balanced accuracy", "0.710–0.930", "Clopper-Pearson per class, Bonferroni-combined"),
                              ("macro-F1", "0.700–0.900", "bootstrap, 1000 resamples")):
        assert re.search(rf"<td>{label}</td>\s*<td[^>]*>[^<]*</td>\s*<td[^>]*>{ci}</td>\s*<td>{re.escape(method)}</td>",
                         metrics), label
    rows = per_class_cells(html)
    for row, recall in zip(rows, [0.9, 0.0, 1.0]):
        low, high = proportion_interval(round(recall * 10), 10)
        assert f">{low:.2f}–{high:.2f}</small>" in row[2]  # recall with its Clopper-Pearson interval
        assert ("<small" in row[1]) == (recall > 0)  # no precision interval for a never-predicted class
    assert "0.52–0.96" in rows[0][1] and "Clopper-Pearson interval" in html


def test_interval_fields_from_eval_json_are_escaped_and_tolerated(tmp_path: Path) -> None:
    run = tmp_path / "r6"
    make_run(run, "resnet18", [0.9, 0.5, 1.0])
    ev = json.loads((run / "eval.json").read_text())
    ev["ci_method"]["macro_f1"] = EVIL
    ev["ci95"]["accuracy"] = ["<i>bad</i>", 1.0]  # damaged: no interval shown, no crash
    ev["per_class"][0]["recall_ci"] = [EVIL, 1.0]
    del ev["ci_method"]["balanced_accuracy"]
    (run / "eval.json").write_text(json.dumps(ev))
    html = build_report(run).read_text(encoding="utf-8")
    assert EVIL not in html and f"<td>{EVIL_ESCAPED}</td>" in html and "bad</i>" not in html
    assert "not recorded" in html  # an interval without its method
    assert "<small" not in per_class_cells(html)[0][2]


def test_run_inside_a_compare_folder_shows_the_data_check(compare_dir: Path) -> None:
    html = build_report(compare_dir / "resnet18").read_text(encoding="utf-8")
    assert len(leaderboard_rows(html)) == 1 and "truncated image file" in html and 'id="onepc"' in html
    assert "classbench train data --model resnet18 --epochs 3" in html


def test_run_without_eval_or_figures(tmp_path: Path) -> None:
    run = tmp_path / "r2"
    make_run(run, "resnet18", None)
    (run / "curves.png").unlink()
    out = build_report(run, out=tmp_path / "elsewhere.html")
    assert out == tmp_path / "elsewhere.html" and not (run / "report.html").exists()
    html = out.read_text(encoding="utf-8")
    assert f"Not evaluated yet — run <code>classbench evaluate {run}</code>" in html
    assert "<img" not in html and len(leaderboard_rows(html)) == 1
    assert "Split sizes per class" in html and ">21<" in html  # from config.yaml's recorded counts


def test_damaged_files_become_warnings(tmp_path: Path) -> None:
    run = tmp_path / "r3"
    make_run(run, "resnet18", [1.0, 1.0, 1.0])
    (run / "eval.json").write_text("{not json")
    (run / "config.yaml").write_text("- just\n- a list\n")
    (run / "confusion.png").write_bytes(b"<svg onload=alert(1)>")  # not a PNG: not embedded
    html = build_report(run).read_text(encoding="utf-8")
    assert "not valid JSON" in html and "expected a mapping" in html
    assert "Not evaluated yet" in html and "onload" not in html


def test_eval_of_another_split_is_flagged(tmp_path: Path) -> None:
    run = tmp_path / "r4"
    make_run(run, "resnet18", [1.0, 1.0, 1.0])
    ev = json.loads((run / "eval.json").read_text())
    (run / "eval.json").write_text(json.dumps({**ev, "split": "val"}))
    d = collect_report_data(run)
    assert any("'val' split, not the locked test" in w["text"] for w in d["warnings"])
    assert d["leaderboard"]["score_key"] == "val_macro_f1"  # no test numbers from a val evaluation


def test_not_a_run_folder(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not found"):
        build_report(tmp_path / "nope")
    with pytest.raises(RunError, match="not a classbench run or compare folder"):
        build_report(tmp_path)


def test_render_is_deterministic_apart_from_the_timestamp(compare_dir: Path) -> None:
    d = collect_report_data(compare_dir)
    assert render_report(d) == render_report(d)


# ------------------------------------------------------------------ headless Chromium
@pytest.fixture(scope="session")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    try:
        subprocess.run("apt-get update && apt-get install -y --no-install-recommends chromium", shell=True,
                       check=True, capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"chromium could not be installed with apt-get: {err}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed no chromium binary")
    return found


def dump_dom(chromium: str, page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console lines Chromium logged."""
    profile = tmp_path / f"profile-{page.stem}"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    return proc.stdout, console


def test_report_in_headless_chromium(chromium: str, compare_dir: Path, tmp_path: Path) -> None:
    dom, console = dump_dom(chromium, build_report(compare_dir), tmp_path)
    assert console == []
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ok="1"' in body and 'data-rows="3"' in body
    assert len(leaderboard_rows(dom)) == 3
    assert EVIL_ESCAPED in dom  # shown as text
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", dom, re.DOTALL)
    assert len(scripts) == 2 and not any("alert(1)" in s for s in scripts)


def test_sorting_and_csp_in_headless_chromium(chromium: str, compare_dir: Path, tmp_path: Path) -> None:
    html = build_report(compare_dir).read_text(encoding="utf-8")
    probe = (
        "var t = document.getElementById('leaderboard'), b = document.body;"
        "function order() { return Array.prototype.map.call(t.tBodies[0].rows,"
        " function (r) { return r.cells[0].getAttribute('data-sort'); }).join('|'); }"
        "function click(label) { Array.prototype.forEach.call(t.tHead.rows[0].cells, function (th) {"
        " if (th.textContent.trim() === label) { th.querySelector('button').click(); } }); }"
        "click('test macro-F1'); b.setAttribute('data-asc', order());"
        "click('test macro-F1'); b.setAttribute('data-desc', order());"
        "click('model'); b.setAttribute('data-by-name', order());"
    )
    digest = base64.b64encode(hashlib.sha256(probe.encode()).digest()).decode()
    html = html.replace("script-src '", f"script-src 'sha256-{digest}' '", 1)
    injected = "<script>document.body.setAttribute('data-pwned', '1')</script>"  # not in the CSP: must not run
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", f"<script>{probe}</script>{injected}</body>"), encoding="utf-8")
    dom, console = dump_dom(chromium, page, tmp_path)
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ok="1"' in body and "data-pwned" not in body
    assert len(console) == 1 and "Content Security Policy" in console[0]  # the injected script was refused
    odd = ODD_MODEL.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    assert f'data-asc="mobilenetv3|resnet18|{odd}"' in body  # blanks last either way
    assert f'data-desc="resnet18|mobilenetv3|{odd}"' in body
    assert f'data-by-name="mobilenetv3|resnet18|{odd}"' in body
