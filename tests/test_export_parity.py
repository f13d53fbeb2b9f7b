"""INT8 (ONNX Runtime QDQ), OpenVINO (IR, NNCF INT8) and TensorRT exports of a tiny trained run, and the parity
report a user reads before deploying: top-1 agreement with PyTorch per class on the val split, in export.json."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.metrics import f1_score
from typer.testing import CliRunner

import classbench
from classbench.cli import app
from classbench.data.manifest import Manifest
from classbench.errors import ClassbenchError, ModelError
from classbench.exporting import export, render_export, variant_name
from classbench.predict import load
from classbench.runs import file_sha256
from tests.synth import make_class_folders

CLASSES = ["boat", "car", "dock"]
# The INT8 variants' limit here. The parity set is 15 val images (one image = 6.7 points) and the model a tiny
# 3-epoch one with images near its decision boundaries: its INT8 agreement measured 87-100% across library
# versions and epochs, so the default 99% would refuse a single flipped image. The default is tested below.
MIN_AGREEMENT = 0.8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test_efficientnet trained 3 epochs on 3 learnable classes (51 train, 15 val, 6 test images at 32 px)."""
    root = tmp_path_factory.mktemp("parity")
    data = make_class_folders(root / "data", {c: 24 for c in CLASSES})
    return classbench.train(data, model="test_efficientnet", out=root / "run", epochs=3, img_size=32, batch_size=16,
                            progress=False).path


@pytest.fixture(scope="module")
def results(run: Path) -> dict:
    """Every CPU variant exported once, in this order: fp32, INT8, OpenVINO, OpenVINO INT8."""
    int8 = {"int8": True, "min_agreement": MIN_AGREEMENT}
    kinds = {"onnx": {}, "onnx-int8": int8, "openvino": {"format": "openvino"},
             "openvino-int8": {"format": "openvino", **int8}}
    return {name: export(run, **kw) for name, kw in kinds.items()}


def copy_run(run: Path, name: str) -> Path:
    """A sibling copy of the run (split.csv's relative paths still resolve)."""
    return Path(shutil.copytree(run, run.parent / name))


def val_paths(run: Path) -> tuple[list[str], list[str]]:
    samples = Manifest.load(run / "split.csv").subset("val")
    return [str(s.path) for s in samples], [s.label for s in samples]


def qdq_summary(data: bytes) -> dict[str, int]:
    """Counts of QuantizeLinear / DequantizeLinear nodes and of int8 / uint8 initializers of an ONNX model."""
    proto = onnx.load_from_string(data)
    ops = [n.op_type for n in proto.graph.node]
    types = [i.data_type for i in proto.graph.initializer]
    return {"QuantizeLinear": ops.count("QuantizeLinear"), "DequantizeLinear": ops.count("DequantizeLinear"),
            "int8_initializers": types.count(onnx.TensorProto.INT8),
            "uint8_initializers": types.count(onnx.TensorProto.UINT8)}


def test_int8_export_is_a_qdq_model_that_passes_its_parity_check(run: Path, results: dict) -> None:
    result = results["onnx-int8"]
    assert result.path == run / "model.int8.onnx" and result.variant == "onnx-int8" and result.precision == "int8"
    counts = qdq_summary(result.path.read_bytes())
    assert counts["QuantizeLinear"] > 5 and counts["DequantizeLinear"] > 5 and counts["int8_initializers"] > 5
    assert counts["uint8_initializers"] > 0  # uint8 activation zero points
    parity = result.parity
    assert parity["passed"] and parity["enforced"] and parity["min_agreement"] == MIN_AGREEMENT
    assert parity["top1_agreement"] >= MIN_AGREEMENT and (parity["images"], parity["samples"]) == ("val", 15)
    assert result.calibration["images"] == 51 and result.calibration["format"] == "QDQ"  # all 51 train images
    meta = load(run / "model.int8.onnx").meta
    assert meta["precision"] == "int8" and meta["weights_sha256"] == file_sha256(run / "model.safetensors")
    assert result.path.stat().st_size < results["onnx"].path.stat().st_size


def test_per_class_agreement_matches_a_hand_count_on_the_val_split(run: Path, results: dict) -> None:
    paths, labels = val_paths(run)
    torch_pred = [p.label for p in load(run, backend="torch").predict_batch(paths)]
    for variant in ("onnx-int8", "openvino", "openvino-int8"):
        pred = [p.label for p in load(run, backend=variant).predict_batch(paths)]
        entry = json.loads((run / "export.json").read_text())[variant]["parity"]
        same = [a == b for a, b in zip(torch_pred, pred)]
        assert entry["top1_agreement"] == pytest.approx(sum(same) / len(same))
        for row in entry["per_class"]:
            mine = [s for s, y in zip(same, labels) if y == row["class"]]
            assert row["images"] == len(mine) == 5 and row["agreement"] == pytest.approx(sum(mine) / len(mine))
        assert entry["macro_f1_torch"] == pytest.approx(f1_score(labels, torch_pred, average="macro"))
        assert entry["macro_f1_export"] == pytest.approx(f1_score(labels, pred, average="macro"))


def test_export_json_holds_per_class_agreement_for_every_variant(run: Path, results: dict) -> None:
    saved = json.loads((run / "export.json").read_text())
    assert set(saved) >= {"onnx", "onnx-int8", "openvino", "openvino-int8"}
    for variant, entry in saved.items():
        assert entry["weights_sha256"] == file_sha256(run / "model.safetensors"), variant
        assert (run / entry["file"]).is_file() and entry["size_bytes"] > 0
        assert [r["class"] for r in entry["parity"]["per_class"]] == CLASSES
        assert all(0.0 <= r["agreement"] <= 1.0 for r in entry["parity"]["per_class"])
    assert saved["onnx"]["parity"]["tolerance"] == 1e-4 and saved["onnx"]["parity"]["max_abs_prob_diff"] < 1e-4
    assert saved["openvino"]["runtime_precision"] in ("bf16", "f32")
    assert saved["openvino-int8"]["file"] == "openvino/model.int8.xml" and saved["openvino"]["file"] == "openvino/model.xml"


def test_openvino_ir_predicts_the_same_top1_as_torch(run: Path, results: dict) -> None:
    paths = val_paths(run)[0][:6]
    reference = load(run, backend="torch").predict_batch(paths)
    for clf in (load(run, backend="openvino"), load(run / "openvino" / "model.xml")):
        assert clf.backend == "openvino" and clf.classes == CLASSES
        got = clf.predict_batch(paths)
        assert [p.label for p in got] == [p.label for p in reference]
        for a, b in zip(got, reference):  # bf16 on CPUs with AMX: close, not equal
            assert max(abs(dict(a.top)[c] - dict(b.top)[c]) for c in CLASSES) < 0.05
    assert load(run / "openvino" / "model.int8.xml").backend == "openvino-int8"


def test_render_shows_per_class_agreement_within_80_columns(results: dict) -> None:
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=80)
    render_export(results["onnx-int8"], console)
    out = console.file.getvalue()
    assert "agreement with PyTorch fp32 on 15 val images" in out and "(limit 80%)" in out
    assert "per true class: " in out and "(5/5)" in out
    assert all(len(line) <= 80 for line in out.splitlines()) and "…" not in out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_refused_int8_export_leaves_nothing_half_written(run: Path, results: dict) -> None:
    copy = copy_run(run, "refused")
    (copy / "model.int8.onnx").unlink()
    (copy / "openvino" / "model.int8.xml").unlink()
    (copy / "openvino" / "model.int8.bin").unlink()
    before = _snapshot(copy)
    for kw, name in (({}, "onnx-int8"), ({"format": "openvino"}, "openvino-int8")):
        with pytest.raises(ModelError) as err:
            export(copy, int8=True, min_agreement=1.01, **kw)
        message = str(err.value)
        assert "\n" not in message and f"{name}: top-1 agreement with PyTorch fp32 on 15 val images" in message
        assert "< 101%" in message and "nothing written" in message
        assert _snapshot(copy) == before  # no file, no stage folder, export.json as it was


def test_a_deliberately_broken_calibration_fails_the_check(run: Path, results: dict,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import classbench.exporting.variants as variants

    copy = copy_run(run, "broken")
    before = _snapshot(copy)
    real = variants.calibration_inputs
    monkeypatch.setattr(variants, "calibration_inputs", lambda *a, **k: [b * 1000 for b in real(*a, **k)])
    with pytest.raises(ModelError, match=r"onnx-int8: top-1 agreement .* < 99% .* nothing written"):
        export(copy, int8=True)
    assert _snapshot(copy) == before  # the earlier model.int8.onnx and its export.json entry are kept


def test_tensorrt_without_a_gpu_says_so_in_one_line(run: Path) -> None:
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("a CUDA GPU and tensorrt are present: the refusal does not apply")
    for int8 in (False, True):
        with pytest.raises(ClassbenchError, match="--format tensorrt needs a CUDA GPU and the tensorrt package") as err:
            export(run, format="tensorrt", int8=int8)
        assert "\n" not in str(err.value) and "trtexec" in str(err.value)
    result = CliRunner().invoke(app, ["export", str(run), "--format", "tensorrt"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "CUDA GPU" in result.output
    assert not (run / "model.fp16.plan").exists()


def test_missing_openvino_package_names_the_extra(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError, as when not installed
    with pytest.raises(ClassbenchError, match=r'openvino is not installed .*pip install "classbench\[openvino\]"'):
        export(run, format="openvino")
    with pytest.raises(ClassbenchError, match=r'pip install "classbench\[openvino\]"'):
        load(run, backend="openvino")


def test_variant_names_and_bad_combinations() -> None:
    assert [variant_name("onnx"), variant_name("onnx", int8=True), variant_name("onnx", fp16=True)] == \
        ["onnx", "onnx-int8", "onnx-fp16"]
    assert [variant_name("openvino"), variant_name("tensorrt"), variant_name("tensorrt", int8=True)] == \
        ["openvino", "tensorrt-fp16", "tensorrt-int8"]
    for args, message in ((("onnx", True, True), "exclude each other"), (("openvino", True), "drop --fp16"),
                          (("tflite",), "unknown export format")):
        with pytest.raises(ClassbenchError, match=message):
            variant_name(*args)


def test_stale_openvino_ir_is_never_used(run: Path, results: dict) -> None:
    from classbench.models import load_model, save_model

    copy = copy_run(run, "retrained")
    model, meta = load_model(copy)
    with __import__("torch").no_grad():
        model.get_classifier().weight.mul_(2.0)
    save_model(model, meta, copy)
    for backend in ("openvino", "onnx-int8"):
        with pytest.raises(ModelError, match="stale.*classbench export"):
            load(copy, backend=backend)
    assert load(copy).backend == "torch"  # auto never picks a stale file (nor an INT8 one)
    from classbench.report.exports import export_rows  # the report marks them by the same rule

    rows = export_rows(json.loads((copy / "export.json").read_text()), copy)
    assert len(rows) == 4 and all(r["stale"] == "exported from other weights" for r in rows)
    assert not any(r["stale"] for r in export_rows(json.loads((run / "export.json").read_text()), run))
    with pytest.raises(ClassbenchError, match="choose auto, torch, onnx"):
        load(copy, backend="tensorrt-fp16")
    assert np.isfinite(load(copy, backend="torch").predict_batch(val_paths(copy)[0][:1])[0].top[0][1])


def test_the_run_report_shows_export_parity(run: Path, results: dict) -> None:
    from classbench.report.html import build_report

    html = build_report(run).read_text()
    assert "Export parity" in html and "openvino/model.int8.xml" in html and "onnx-int8" in html
    assert "15 val" in html and "boat " in html and "(5/5)" in html


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack via the C library: Linux")
def test_compiling_openvino_models_leaves_the_signal_stack_as_it_was(run: Path, results: dict) -> None:
    """OpenVINO's CPU plugin replaced the thread's alternate signal stack and freed it with the model: a later
    child-process signal then killed the process with SIGSEGV (seen in this suite); OpenVinoModel restores it."""
    import ctypes

    from classbench.inference import OpenVinoModel, _SignalStack

    libc = ctypes.CDLL(None)

    def current() -> tuple:
        stack = _SignalStack()
        assert libc.sigaltstack(None, ctypes.byref(stack)) == 0
        return stack.ss_sp, stack.ss_flags, stack.ss_size

    before = current()
    models = [OpenVinoModel(run / "openvino" / name) for name in ("model.xml", "model.int8.xml")]
    assert current() == before and all(m.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3) for m in models)
