"""Export a trained model to ONNX with a parity check, and run ONNX files.

Exporter choice (measured on torch 2.14.1 / onnxscript 0.7.2, 2-core CPU, warm process):
the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is tried first and the
torch.export-based "dynamo" exporter is the fallback. Both gave identical ORT parity (max probability
difference <= 1.5e-7) on resnet18, mobilenetv2_100, test_efficientnet, inception_v3, efficientnet_b0,
mobilenetv3_large_100, densenet121, convnext_atto and vit_tiny; the TorchScript exporter took
0.06-2.3 s against 1.6-9.7 s for dynamo (3-27x faster), prints nothing, and targets any opset
(default 17, which TensorRT 8.5+ on JetPack 5/6 reads; dynamo needs opset >= 18). It failed only on
``test_vit`` at a non-native size (``aten::_upsample_bicubic2d_aa`` from resampling position
embeddings), which the dynamo fallback exports fine. The legacy exporter is deprecated upstream; when
a future torch removes it, the fallback takes over without a code change. The fallback also runs when
the first file fails to load in ONNX Runtime or fails the parity check.

The graph outputs raw ``logits`` (not probabilities): calibration stays in the metadata
(``temperature``), so re-calibrating never needs a re-export; probabilities are
``softmax(logits / temperature)``. Input ``input``: NCHW float32, RGB, squashed to SxS, /255,
normalised with the metadata's mean/std.

fp16 (``fp16=True``) exports the ``.half()`` model wrapped so that input and output stay float32
(Cast nodes at both ends); it goes to ``model.fp16.onnx`` so the fp32 ``model.onnx`` used by
``classbench predict`` stays untouched. Its parity is reported, not enforced. On a Jetson prefer the
fp32 file plus ``trtexec --fp16``: TensorRT then chooses the precision per layer.

The metadata records the ``temperature`` of ``model.json`` at export time. ``evaluate`` may calibrate another one
later; ``classbench.predict.load`` then keeps using this file beside the weights with ``model.json``'s temperature
and says so in its ``note`` (the graph does not change), while the file on its own applies the recorded one.

Running ONNX files (``OnnxSession``, ``parse_metadata``, ``physical_cores``) lives in ``classbench.inference``,
shared with ``predict``; those names are imported here for existing callers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classbench.errors import ClassbenchError, ModelError
from classbench.inference import OnnxSession, parse_metadata, physical_cores
from classbench.metrics import softmax

__all__ = ["ExportResult", "OnnxSession", "export", "parse_metadata", "physical_cores", "render_export", "softmax"]

ONNX_FORMAT = "classbench-onnx/1"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
FP32_TOLERANCE = 1e-4
PARITY_SAMPLES = 32


@dataclass
class ExportResult:
    """What ``export`` wrote and how well it matches PyTorch."""

    path: Path
    format: str
    parity: dict[str, Any]
    input_name: str
    output_name: str
    input_shape: list[int | str]
    seconds: float
    exporter: str = ""
    opset: int | None = None
    fp16: bool = False
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def export(run: str | os.PathLike, format: str = "onnx", opset: int | None = None, dynamic_batch: bool = True,
           fp16: bool = False, out: str | os.PathLike | None = None,
           parity_images: Sequence[str | os.PathLike] | None = None) -> ExportResult:
    """Export the run's model to ``model.onnx`` (``model.fp16.onnx`` with ``fp16``) and check it against PyTorch.

    ONNX is the one deployment format (ONNX Runtime, TensorRT, OpenVINO read it); TorchScript went with
    ``torch.jit``'s deprecation upstream."""
    from classbench.models import load_model, read_meta
    from classbench.runs import file_sha256

    start = time.perf_counter()
    if format != "onnx":
        raise ClassbenchError(f"unknown export format {format!r}; use onnx (TorchScript is deprecated upstream)")
    meta, weights_path = read_meta(run)
    model, _ = load_model(weights_path)
    folder = weights_path.parent
    default_name = "model.fp16.onnx" if fp16 else "model.onnx"
    target = _target_path(out, folder, default_name)
    inputs = _parity_inputs(meta, folder, parity_images)
    sha = file_sha256(weights_path)
    result = _export_onnx(model, meta, sha, inputs, target, opset, dynamic_batch, fp16)
    result.seconds = round(time.perf_counter() - start, 2)
    result.size_bytes = target.stat().st_size
    return result


def _target_path(out: str | os.PathLike | None, folder: Path, default_name: str) -> Path:
    if out is None:
        return folder / default_name
    out = Path(out)
    return out if out.suffix == ".onnx" else out / default_name


def _parity_inputs(meta: dict[str, Any], folder: Path, images: Sequence[str | os.PathLike] | None) -> Any:
    """32 normalised inputs: real test/val images when known, else seeded random tensors."""
    import torch

    from classbench.data.imageio import load_image
    from classbench.data.transforms import normalize, to_uint8_tensor

    tensors = []
    for path in [Path(p) for p in images] if images is not None else _split_images(folder):
        if len(tensors) == PARITY_SAMPLES:
            break
        with contextlib.suppress(ClassbenchError):
            tensors.append(to_uint8_tensor(load_image(path), meta["img_size"]))
    if tensors:
        return normalize(torch.stack(tensors), meta["mean"], meta["std"]).float()
    size = int(meta["img_size"])
    return torch.randn(PARITY_SAMPLES, 3, size, size, generator=torch.Generator().manual_seed(0))


def _split_images(folder: Path) -> list[Path]:
    """Test then val images listed in the run's split.csv (paths relative to the CSV)."""
    import csv

    split_csv = folder / "split.csv"
    if not split_csv.is_file():
        return []
    try:
        with open(split_csv, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    ordered = [r for r in rows if r.get("split") == "test"] + [r for r in rows if r.get("split") == "val"]
    return [folder / r["path"] for r in ordered[: PARITY_SAMPLES * 2] if r.get("path")]


def _metadata(meta: dict[str, Any], sha: str, exporter: str, opset: int, fp16: bool) -> dict[str, str]:
    import classbench

    size = int(meta["img_size"])
    return {
        "format": ONNX_FORMAT, "architecture": meta["architecture"], "classes": json.dumps(list(meta["classes"])),
        "img_size": str(size), "mean": json.dumps(list(meta["mean"])), "std": json.dumps(list(meta["std"])),
        "temperature": json.dumps(float(meta.get("temperature") or 1.0)), "weights_sha256": sha,
        "classbench_version": classbench.__version__, "input_layout": "NCHW float32 normalised",
        "preprocessing": f"RGB, squash-resize to {size}x{size} (bilinear, antialias), /255, (x - mean) / std",
        "output": "logits; probabilities = softmax(logits / temperature)",
        "precision": "float16" if fp16 else "float32", "exporter": exporter, "opset": str(opset),
    }


def _fp32_io(model: Any) -> Any:
    """The model in half precision, wrapped so that the exported graph keeps float32 input and output."""
    import torch

    class Fp32IO(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    return Fp32IO(model.half()).eval()


@contextlib.contextmanager
def _silence_fd(fd: int) -> Iterator[None]:
    """Discard what C++ code writes to ``fd`` (the TorchScript exporter dumps whole graphs on failure)."""
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _onnx_bytes(model: Any, example: Any, opset: int | None, dynamic_batch: bool, dynamo: bool) -> tuple[bytes, int]:
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _silence_fd(2):
        warnings.simplefilter("ignore")
        if dynamo:
            version = max(opset or 18, 18)
            shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
            program = torch.onnx.export(model, (example,), None, dynamo=True, verbose=False, opset_version=version,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=shapes)
            return program.model_proto.SerializeToString(), version
        version = opset or DEFAULT_OPSET
        with contextlib.suppress(AttributeError):  # its C++ log of a failed graph must never reach stdout
            torch._C._jit_set_onnx_log_output_stream("stderr")
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
        buf = io.BytesIO()
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=version, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
        return buf.getvalue(), version


def _export_onnx(model: Any, meta: dict[str, Any], sha: str, inputs: Any, target: Path, opset: int | None,
                 dynamic_batch: bool, fp16: bool) -> ExportResult:
    import onnx

    from classbench.runs import atomic_write_bytes

    reference = _torch_logits(model, inputs)
    net = _fp32_io(model) if fp16 else model
    example = inputs[:2] if dynamic_batch else inputs[:1]
    notes: list[str] = []
    for exporter in ("torchscript", "dynamo"):
        try:
            data, version = _onnx_bytes(net, example, opset, dynamic_batch, exporter == "dynamo")
            proto = onnx.load_from_string(data)
            for key, value in _metadata(meta, sha, exporter, version, fp16).items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            proto.doc_string = f"classbench {meta['architecture']} classifier ({len(meta['classes'])} classes)"
            onnx.checker.check_model(proto)
            data = proto.SerializeToString()
            session = OnnxSession(target, model_bytes=data)
            parity = _parity(reference, session.run(inputs), meta, tolerance=None if fp16 else FP32_TOLERANCE)
        except Exception as err:  # noqa: BLE001 - try the other exporter, report both
            notes.append(f"{exporter} exporter: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}")
            continue
        atomic_write_bytes(target, data)  # only a file that passed the parity check replaces the old one
        return ExportResult(path=target, format="onnx", parity=parity, input_name=session.input_name,
                            output_name=session.output_name, input_shape=session.input_shape, seconds=0.0,
                            exporter=exporter, opset=version, fp16=fp16, notes=notes)
    raise ModelError(f"{meta['architecture']}: ONNX export failed with both exporters ({'; '.join(notes)}); "
                     "try another --opset")


def _torch_logits(model: Any, inputs: Any) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model.float().eval()(inputs.float()).numpy()


def _parity(reference: np.ndarray, logits: np.ndarray, meta: dict[str, Any], tolerance: float | None) -> dict[str, Any]:
    """Compare probabilities; raise when the fp32 difference exceeds ``tolerance``."""
    temperature = float(meta.get("temperature") or 1.0)
    if not np.isfinite(logits).all():
        raise ModelError("exported model produced NaN/inf (fp16 overflow?); export fp32 and use TensorRT --fp16")
    ref_p, out_p = softmax(reference, temperature), softmax(logits, temperature)
    report = {
        "samples": len(reference),
        "max_abs_prob_diff": float(np.abs(ref_p - out_p).max()),
        "max_abs_logit_diff": float(np.abs(reference - logits).max()),
        "top1_agreement": float((ref_p.argmax(1) == out_p.argmax(1)).mean()),
        "tolerance": tolerance,
    }
    if tolerance is not None and report["max_abs_prob_diff"] > tolerance:
        raise ModelError(f"parity check failed: max probability difference {report['max_abs_prob_diff']:.2e} > "
                         f"{tolerance:.0e} (top-1 agreement {report['top1_agreement']:.1%}) over {len(reference)} inputs")
    report["passed"] = True
    return report


def render_export(result: ExportResult, console: Any) -> None:
    """Print what was written, the graph's IO, and the parity numbers."""
    p = result.parity
    shape = "x".join(str(d) for d in result.input_shape)
    console.print(f"[bold green]Exported[/] {result.path} ({result.format}, {result.size_bytes / 1e6:.1f} MB, "
                  f"{result.exporter}{f', opset {result.opset}' if result.opset else ''}"
                  f"{', fp16 weights' if result.fp16 else ''}) in {result.seconds:.1f} s")
    console.print(f"  input  [bold]{result.input_name}[/] {shape} float32, NCHW, normalised")
    console.print(f"  output [bold]{result.output_name}[/] (logits; probabilities = softmax(logits / temperature))")
    tol = f" (limit {p['tolerance']:.0e})" if p.get("tolerance") else " (reported, not enforced)"
    console.print(f"  parity vs PyTorch fp32 on {p['samples']} inputs: max |Δp| {p['max_abs_prob_diff']:.1e}{tol}, "
                  f"top-1 agreement {p['top1_agreement']:.0%}")
    for note in result.notes:
        console.print(f"  [yellow]note:[/] fell back after {note}", soft_wrap=True)

