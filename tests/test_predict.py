"""Prediction: inputs (file, folder, glob, bad files), outputs (table/CSV/JSON), calibration, safe loading."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classbench.errors import ImageLoadError, ModelError
from classbench.models import create_model, read_state_dict, save_model
from classbench.predict import (
    Prediction,
    expand_inputs,
    load,
    predictions_to_csv,
    predictions_to_json,
    render_predictions,
)

CLASSES = ["cat", "dog", "owl"]
META = {"architecture": "test_efficientnet", "classes": CLASSES, "img_size": 32,
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "temperature": 1.0}


def make_model_folder(folder: Path, arch: str = "test_efficientnet", img_size: int = 32, seed: int = 0,
                      **meta: object) -> Path:
    """A saved, untrained model whose head is scaled up so probabilities are far from uniform."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(CLASSES))
    with torch.no_grad():
        model.get_classifier().weight.mul_(30.0)
    return save_model(model, {**META, "architecture": arch, "img_size": img_size, **meta}, folder)


def write_images(folder: Path, n: int, seed: int = 0, suffix: str = ".png") -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        base = rng.integers(0, 255, 3)
        img = np.clip(base + rng.normal(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"img_{i:02d}{suffix}")
        Image.fromarray(img).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_images(root, 4, seed=1)
    write_images(root / "nested" / "deeper", 2, seed=2, suffix=".jpg")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def clf(run_dir: Path):
    return load(run_dir, backend="torch")


def test_predict_one_image_returns_all_classes_sorted(clf, images: Path) -> None:
    ranked = clf.predict(images / "img_00.png")
    assert [c for c, _ in ranked] != [] and sorted(c for c, _ in ranked) == CLASSES
    probs = [p for _, p in ranked]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert clf.classes == CLASSES and clf.img_size == 32 and clf.backend == "torch"
    # a PIL image (any mode) gives the same answer as its file
    pil = Image.open(images / "img_00.png").convert("RGBA")
    assert clf.predict(pil)[0][0] == ranked[0][0]


def test_preprocessing_is_exactly_the_training_contract(clf, images: Path) -> None:
    from classbench.data.imageio import load_image
    from classbench.data.transforms import normalize, to_uint8_tensor
    from classbench.models import load_model

    path = images / "img_01.png"
    batch = normalize(to_uint8_tensor(load_image(path), 32).unsqueeze(0), META["mean"], META["std"])
    model, _ = load_model(clf.path)
    with torch.inference_mode():
        expected = torch.softmax(model(batch), 1)[0].numpy()
    got = dict(clf.predict(path))
    assert np.allclose([got[c] for c in CLASSES], expected, atol=1e-6)
    assert np.allclose(clf.predict_proba(batch.numpy())[0], expected, atol=1e-6)  # ndarray input too
    assert clf.logits(batch).shape == (1, 3)


def test_temperature_scales_logits(run_dir: Path, tmp_path: Path, images: Path) -> None:
    hot = make_model_folder(tmp_path / "hot", temperature=2.5)
    base, warm = load(run_dir, backend="torch"), load(hot, backend="torch")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    z = base.logits(x) / 2.5
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert np.allclose(warm.predict_proba(x), expected, atol=1e-6)
    assert not np.allclose(base.predict_proba(x), expected, atol=1e-3)


def test_expand_inputs_folder_glob_and_missing(images: Path) -> None:
    files, problems = expand_inputs([str(images)])
    assert len(files) == 6 and any("deeper" in f for f in files) and not any(f.endswith(".txt") for f in files)
    files, _ = expand_inputs([str(images / "*.png")])
    assert len(files) == 4
    files, _ = expand_inputs([str(images / "**" / "*.jpg")])
    assert len(files) == 2
    files, problems = expand_inputs([str(images / "img_00.png"), str(images / "img_00.png"), "nope/x.png",
                                     str(images / "zz*.png")])
    assert files == [str(images / "img_00.png")]
    assert [p.path for p in problems] == ["nope/x.png", str(images / "zz*.png")]
    assert all(p.error and not p.top for p in problems)


def test_a_folder_is_walked_like_a_dataset_folder(images: Path) -> None:
    """Hidden files and folders (and macOS' __MACOSX) are skipped, as when a class folder is read."""
    for hidden in (images / ".thumbs" / "a.png", images / "__MACOSX" / "b.png", images / ".c.png"):
        hidden.parent.mkdir(exist_ok=True)
        hidden.write_bytes((images / "img_00.png").read_bytes())
    files, problems = expand_inputs([str(images)])
    assert len(files) == 6 and files == sorted(files) and not problems
    assert not any(".thumbs" in f or "__MACOSX" in f or f.endswith(".c.png") for f in files)


def test_batch_with_bad_files_keeps_going(clf, images: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((images / "img_02.png").read_bytes()[:60])
    files = [str(images / "img_00.png"), str(tmp_path / "broken.png"), str(truncated), str(images / "img_03.png")]
    preds = clf.predict_batch(files, batch_size=2)
    assert [p.path for p in preds] == files
    assert [p.error is None for p in preds] == [True, False, False, True]
    single = clf.predict(files[0])
    assert preds[0].top[0][0] == single[0][0] and preds[0].top[0][1] == pytest.approx(single[0][1], abs=1e-6)
    assert preds[3].label == preds[3].top[0][0] and len(preds[3].top) == 3


def test_reject_below_gives_unknown_but_keeps_probabilities(clf, images: Path) -> None:
    files = [str(p) for p in sorted(images.glob("*.png"))]
    plain = clf.predict_batch(files, top_k=2)
    rejected = clf.predict_batch(files, top_k=2, reject_below=1.01)
    assert all(p.label == "unknown" for p in rejected)
    assert [p.top for p in rejected] == [p.top for p in plain] and all(len(p.top) == 2 for p in plain)
    kept = clf.predict_batch(files, reject_below=0.0)
    assert all(p.label != "unknown" for p in kept)


def test_csv_and_json_round_trip(clf, images: Path) -> None:
    files, problems = expand_inputs([str(images / "*.png"), "missing.png"])
    preds = clf.predict_batch(files, reject_below=0.9) + problems
    rows = list(csv.DictReader(io.StringIO(predictions_to_csv(preds, top_k=2))))
    assert [r["path"] for r in rows] == [p.path for p in preds]
    for row, pred in zip(rows, preds):
        assert row["label"] == (pred.label or "") and row["error"] == (pred.error or "")
        if pred.top:
            assert row["class_1"] == pred.top[0][0] and float(row["prob_1"]) == pytest.approx(pred.top[0][1], abs=1e-6)
            assert "class_3" not in row
    data = json.loads(predictions_to_json(preds))
    assert [d["path"] for d in data] == [p.path for p in preds]
    assert data[0]["top"][0]["class"] == preds[0].top[0][0] and len(data[0]["top"]) == 3
    assert data[-1]["error"] and data[-1]["top"] == []

    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    render_predictions(preds, console, top_k=2)
    out = console.file.getvalue()
    assert "img_00.png" in out and "missing.png" in out and "1 of 5 inputs" in out


def test_load_accepts_json_and_weights_paths(run_dir: Path) -> None:
    for target in (run_dir / "model.json", run_dir / "model.safetensors"):
        assert load(target, backend="torch").classes == CLASSES
    with pytest.raises(ModelError, match="does-not-exist: not found"):
        load(run_dir.parent / "does-not-exist")
    with pytest.raises(ModelError, match="classbench export"):
        load(run_dir, backend="onnx")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_disguised_as_weights_is_never_unpickled(run_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = pickle.dumps({"state_dict": _Exploit(marker)})
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.json").write_text((run_dir / "model.json").read_text())
    (evil / "model.safetensors").write_bytes(payload)
    for backend in ("auto", "torch"):
        with pytest.raises(ModelError, match="not a readable safetensors"):
            load(evil, backend=backend)
    (tmp_path / "weights.pth").write_bytes(payload)
    with pytest.raises(ModelError, match="never loaded"):
        read_state_dict(tmp_path / "weights.pth")
    assert not marker.exists()
    # the payload is real: unpickling it would have created the marker
    pickle.loads(payload)
    assert marker.exists()


def test_import_is_cheap_and_never_pulls_in_exporting() -> None:
    code = ("import sys, classbench.predict; "
            "print(sorted(m for m in ('torch', 'timm', 'onnxruntime', 'sklearn', 'classbench.exporting') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import classbench.predict, sys; print('classbench.exporting' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unreadable_file_in_a_folder_is_reported_and_the_others_predicted(clf, images: Path, tmp_path: Path) -> None:
    from classbench.data.imageio import load_image

    folder = tmp_path / "mixed"
    shutil.copytree(images, folder)
    bad = folder / "img_01b.png"  # sorts between img_01 and img_02
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    files, problems = expand_inputs([folder])
    assert not problems and str(bad) in files and len(files) == 7
    seen: list[int] = []
    preds = clf.predict_batch(files, batch_size=2, progress=seen.append)
    assert [p.path for p in preds] == files and sum(seen) == len(files) and len(seen) == 4
    with pytest.raises(ImageLoadError) as err:
        load_image(bad)
    failed = [p for p in preds if p.error]
    assert [p.path for p in failed] == [str(bad)] and failed[0].error == err.value.reason and not failed[0].top
    assert failed[0].label is None
    good = [p for p in preds if not p.error]
    assert len(good) == 6 and all(len(p.top) == 3 and p.label == p.top[0][0] for p in good)
    alone = clf.predict_batch([p.path for p in good], batch_size=2)  # the bad file changed nothing for the others
    assert [p.label for p in alone] == [p.label for p in good]
    for a, b in zip(alone, good):  # other batch compositions: the same up to float32 rounding of the convolutions
        assert dict(a.top) == pytest.approx(dict(b.top), abs=1e-6)


def test_iter_batches_keeps_order_and_reports_failures(images: Path, tmp_path: Path) -> None:
    from classbench.data.imageio import load_image
    from classbench.data.transforms import to_uint8_tensor
    from classbench.inference import iter_batches

    good = sorted(images.glob("*.png"))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    paths = [good[0], tmp_path / "empty.png", tmp_path / "text.jpg", good[1], good[2]]
    batches = list(iter_batches(paths, 16, batch_size=3))
    assert len(batches) == 2 and [b.n_files for b in batches] == [3, 2]
    first, second = batches
    assert first.index == [0] and [i for i, _ in first.failed] == [1, 2] and second.index == [3, 4]
    assert all(isinstance(e, ImageLoadError) and e.path.endswith(("empty.png", "text.jpg")) for _, e in first.failed)
    assert "zero-byte" in first.failed[0][1].reason and str(first.failed[0][1]).startswith(str(paths[1]))
    assert first.images.dtype == torch.uint8 and tuple(first.images.shape) == (1, 3, 16, 16)
    assert torch.equal(second.images[1], to_uint8_tensor(load_image(good[2]), 16))  # the training contract
    only_bad = list(iter_batches(paths[1:3], 16, batch_size=4))
    assert len(only_bad) == 1 and only_bad[0].images is None and len(only_bad[0].failed) == 2
    assert list(iter_batches([], 16)) == []
    in_workers = list(iter_batches(paths, 16, batch_size=3, num_workers=1))  # DataLoader worker processes
    assert [(b.index, [i for i, _ in b.failed]) for b in in_workers] == [(b.index, [i for i, _ in b.failed])
                                                                         for b in batches]
    assert torch.equal(in_workers[1].images, second.images)
    assert [str(e) for _, e in in_workers[0].failed] == [str(e) for _, e in first.failed]


def test_prediction_defaults() -> None:
    assert Prediction("a.png", [("x", 0.7), ("y", 0.3)]).label == "x"
    assert Prediction("b.png", [], error="boom").label is None


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model folder with a hand-written split.csv (12 train, 6 val images), exported as onnx-int8
    (agreement not enforced: the model is untrained) and as an OpenVINO IR."""
    from classbench.exporting import export

    root = tmp_path_factory.mktemp("deploy")
    run = make_model_folder(root / "run")
    paths = write_images(root / "images", 18, seed=5)
    rows = [f"{os.path.relpath(p, run)},{CLASSES[i % 3]},{'train' if i < 12 else 'val'},\n" for i, p in enumerate(paths)]
    (run / "split.csv").write_text("path,label,split,group\n" + "".join(rows))
    export(run, int8=True, min_agreement=0.0)
    export(run, format="openvino")
    return run


@pytest.mark.parametrize("backend", ["onnx-int8", "openvino"])
def test_predict_cli_runs_the_int8_and_openvino_exports(exported_run: Path, images: Path, backend: str) -> None:
    from typer.testing import CliRunner

    from classbench.cli import app

    files = sorted(str(p) for p in images.glob("*.png"))
    result = CliRunner().invoke(app, ["predict", str(exported_run), *files, "--backend", backend, "--format", "json"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    expected = load(exported_run, backend=backend).predict_batch(files)
    assert [r["label"] for r in rows] == [p.label for p in expected] and all(r["error"] is None for r in rows)
    assert load(exported_run, backend=backend).backend == backend
    if backend == "openvino":  # fp32 IR (bf16 at most on this CPU): the same top-1 as PyTorch
        torch_labels = [p.label for p in load(exported_run, backend="torch").predict_batch(files)]
        assert [r["label"] for r in rows] == torch_labels


def test_a_missing_export_backend_names_the_command(run_dir: Path) -> None:
    from typer.testing import CliRunner

    from classbench.cli import app

    for backend, command in (("onnx-int8", "--int8"), ("openvino-int8", "--format openvino --int8")):
        with pytest.raises(ModelError, match=f"not found; create it with `classbench export .* {command}`"):
            load(run_dir, backend=backend)
    result = CliRunner().invoke(app, ["predict", str(run_dir), "x.png", "--backend", "tflite"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "choose auto, torch, onnx, onnx-fp16, onnx-int8, openvino, openvino-int8" in result.output
