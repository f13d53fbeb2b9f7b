"""Export of fp32/fp16 ONNX: parity with PyTorch, metadata, dynamic batch, damaged/stale files, a recalibrated
temperature, fallback; running ONNX files never needs classbench.exporting. INT8, OpenVINO, TensorRT and the
per-class parity report (export.json): tests/test_export_parity.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classbench.errors import ClassbenchError, ModelError
from classbench.exporting import OnnxSession, export, physical_cores, render_export
from classbench.exporting.parity import Samples, agreement
from classbench.models import create_model, save_model
from classbench.predict import load
from classbench.runs import file_sha256

CLASSES = ["cat", "dog", "owl"]


def make_model_folder(folder: Path, arch: str, img_size: int = 32, seed: int = 0, **meta: object) -> Path:
    """A saved, untrained model whose head is scaled up so probabilities are far from uniform."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(CLASSES))
    with torch.no_grad():
        model.get_classifier().weight.mul_(30.0)
    return save_model(model, {"architecture": arch, "classes": CLASSES, "img_size": img_size, "mean": [0.5, 0.4, 0.3],
                              "std": [0.2, 0.25, 0.3], "temperature": 1.3, **meta}, folder)


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = int(rng.integers(20, 70)), int(rng.integers(20, 70))
        img = np.clip(rng.integers(0, 255, 3) + rng.normal(0, 60, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"img_{i:02d}.png")
        Image.fromarray(img).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_images(tmp_path_factory.mktemp("images"), 7)


@pytest.fixture(scope="module", params=[("test_efficientnet", 32), ("resnet18", 32)], ids=lambda p: p[0])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, images: list[Path]):
    arch, size = request.param
    run = make_model_folder(tmp_path_factory.mktemp(arch), arch, size)
    return run, export(run, parity_images=images)


def test_onnx_export_passes_parity(exported) -> None:
    run, result = exported
    assert result.path == run / "model.onnx" and result.path.is_file()
    assert result.exporter == "torchscript" and result.opset == 17 and not result.notes
    assert result.parity["passed"] and result.parity["max_abs_prob_diff"] < 1e-4
    assert result.parity["top1_agreement"] == 1.0 and result.parity["samples"] == 7  # the real images
    assert (result.input_name, result.output_name) == ("input", "logits")
    assert result.input_shape[1:] == [3, 32, 32] and isinstance(result.input_shape[0], str)


def test_metadata_round_trips_through_onnx(exported) -> None:
    import onnx

    import classbench

    run, result = exported
    meta = json.loads((run / "model.json").read_text())
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert json.loads(props["classes"]) == meta["classes"]
    assert int(props["img_size"]) == meta["img_size"]
    assert json.loads(props["mean"]) == meta["mean"] and json.loads(props["std"]) == meta["std"]
    assert float(props["temperature"]) == meta["temperature"] and props["architecture"] == meta["architecture"]
    assert props["weights_sha256"] == file_sha256(run / "model.safetensors")
    assert props["classbench_version"] == classbench.__version__
    assert props["input_layout"] == "NCHW float32 normalised"


def test_torch_and_onnx_backends_agree_on_real_files(exported, images: list[Path]) -> None:
    run, _ = exported
    torch_clf, onnx_clf, auto_clf = (load(run, backend=b) for b in ("torch", "onnx", "auto"))
    assert (torch_clf.backend, onnx_clf.backend, auto_clf.backend) == ("torch", "onnx", "onnx")
    files = [str(p) for p in images]
    a, b = torch_clf.predict_batch(files, batch_size=3), onnx_clf.predict_batch(files, batch_size=3)
    for pa, pb in zip(a, b):
        assert pa.label == pb.label
        pa_map, pb_map = dict(pa.top), dict(pb.top)
        assert max(abs(pa_map[c] - pb_map[c]) for c in CLASSES) < 1e-4


def test_dynamic_batch_sizes_1_and_5(exported) -> None:
    run, result = exported
    session = OnnxSession(result.path)
    ref = load(run, backend="torch")
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    for n in (1, 5):
        out = session.run(x[:n])
        assert out.shape == (n, 3)
        assert np.abs(out - ref.logits(x[:n])).max() < 1e-3
    assert session.metadata["classes"] == CLASSES


def test_static_batch_export_still_predicts(tmp_path: Path, images: list[Path]) -> None:
    run = make_model_folder(tmp_path / "static", "test_efficientnet")
    result = export(run, dynamic_batch=False)
    assert result.input_shape == [1, 3, 32, 32] and result.parity["samples"] == 32  # seeded random inputs
    clf = load(run, backend="onnx")
    preds = clf.predict_batch([str(p) for p in images[:3]])
    assert all(p.error is None for p in preds)


def test_parity_uses_the_runs_split_images_and_torchscript_is_gone(tmp_path: Path, images: list[Path]) -> None:
    run = make_model_folder(tmp_path / "split", "test_efficientnet")
    rows = [f"{os.path.relpath(p, run)},cat,{split},\n" for p, split in zip(images, ["test"] * 3 + ["val", "train"])]
    (run / "split.csv").write_text("path,label,split,group\n" + "".join(rows))
    result = export(run)
    assert result.path == run / "model.onnx" and result.parity["max_abs_prob_diff"] < 1e-4
    assert (result.parity["samples"], result.parity["images"]) == (1, "val")  # the val split by default
    assert export(run, parity_split="test").parity["samples"] == 3  # the test split when asked
    with pytest.raises(ClassbenchError, match="unknown export format 'torchscript'; use onnx, openvino or tensorrt"):
        export(run, format="torchscript")


def test_fp16_export_keeps_float32_io_and_model_onnx(tmp_path: Path) -> None:
    run = make_model_folder(tmp_path / "half", "test_efficientnet")
    result = export(run, fp16=True)
    assert result.path.name == "model.fp16.onnx" and not (run / "model.onnx").exists()
    assert result.parity["tolerance"] is None and result.parity["top1_agreement"] >= 0.9
    out = OnnxSession(result.path).run(np.zeros((2, 3, 32, 32), np.float32))
    assert out.dtype == np.float32 and out.shape == (2, 3)
    assert load(run).backend == "torch"  # predict never picks the fp16 file unless named
    half = load(run, backend="onnx-fp16")
    assert half.backend == "onnx-fp16" and half.predict_proba(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3)
    assert load(result.path).backend == "onnx-fp16"  # the file on its own: named by its recorded precision
    with pytest.raises(ModelError, match=r"create it with `classbench export .*half --int8`"):
        load(run, backend="onnx-int8")


def test_corrupted_onnx_gives_clear_error(tmp_path: Path) -> None:
    run = make_model_folder(tmp_path / "bad", "test_efficientnet")
    export(run)
    data = (run / "model.onnx").read_bytes()
    (run / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"model\.onnx: damaged or truncated ONNX file .*classbench export"):
        load(run, backend="onnx")
    clf = load(run)  # auto: falls back to PyTorch and says why
    assert clf.backend == "torch" and "damaged" in clf.note
    (run / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="damaged or truncated"):
        OnnxSession(run / "model.onnx")


def test_stale_onnx_is_never_used(tmp_path: Path) -> None:
    run = make_model_folder(tmp_path / "stale", "test_efficientnet")
    export(run)
    make_model_folder(run, "test_efficientnet", seed=1)  # retrained: new weights, old model.onnx
    assert load(run).backend == "torch"
    with pytest.raises(ModelError, match=r"stale \(exported from other weights\); re-run `classbench export .*stale`"):
        load(run, backend="onnx")


def test_stale_reasons_and_export_hints_name_the_variant() -> None:
    """One staleness rule for predict and the report, and fix hints that name the variant's own flags."""
    from classbench.inference import export_command, export_hint, stale_reason, variant_of

    meta = {"classes": ["a", "b"], "img_size": 32}
    good = {"weights_sha256": "s", "classes": ["a", "b"], "img_size": 32, "precision": "int8", "temperature": 9.0}
    assert stale_reason(good, "s", meta, "int8") is None  # another temperature is not stale
    assert stale_reason(good, "t", meta) == "exported from other weights"
    assert stale_reason({**good, "classes": ["b", "a"]}, "s", meta) == "exported for other classes"
    assert stale_reason({**good, "img_size": 64}, "s", meta) == "exported at another image size"
    assert stale_reason(good, "s", meta, "float32") == "recorded precision int8, not float32"
    assert stale_reason({"weights_sha256": "s"}, "s") is None  # an export.json entry: weights only
    run = Path("runs") / "r1"
    assert export_command(run, "openvino-int8") == f"classbench export {run} --format openvino --int8"
    assert export_command(run, "tensorrt-fp16") == f"classbench export {run} --format tensorrt --fp16"
    assert export_hint(run / "openvino" / "model.int8.xml") == export_command(run, "openvino-int8")
    assert export_hint(run / "model.fp16.onnx") == f"classbench export {run} --fp16"
    assert export_hint(Path("model.onnx")) == "classbench export ."
    assert export_hint(Path("elsewhere.onnx")) == "classbench export RUN"
    assert variant_of("onnxruntime", "float16") == "onnx-fp16" and variant_of("openvino", "int8") == "openvino-int8"
    assert variant_of("onnxruntime", "bfloat16") == "onnx"


def test_a_recalibrated_temperature_is_applied_and_said_not_stale(tmp_path: Path, images: list[Path]) -> None:
    """The rule: the graph outputs logits, so another temperature in model.json (evaluate calibrated it after the
    export) does not make model.onnx stale; load applies model.json's T beside the weights and says so in ``note``,
    the file on its own keeps the T it recorded, and a re-export records the new one."""
    from classbench.runs import atomic_write_json, read_json

    run = make_model_folder(tmp_path / "recal", "test_efficientnet")  # exported with T = 1.3
    export(run)
    assert OnnxSession(run / "model.onnx").metadata["temperature"] == 1.3
    assert load(run).note is None
    atomic_write_json(run / "model.json", {**read_json(run / "model.json"), "temperature": 2.0})  # what evaluate does
    files = [str(p) for p in images]
    reference = load(run, backend="torch").predict_batch(files)
    for backend in ("auto", "onnx"):
        clf = load(run, backend=backend)
        assert clf.backend == "onnx" and clf.temperature == 2.0
        assert "exported with temperature 1.3" in clf.note and "T = 2 from model.json" in clf.note
        assert "classbench export" in clf.note
        for a, b in zip(clf.predict_batch(files), reference):
            assert a.label == b.label and dict(a.top) == pytest.approx(dict(b.top), abs=1e-4)
    alone = load(run / "model.onnx")
    assert alone.temperature == 1.3 and alone.note is None
    assert not np.allclose([p for _, p in alone.predict(images[0])], [p for _, p in load(run).predict(images[0])])
    export(run)
    assert OnnxSession(run / "model.onnx").metadata["temperature"] == 2.0 and load(run).note is None


def test_onnx_prediction_never_imports_exporting(exported, images: list[Path]) -> None:
    run, _ = exported
    code = ("import sys; from classbench.predict import load; clf = load(sys.argv[1], backend='onnx'); "
            "assert clf.predict_batch([sys.argv[2]])[0].error is None; print('classbench.exporting' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(run), str(images[0])], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_standalone_onnx_file_loads_with_its_own_metadata(tmp_path: Path, images: list[Path]) -> None:
    run = make_model_folder(tmp_path / "alone", "test_efficientnet")
    export(run, out=tmp_path / "deploy" / "classifier.onnx")
    clf = load(tmp_path / "deploy" / "classifier.onnx")
    assert clf.backend == "onnx" and clf.classes == CLASSES and clf.temperature == pytest.approx(1.3)
    ref = load(run, backend="torch").predict(images[0])
    assert clf.predict(images[0])[0][0] == ref[0][0]


def test_falls_back_to_dynamo_exporter(tmp_path: Path) -> None:
    # timm's test_vit resamples position embeddings at 32 px (bicubic antialias): no TorchScript-exporter op
    run = make_model_folder(tmp_path / "vit", "test_vit")
    result = export(run)
    assert result.exporter == "dynamo" and result.opset >= 18
    assert "torchscript exporter" in result.notes[0] and result.parity["max_abs_prob_diff"] < 1e-4
    assert load(run).backend == "onnx"


def test_parity_failure_raises_with_numbers() -> None:
    ref = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], np.float32)
    samples = Samples([torch.zeros(2, 3, 4, 4, dtype=torch.uint8)], None, "random", 0)
    meta = {"temperature": 1.0, "classes": CLASSES}
    with pytest.raises(ModelError, match=r"max probability difference .* > 1e-04"):
        agreement(ref, ref + np.array([[0.5, 0, 0], [0, 0, 0]], np.float32), samples, meta, tolerance=1e-4)
    assert agreement(ref, ref, samples, meta, tolerance=1e-4)["top1_agreement"] == 1.0


def test_render_and_bad_arguments(exported, tmp_path: Path) -> None:
    import io

    from rich.console import Console

    run, result = exported
    console = Console(file=io.StringIO(), width=200)
    render_export(result, console)
    assert "model.onnx" in console.file.getvalue() and "input" in console.file.getvalue()
    with pytest.raises(Exception, match="unknown export format"):
        export(run, format="tflite")
    assert physical_cores() >= 1


def test_classbench_export_stays_callable_after_the_module_is_imported(exported) -> None:
    import classbench

    run, _ = exported
    load(run)  # the package attribute `export` stays the function, whatever was imported since
    assert classbench.export(run, format="onnx").parity["passed"]
