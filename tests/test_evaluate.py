"""evaluate(): metrics match sklearn on independently recomputed predictions, files, warnings, temperature,
held-out folders with unknown/missing classes, val results kept apart, TTA, unreadable images.

The model is a random-init ``test_efficientnet`` whose linear head is fitted (logistic regression on its
pooled features) to coloured-square classes, then class ``blue`` gets a huge negative bias so it is never
predicted: the predictions are controlled without any training loop.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from sklearn import metrics as skm

from classbench.data.imageio import load_image
from classbench.data.manifest import Manifest, Sample
from classbench.data.transforms import normalize, to_uint8_tensor
from classbench.errors import DataError
from classbench.evaluation import EvalResult, evaluate, read_predictions, render_eval, write_predictions
from classbench.intervals import DEGENERATE_F1, eval_intervals
from classbench.metrics import balanced_accuracy_interval, classification_summary, proportion_interval
from classbench.models import create_model, save_model

CLASSES = ["blue", "green", "red", "stripes"]
SIZE, MEAN, STD = 32, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
COLOURS = {"red": (200, 40, 40), "green": (40, 190, 40), "blue": (40, 40, 210), "purple": (150, 40, 170)}
PNG = b"\x89PNG\r\n\x1a\n"


def _image(label: str, rng: np.random.Generator) -> Image.Image:
    if label == "stripes":
        arr = np.zeros((36, 36, 3)) + 20
        arr[::4], arr[1::4] = 230, 230
    else:
        arr = np.zeros((36, 36, 3)) + COLOURS[label]
    arr = np.clip(arr + rng.normal(0, 40, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _write_folder(root: Path, counts: dict[str, int], rng: np.random.Generator) -> list[Path]:
    paths = []
    for label, n in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = root / label / f"{label}_{i}.png"
            _image(label, rng).save(path)
            paths.append(path)
    return paths


def _batch(paths: list[Path]) -> torch.Tensor:
    return normalize(torch.stack([to_uint8_tensor(load_image(p), SIZE) for p in paths]), MEAN, STD)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``base/data/<split>/<class>/*.png`` and a template run folder ``base/run`` (never evaluated)."""
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    samples = []
    for split, n in (("train", 6), ("val", 6), ("test", 6)):
        for p in _write_folder(root / "data" / split, dict.fromkeys(CLASSES, n), rng):
            samples.append(Sample(p, p.parent.name, split))
    torch.manual_seed(0)
    net = create_model("test_efficientnet", len(CLASSES)).eval()
    with torch.inference_mode():
        feats = net.forward_head(net.forward_features(_batch([s.path for s in samples])), pre_logits=True).numpy()
    y = np.array([CLASSES.index(s.label) for s in samples])
    train = np.array([s.split == "train" for s in samples])
    mu, sigma = feats[train].mean(0), feats[train].std(0) + 1e-8
    lr = LogisticRegression(C=10.0, max_iter=5000).fit((feats[train] - mu) / sigma, y[train])
    weight = 3.0 * lr.coef_ / sigma  # x3: over-confident, so the fitted temperature is clearly not 1
    bias = 3.0 * (lr.intercept_ - (lr.coef_ * mu / sigma).sum(1))
    logits, blue = feats @ weight.T + bias, CLASSES.index("blue")
    # lower blue just enough that it loses on every image (by >= 2): never predicted -> zero recall
    bias[blue] -= (logits[:, blue] - np.delete(logits, blue, axis=1).max(1)).max() + 2.0
    head = net.get_classifier()
    head.weight.data = torch.tensor(weight, dtype=torch.float32)
    head.bias.data = torch.tensor(bias, dtype=torch.float32)
    run = root / "run"
    save_model(net, {"architecture": "test_efficientnet", "classes": CLASSES, "img_size": SIZE, "mean": MEAN,
                     "std": STD, "temperature": 1.0}, run)
    Manifest(samples, CLASSES).save(run / "split.csv")
    (run / "config.yaml").write_text("args:\n  augment: light\n", encoding="utf-8")
    return root


def _copy(base: Path, name: str) -> Path:
    """A fresh copy of the template run beside it (relative paths in split.csv stay valid)."""
    target = base / f"run_{name}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(base / "run", target)
    return target


@pytest.fixture
def run(base: Path, request: pytest.FixtureRequest) -> Path:
    return _copy(base, request.node.name)


@pytest.fixture(scope="module")
def tested(base: Path) -> tuple[Path, EvalResult]:
    """One default evaluation (the locked test split), shared by the read-only checks."""
    run = _copy(base, "tested")
    return run, evaluate(run, progress=False)


def _predict(run: Path, paths: list[Path]) -> np.ndarray:
    from classbench.predict import load

    clf = load(run, "torch")
    with torch.inference_mode():
        logits = clf.logits(_batch(paths))
    return np.asarray(logits.detach() if hasattr(logits, "detach") else logits).argmax(1)


def test_test_split_files_and_metrics_match_sklearn(tested: tuple[Path, EvalResult]) -> None:
    run, result = tested
    ev = json.loads((run / "eval.json").read_text())
    assert ev == json.loads(json.dumps(result.to_dict()))
    for name in ("confusion.png", "class_probabilities.png", "reliability.png", "misclassified.png"):
        assert (run / name).read_bytes()[:8] == PNG, name
        Image.open(run / name).verify()
    test = Manifest.load(run / "split.csv").subset("test")
    y_true = np.array([CLASSES.index(s.label) for s in test])
    y_pred = _predict(run, [s.path for s in test])
    assert ev["n_images"] == len(test) and ev["classes"] == CLASSES and ev["split"] == "test"
    m, labels = ev["metrics"], list(range(len(CLASSES)))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["accuracy"] >= 0.5  # the fitted head really recognises the non-blue classes
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    f1_kw = {"labels": sorted(set(y_true) | set(y_pred)), "zero_division": 0}
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro", **f1_kw))
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted", **f1_kw))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, row in enumerate(ev["per_class"]):
        assert row["class"] == CLASSES[i] and row["support"] == s[i]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]))
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    assert ev["confusion"] == cm.tolist()
    rows = list(csv.reader(io.StringIO((run / "confusion.csv").read_text())))
    assert rows[0][1:] == CLASSES and [r[0] for r in rows[1:]] == CLASSES
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == cm.tolist()
    n_right = int(np.trace(cm))
    assert ev["ci95"]["accuracy"] == pytest.approx(list(proportion_interval(n_right, len(test))))  # Clopper-Pearson
    assert ev["ci95"]["balanced_accuracy"] == pytest.approx(list(balanced_accuracy_interval(np.diag(cm), s)))
    low, high = ev["ci95"]["accuracy"]
    assert low < m["accuracy"] < high and set(ev["ci95"]) == set(ev["ci_method"]) == {
        "accuracy", "balanced_accuracy", "macro_f1"}
    assert ev["ci_method"]["accuracy"] == "Clopper-Pearson exact"
    assert ev["ci_method"]["balanced_accuracy"] == "Clopper-Pearson per class, Bonferroni-combined"
    low, high = ev["ci95"]["balanced_accuracy"]
    assert low <= m["balanced_accuracy"] <= high and low < high  # holds the sample value, never zero wide
    assert "bootstrap" in ev["ci_method"]["macro_f1"] and ev["ci95"]["macro_f1"][0] < ev["ci95"]["macro_f1"][1]
    for row in ev["per_class"]:
        tp = row["recall"] * row["support"]
        assert row["recall_ci"] == pytest.approx(list(proportion_interval(round(tp), row["support"])))
        assert (row["precision_ci"] is None) == (row["predicted"] == 0)  # blue is never predicted
    assert not [w for w in ev["warnings"] if w.startswith("recall of")]  # 6 test images per class: no note
    assert set(m["top_k"]) == {"top_1", "top_3"} and m["top_k"]["top_1"] == pytest.approx(m["accuracy"])
    assert np.allclose(np.nansum(ev["class_probabilities"], axis=1), 1.0)
    assert all(w["true"] != w["pred"] for w in ev["misclassified"])
    assert [w["p"] for w in ev["misclassified"]] == sorted((w["p"] for w in ev["misclassified"]), reverse=True)
    assert ev["inference"]["images_per_s"] > 0 and ev["unknown_classes"] == [] and ev["missing_classes"] == []


def test_zero_recall_class_is_warned_loudly(tested: tuple[Path, EvalResult]) -> None:
    result = tested[1]
    blue = [w for w in result.warnings if "'blue'" in w]
    assert blue and "never predicted" in blue[0] and blue[0] in result.critical
    assert result.per_class[0]["recall"] == 0 and result.per_class[0]["predicted"] == 0
    console = Console(record=True, width=200)
    render_eval(result, console)
    text = console.export_text()
    assert "WARNING" in text and "class 'blue' was never predicted" in text


def test_temperature_is_fitted_on_val_stored_and_changes_probabilities(tested: tuple[Path, EvalResult]) -> None:
    from classbench.calibration import fit_temperature
    from classbench.predict import load

    run, result = tested
    temperature = json.loads((run / "model.json").read_text())["temperature"]
    assert temperature == pytest.approx(result.metrics["temperature"]) and 1.2 < temperature < 50
    val = Manifest.load(run / "split.csv").subset("val")
    with torch.inference_mode():
        logits = np.asarray(load(run, "torch").logits(_batch([s.path for s in val])), dtype=np.float64)
    assert temperature == pytest.approx(fit_temperature(logits, [CLASSES.index(s.label) for s in val]), rel=1e-3)
    assert result.metrics["ece"] != pytest.approx(result.metrics["ece_uncalibrated"])
    raw = load(run, "torch")
    probs = np.asarray(raw.predict_proba(_batch([val[0].path])), dtype=np.float64)
    assert not np.allclose(probs, np.exp(logits[:1]) / np.exp(logits[:1]).sum())  # predict applies T


def test_held_out_folder_with_unknown_and_missing_classes(run: Path, tmp_path: Path) -> None:
    from classbench.data.imageio import load_image as read
    from classbench.errors import ImageLoadError
    from classbench.predict import expand_inputs, load

    held = tmp_path / "field photos"
    _write_folder(held, {"red": 3, "green": 3, "stripes": 3, "purple": 2}, np.random.default_rng(1))
    bad = held / "green" / "green_1b.png"
    bad.write_bytes(PNG + b"truncated")  # an unreadable file among the others
    result = evaluate(run, data=held, progress=False, batch_size=4)
    with pytest.raises(ImageLoadError) as err:
        read(bad)
    assert result.skipped == [str(err.value)] and f"skipped unreadable image {err.value}" in result.warnings
    assert result.unknown_classes == ["purple"] and result.n_unknown_images == 2
    assert result.missing_classes == ["blue"] and result.n_images == 9
    # predict on the same folder: the same file is reported with the same reason, the others get the
    # probabilities evaluate wrote (one inference path; same batches, same model.json temperature)
    paths, _, probs, _ = read_predictions(run / "predictions-field_photos.csv")
    files, _ = expand_inputs([held])
    preds = {p.path: p for p in load(run, "torch").predict_batch(files, batch_size=4)}
    assert preds[str(bad)].error == err.value.reason
    assert len(preds) == 12 and sum(p.error is None for p in preds.values()) == 11
    for path, row in zip(paths, probs):
        got = dict(preds[path].top)
        assert [got[c] for c in CLASSES] == pytest.approx(row.tolist(), abs=1e-6), path
    assert result.per_class[CLASSES.index("blue")]["support"] == 0
    assert any("purple" in w for w in result.warnings) and any("'blue'" in w for w in result.warnings)
    assert result.json_path.name == "eval-field_photos.json" and not (run / "eval.json").exists()
    assert (run / "confusion-field_photos.png").is_file() and (run / "confusion-field_photos.csv").is_file()
    assert result.figures["predictions_csv"] == "predictions-field_photos.csv"
    assert len(read_predictions(run / "predictions-field_photos.csv")[0]) == 9
    small = [w for w in result.warnings if w.startswith("recall of")]
    expected = []
    for row in result.per_class:  # 3 images each of red, green and stripes; blue has none (no note)
        if row["support"]:
            low, high = proportion_interval(round(row["recall"] * 3), 3)
            expected.append(f"recall of '{row['class']}' rests on 3 images (95% CI {low:.2f}-{high:.2f})")
    assert small == expected and len(small) == 3 and not set(small) & set(result.critical)
    assert json.loads(result.json_path.read_text())["data"] == str(held)


def test_val_split_keeps_the_test_result(tested: tuple[Path, EvalResult]) -> None:
    run = tested[0]
    before = (run / "eval.json").read_bytes()
    result = evaluate(run, split="val", progress=False)
    assert (run / "eval.json").read_bytes() == before
    assert result.json_path == run / "eval-val.json" and json.loads(result.json_path.read_text())["split"] == "val"
    assert result.figures["predictions_csv"] == "predictions-val.csv" and (run / "predictions-val.csv").is_file()
    assert all((run / f"{k}-val.png").is_file() for k in ("confusion", "class_probabilities", "reliability"))


def test_tta_runs_and_keeps_shapes(run: Path, tested: tuple[Path, EvalResult], tmp_path: Path) -> None:
    plain = tested[1]
    (run / "config.yaml").write_text("args:\n  augment: aerial\n", encoding="utf-8")
    tta = evaluate(run, tta=True, out=tmp_path / "tta", progress=False)
    assert tta.tta and tta.inference["tta_views"] == 3 and tta.n_images == plain.n_images
    assert np.asarray(tta.confusion).shape == np.asarray(plain.confusion).shape
    assert np.asarray(tta.class_probabilities).shape == (len(CLASSES), len(CLASSES))
    assert (tmp_path / "tta" / "eval.json").is_file() and not (run / "eval.json").exists()
    assert tta.class_probabilities != plain.class_probabilities  # the flipped views really were averaged in
    from classbench.evaluation import _tta_views

    assert _tta_views(run) == [(), (3,), (2,)] and _tta_views(run.parent / "run") == [(), (3,)]


def test_corrupt_test_image_is_reported_and_skipped(run: Path) -> None:
    manifest = Manifest.load(run / "split.csv")
    bad = run / "broken.png"
    bad.write_bytes(PNG + b"not really a png")
    manifest.samples.append(Sample(bad, "red", "test"))
    manifest.save(run / "split.csv")
    result = evaluate(run, progress=False, batch_size=10)
    assert result.n_images == len(manifest.subset("test")) - 1
    assert result.skipped and any("broken.png" in w for w in result.warnings)


def test_misclassified_sheet_gains_a_heatmap_row_when_grad_cam_is_installed(
        run: Path, tested: tuple[Path, EvalResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from classbench import evaluation

    with_maps, result = tested
    explained = json.loads((with_maps / "eval.json").read_text())["explain"]
    n = min(evaluation.EXPLAIN_MISTAKES, len(result.misclassified))
    assert n >= 6 and explained == result.explain
    assert explained["n_images"] == n and explained["method"] == "gradcam" and explained["layer"] == "bn2"
    assert 0 < explained["seconds"] < 60 and "error" not in explained
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # grad-cam not installed: the sheet as before
    plain = evaluate(run, progress=False)
    assert plain.explain is None and json.loads(plain.json_path.read_text())["explain"] is None
    monkeypatch.delitem(sys.modules, "pytorch_grad_cam")
    two = evaluate(run, out=tmp_path / "two", progress=False, heatmaps=2)  # the bound: the 2 most confident only
    assert two.explain["n_images"] == 2
    assert evaluate(run, out=tmp_path / "none", progress=False, heatmaps=0).explain is None
    sizes = {}
    for name, folder in (("all", with_maps), ("plain", run), ("two", tmp_path / "two")):
        with Image.open(folder / "misclassified.png") as im:
            sizes[name] = im.size
    heat_row = 96 + 5  # one thumbnail and its padding per row holding a heatmap (6 tiles a row)
    assert sizes["all"][0] == sizes["plain"][0] == sizes["two"][0]
    assert sizes["all"][1] - sizes["plain"][1] == -(-n // 6) * heat_row
    assert sizes["two"][1] - sizes["plain"][1] == heat_row
    from classbench.report.html import build_report

    page = build_report(with_maps, tmp_path / "report.html").read_text(encoding="utf-8")
    assert f"under the {n} most confident: where the model saw the class it chose (gradcam at bn2," in page
    assert "most confident" not in build_report(run, tmp_path / "plain.html").read_text(encoding="utf-8")


def test_inference_stays_fp32_under_an_enclosing_bf16_autocast(run: Path, tested: tuple[Path, EvalResult],
                                                                tmp_path: Path) -> None:
    plain = tested[1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = evaluate(run, out=tmp_path, progress=False)
    assert mixed.class_probabilities == plain.class_probabilities and mixed.metrics == plain.metrics


def test_zero_recall_of_a_predicted_class_names_the_confusion() -> None:
    from classbench.intervals import class_warnings as _class_warnings

    summary = classification_summary([0, 0, 1, 1, 2], [1, 1, 1, 1, 2], None, ["cat", "dog", "emu"])
    assert _class_warnings(summary, "test") == [
        "class 'cat' was never predicted (0 of 2 test images)"]
    summary = classification_summary([0, 0, 1, 1, 2], [1, 1, 0, 1, 2], None, ["cat", "dog", "emu"])
    assert _class_warnings(summary, "test") == [
        "class 'cat' has zero recall: none of its 2 test images was recognised (mostly predicted as 'dog')"]


def test_predictions_csv_holds_every_test_image_with_its_probabilities(tested: tuple[Path, EvalResult]) -> None:
    run, result = tested
    assert result.figures["predictions_csv"] == "predictions.csv"
    paths, labels, probs, classes = read_predictions(run / "predictions.csv")
    test = Manifest.load(run / "split.csv").subset("test")
    assert classes == CLASSES and paths == [str(s.path) for s in test] and labels == [s.label for s in test]
    assert probs.shape == (len(test), len(CLASSES)) and np.allclose(probs.sum(1), 1.0)
    y_true = np.array([CLASSES.index(label) for label in labels])
    cm = np.zeros((len(CLASSES), len(CLASSES)), int)
    np.add.at(cm, (y_true, probs.argmax(1)), 1)
    assert cm.tolist() == result.confusion  # the very probabilities the metrics came from (calibrated)
    means = [probs[y_true == c].mean(0) for c in range(len(CLASSES))]
    assert np.allclose(means, result.class_probabilities)
    rows = list(csv.reader(io.StringIO((run / "predictions.csv").read_text(encoding="utf-8"))))
    assert rows[0] == ["path", "label", "predicted", *(f"p_{c}" for c in CLASSES)]
    assert [r[2] for r in rows[1:]] == [CLASSES[i] for i in probs.argmax(1)]


def test_evaluate_and_predict_give_an_image_the_same_probabilities(tested: tuple[Path, EvalResult]) -> None:
    """One inference path: predict, batched as evaluate batches, reproduces predictions.csv bit for bit."""
    from classbench.predict import load

    run, result = tested
    paths, _, probs, _ = read_predictions(run / "predictions.csv")
    clf = load(run, "torch")
    assert clf.temperature == result.metrics["temperature"]  # the calibrated T evaluate stored in model.json
    preds = clf.predict_batch(paths, batch_size=result.inference["batch_size"])
    got = np.array([[dict(p.top)[c] for c in CLASSES] for p in preds])
    assert np.array_equal(got, probs)
    single = dict(clf.predict(paths[0]))  # one image alone: the same up to float32 rounding
    assert [single[c] for c in CLASSES] == pytest.approx(probs[0].tolist(), abs=1e-6)


def test_predictions_csv_round_trips_awkward_class_names(tmp_path: Path) -> None:
    classes = ['a,b', 'say "hi"', "über 🚤", "two\nlines", "p_x"]
    probs = np.random.default_rng(0).dirichlet(np.ones(len(classes)), size=7)
    paths = [f"data/{classes[i % 5]}/img {i}, copy.png" for i in range(7)]
    labels = [classes[(i + 1) % 5] for i in range(7)]
    out = write_predictions(tmp_path / "p.csv", paths, labels, probs, classes)
    back = read_predictions(out)
    assert back[0] == paths and back[1] == labels and back[3] == classes
    assert back[2].dtype == np.float64 and np.array_equal(back[2], probs)  # bit-exact
    assert read_predictions(write_predictions(tmp_path / "e.csv", [], [], np.zeros((0, 2)), ["x", "y"]))[2].shape == (0, 2)
    (tmp_path / "bad.csv").write_text("path,label,score\nx,y,0.5\n", encoding="utf-8")
    with pytest.raises(DataError, match="predictions CSV"):
        read_predictions(tmp_path / "bad.csv")


def test_all_correct_intervals_keep_a_width_and_the_bootstrap_is_flagged() -> None:
    y = np.repeat(np.arange(3), 24)[:71]  # 71 images, all right
    summary = classification_summary(y, y, None, ["car", "boat", "tiny"])
    ci95, methods, warnings = eval_intervals(summary, y, y)
    assert ci95["macro_f1"] == [1.0, 1.0] and warnings == [DEGENERATE_F1]
    assert "zero width" in DEGENERATE_F1 and set(methods) == set(ci95)
    assert ci95["accuracy"] == pytest.approx([0.025 ** (1 / 71), 1.0]) and ci95["accuracy"][1] - ci95["accuracy"][0] > 0.04
    low, high = ci95["balanced_accuracy"]  # Clopper-Pearson per class at 1 - 0.05 / 3, all right: low = (a/2) ** (1/n)
    assert low == pytest.approx(np.mean([(0.05 / 3 / 2) ** (1 / n) for n in (24, 24, 23)])) and 0.8 < low < high == 1.0
    t = np.array([0, 0, 0, 0, 0, 1, 1])  # 'boat' has 5 images: no note; 'car' 2 of 2 right
    warnings = eval_intervals(classification_summary(t, t, None, ["boat", "car"]), t, t)[2]
    assert warnings == [DEGENERATE_F1, "recall of 'car' rests on 2 images (95% CI 0.16-1.00)"]


def test_render_fits_80_columns_with_intervals(tested: tuple[Path, EvalResult]) -> None:
    import dataclasses

    result = tested[1]
    long_name = "a_very_long_class_name_with_no_spaces_at_all_of_56_chars"
    per_class = [dict(row) for row in result.per_class]
    per_class[1]["class"] = long_name
    for res in (result, dataclasses.replace(result, per_class=per_class)):
        console = Console(width=80, record=True, file=io.StringIO())
        render_eval(res, console)
        text = console.export_text()
        table = text[:text.index("accuracy ")]
        assert "…" not in text and max(map(len, table.splitlines())) <= 80
        for row in res.per_class:
            for key in ("precision_ci", "recall_ci"):
                if row[key]:
                    assert f"{row[key][0]:.2f}-{row[key][1]:.2f}" in table, (row["class"], key)
        for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                           ("macro_f1", "macro-F1")):
            low, high = res.ci95[key]
            method = r"\s+".join(map(re.escape, res.ci_method[key].split()))  # a long method name may wrap at 80 columns
            assert re.search(rf"^{label} +{res.metrics[key]:.3f}  95% CI {low:.3f}-{high:.3f}  {method}$",
                             text, re.MULTILINE), key
    assert long_name in "".join(re.findall(r"^│ (\S*) *│", table, re.MULTILINE))  # folded over lines, whole
