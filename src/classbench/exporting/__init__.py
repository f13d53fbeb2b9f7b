"""Export a trained model for deployment, with parity judged the way a user cares about.

``export(run, format, fp16, int8)`` writes one variant (``classbench.inference.EXPORTS`` names them and their
files): ``onnx`` (``model.onnx``, fp32), ``onnx-fp16`` (``model.fp16.onnx``), ``onnx-int8`` (``model.int8.onnx``,
static QDQ quantization with ONNX Runtime), ``openvino`` / ``openvino-int8`` (``openvino/model.xml`` /
``model.int8.xml``, NNCF for INT8) and ``tensorrt-fp16`` / ``tensorrt-int8`` (``model.*.plan``, CUDA GPU only).
Every variant starts from the fp32 ONNX graph (``onnx_graph``), which must match PyTorch to a max probability
difference of 1e-4 first; the graph outputs raw ``logits`` and records classes, size, mean/std and the temperature.

Parity (``parity``): top-1 agreement with the fp32 PyTorch model on the run's ``val`` split (``parity_split="test"``
on request), overall and per class, plus macro-F1 of both; each export's report replaces its entry in the run's
``export.json``. The INT8 variants refuse (ModelError, one line) when agreement is under ``min_agreement``
(default 0.99): the file is written only after its check passed (temporary name, then rename), so a refused export
leaves every earlier file and ``export.json`` as they were. fp32 enforces its logit tolerance; fp16 and the fp32
OpenVINO IR report agreement without refusing.

Running exported files lives in ``classbench.inference`` (``OnnxSession``, ``OpenVinoModel``), shared with
``predict``, which never imports this package; those names are re-exported here for existing callers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classbench.errors import ClassbenchError
from classbench.exporting.parity import DEFAULT_MAX_IMAGES, DEFAULT_MIN_AGREEMENT
from classbench.exporting.render import render_export
from classbench.inference import EXPORTS, OnnxSession, physical_cores

__all__ = ["FORMATS", "ExportResult", "OnnxSession", "export", "physical_cores", "render_export", "variant_name"]

FORMATS = ("onnx", "openvino", "tensorrt")
PARITY_SPLITS = ("val", "test")


@dataclass
class ExportResult:
    """What ``export`` wrote (``path``, ``variant``) and its ``parity`` report (``parity.agreement``'s dict)."""

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
    variant: str = "onnx"
    precision: str = "float32"
    calibration: dict[str, Any] | None = None
    runtime_precision: str | None = None
    export_json: Path | None = None


def variant_name(format: str, fp16: bool = False, int8: bool = False) -> str:
    """``format`` + flags -> the variant (``onnx``, ``onnx-int8``, ``openvino``, ``tensorrt-fp16``, ...);
    ClassbenchError for an unknown format or a combination that does not exist."""
    if format not in FORMATS:
        raise ClassbenchError(f"unknown export format {format!r}; use onnx, openvino or tensorrt "
                              "(TorchScript is deprecated upstream)")
    if fp16 and int8:
        raise ClassbenchError("--fp16 and --int8 exclude each other; pick one")
    if format == "openvino" and fp16:
        raise ClassbenchError("--format openvino picks its inference precision on the device (bf16 where the CPU "
                              "has it); drop --fp16, or add --int8 for NNCF quantization")
    if format == "tensorrt":
        return "tensorrt-int8" if int8 else "tensorrt-fp16"
    return f"{format}-int8" if int8 else f"{format}-fp16" if fp16 else format


def export(run: str | os.PathLike, format: str = "onnx", opset: int | None = None, dynamic_batch: bool = True,
           fp16: bool = False, int8: bool = False, out: str | os.PathLike | None = None,
           parity_images: Sequence[str | os.PathLike] | None = None, parity_split: str = "val",
           min_agreement: float = DEFAULT_MIN_AGREEMENT, calibration_images: int = 128,
           max_parity_images: int | None = DEFAULT_MAX_IMAGES,
           seed: int = 0) -> ExportResult:
    """Export the run's model as one variant (see the module docstring), check it, write it, record it.

    ``parity_images`` replaces the split's images (unlabelled: per class then groups by PyTorch's prediction);
    ``max_parity_images`` caps the split (a seeded subset); ``calibration_images`` train images calibrate INT8.
    ``out``: a file (or folder) for the export instead of the run folder; ``export.json`` stays in the run folder.
    """
    from classbench.exporting import variants
    from classbench.exporting.parity import parity_samples, torch_logits
    from classbench.models import load_model, read_meta
    from classbench.runs import file_sha256

    start = time.perf_counter()
    variant = variant_name(format, fp16, int8)
    if parity_split not in PARITY_SPLITS:
        raise ClassbenchError(f"--parity-split {parity_split!r}: use val (default) or test")
    variants.require_runtime(variant)  # a missing extra or GPU: one line, before any work
    meta, weights = read_meta(run)
    model, _ = load_model(weights)
    folder = weights.parent
    samples = parity_samples(folder, meta, parity_split, parity_images, max_parity_images, seed)
    job = variants.Job(variant=variant, model=model, meta=meta, sha=file_sha256(weights), folder=folder,
                       target=_target_path(out, folder, variant), samples=samples,
                       reference=torch_logits(model, samples, meta), opset=opset, dynamic_batch=dynamic_batch,
                       min_agreement=min_agreement, calibration_images=calibration_images, seed=seed)
    result = variants.run(job)
    result.seconds = round(time.perf_counter() - start, 2)
    result.size_bytes = _size(result.path)
    result.export_json = variants.record_result(job, result)
    return result


def _target_path(out: str | os.PathLike | None, folder: Path, variant: str) -> Path:
    """The variant's file in the run folder, or ``out`` (a file with the variant's suffix, else a folder)."""
    default = Path(EXPORTS[variant].file)
    if out is None:
        return folder / default
    out = Path(out)
    return out if out.suffix == default.suffix else out / default.name


def _size(path: Path) -> int:
    """Bytes of the export (an OpenVINO IR counts its .xml and .bin)."""
    size = path.stat().st_size
    if path.suffix == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size
