"""One function per export runtime: build the variant from the fp32 ONNX graph, measure its parity, write it only
when it passed, and the ``export.json`` entry that records it (see ``classbench.exporting``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classbench.errors import ClassbenchError
from classbench.exporting.onnx_graph import Graph, build_graph
from classbench.exporting.parity import DEFAULT_MIN_AGREEMENT, Samples, agreement, calibration_inputs, record, refusal, run_logits
from classbench.inference import EXPORTS, OnnxSession, import_optional
from classbench.runs import atomic_write_bytes, timestamp

FP32_TOLERANCE = 1e-4


@dataclass
class Job:
    """Everything one export needs: the fp32 ``model`` and its ``meta``, the weights' ``sha``, the run ``folder``,
    where to write (``target``), the parity ``samples`` and PyTorch's ``reference`` logits on them, and options."""

    variant: str
    model: Any
    meta: dict[str, Any]
    sha: str
    folder: Path
    target: Path
    samples: Samples
    reference: np.ndarray
    opset: int | None = None
    dynamic_batch: bool = True
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    calibration_images: int = 128
    seed: int = 0

    @property
    def example(self) -> Any:
        """The tracing input: two parity images (one for a fixed-batch export)."""
        import torch

        first = next(self.samples.inputs(self.meta))
        pair = np.concatenate([first, first])[: 2 if self.dynamic_batch else 1]
        return torch.from_numpy(np.ascontiguousarray(pair))

    @property
    def label(self) -> str:
        """``resnet50 onnx-int8``: how messages name this export."""
        return f"{self.meta['architecture']} {self.variant}"


def require_runtime(variant: str) -> None:
    """One ClassbenchError line when the variant's optional extra (or, for TensorRT, a CUDA GPU) is missing."""
    runtime = EXPORTS[variant].runtime
    if runtime == "openvino":
        import_optional("openvino", "openvino")
        if variant.endswith("int8"):
            import_optional("nncf", "openvino")
    elif runtime == "tensorrt":
        from classbench.exporting.tensorrt_engine import require_tensorrt

        require_tensorrt()


def run(job: Job) -> Any:
    """Build, check and write ``job.variant``; returns its ``ExportResult`` (seconds and size not yet set)."""
    runtime = EXPORTS[job.variant].runtime
    if job.variant.endswith("int8") and job.samples.source == "random":
        raise ClassbenchError(f"{job.label}: {job.samples.note}; INT8 agreement needs real images: export a run "
                              "that `classbench train` wrote, or pass parity images")
    if runtime == "onnxruntime":
        return _onnx(job)
    if runtime == "openvino":
        return _openvino(job)
    return _tensorrt(job)


def _fp32_graph(job: Job, fp16: bool = False) -> Graph:
    """The ONNX graph (fp32, or fp16 weights) that matched PyTorch; ``checked`` is ``(session, report)``."""

    def check(data: bytes) -> tuple[OnnxSession, dict[str, Any]]:
        session = OnnxSession(job.target, model_bytes=data)
        logits = run_logits(session.run, job.samples, job.meta)
        return session, agreement(job.reference, logits, job.samples, job.meta,
                                  tolerance=None if fp16 else FP32_TOLERANCE, min_agreement=job.min_agreement)

    return build_graph(job.model, job.meta, job.sha, job.example, job.opset, job.dynamic_batch, fp16, check)


def _calibration(job: Job, batch_size: int) -> list[np.ndarray]:
    """The job's calibration images (a seeded sample of the run's train split) in batches of ``batch_size``."""
    return calibration_inputs(job.folder, job.meta, job.calibration_images, job.seed, batch_size)


def _checked(job: Job, run_batch: Any) -> dict[str, Any]:
    """The parity report of a candidate; raises the refusal when an INT8 variant is under ``min_agreement``."""
    report = agreement(job.reference, run_logits(run_batch, job.samples, job.meta), job.samples, job.meta,
                       min_agreement=job.min_agreement, enforce=job.variant.endswith("int8"))
    if not report["passed"]:
        raise refusal(report, job.label)
    return report


def _result(job: Job, graph: Graph, session: Any, parity: dict[str, Any], **extra: Any) -> Any:
    """The ``ExportResult`` of a written export (IO names and shape from the runner that was checked)."""
    from classbench.exporting import ExportResult

    kind = EXPORTS[job.variant]
    return ExportResult(path=job.target, format=kind.runtime if kind.runtime != "onnxruntime" else "onnx",
                        parity=parity, input_name=getattr(session, "input_name", "input"),
                        output_name=getattr(session, "output_name", "logits"),
                        input_shape=list(getattr(session, "input_shape", [])), seconds=0.0, exporter=graph.exporter,
                        opset=graph.opset, fp16=job.variant.endswith("fp16"), notes=graph.notes, variant=job.variant,
                        precision=kind.precision, **extra)


def _onnx(job: Job) -> Any:
    """``onnx`` / ``onnx-fp16`` / ``onnx-int8`` through ONNX Runtime."""

    graph = _fp32_graph(job, fp16=job.variant == "onnx-fp16")
    session, parity = graph.checked
    calibration = None
    if job.variant == "onnx-int8":
        from classbench.exporting.quantize import quantize_int8, settings

        batches = _calibration(job, 8)
        data = quantize_int8(graph.data, batches)
        session = OnnxSession(job.target, model_bytes=data)
        parity = _checked(job, session.run)
        calibration = {**settings(), "images": int(sum(len(b) for b in batches)), "split": "train", "seed": job.seed}
        calibration["description"] = "QDQ, uint8 activations, int8 symmetric per-channel weights, MinMax"
    else:
        data = graph.data
    atomic_write_bytes(job.target, data)  # only a graph that passed its check replaces the old file
    return _result(job, graph, session, parity, calibration=calibration)


def _openvino(job: Job) -> Any:
    """``openvino`` / ``openvino-int8``: IR converted from the checked fp32 graph, NNCF for INT8."""
    from classbench.exporting.onnx_graph import metadata
    from classbench.exporting.openvino_ir import quantize_nncf, staged_ir, to_openvino
    from classbench.inference import OpenVinoModel

    graph = _fp32_graph(job)
    model = to_openvino(graph.data, metadata(job.meta, job.sha, graph.exporter, graph.opset, "float32"))
    calibration = None
    if job.variant == "openvino-int8":
        batches = _calibration(job, 1)
        model = quantize_nncf(model, batches)
        calibration = {"tool": "NNCF post-training quantization", "preset": "performance (symmetric int8)",
                       "images": len(batches), "split": "train", "seed": job.seed,
                       "description": "NNCF post-training quantization, performance preset"}
    with staged_ir(model, job.target) as staged:
        runner = OpenVinoModel(staged)
        parity = _checked(job, runner.run)
    return _result(job, graph, runner, parity, calibration=calibration, runtime_precision=runner.precision)


def _tensorrt(job: Job) -> Any:
    """``tensorrt-fp16`` / ``tensorrt-int8`` (not run here: no CUDA GPU; see tensorrt_engine)."""
    from classbench.exporting.quantize import quantize_int8, settings
    from classbench.exporting.tensorrt_engine import TensorRTRunner, build_engine

    graph = _fp32_graph(job)
    int8 = job.variant == "tensorrt-int8"
    calibration = None
    data = graph.data
    if int8:
        batches = _calibration(job, 8)
        data = quantize_int8(graph.data, batches, for_tensorrt=True)
        calibration = {**settings(True), "images": int(sum(len(b) for b in batches)), "split": "train",
                       "seed": job.seed, "description": "QDQ, int8 symmetric activations and weights (TensorRT)"}
    engine = build_engine(data, int(job.meta["img_size"]), int8)
    runner = TensorRTRunner(engine)
    parity = _checked(job, runner.run)
    atomic_write_bytes(job.target, engine)
    return _result(job, graph, runner, parity, calibration=calibration, runtime_precision="fp16+int8" if int8 else "fp16")


def record_result(job: Job, result: Any) -> Path:
    """The ``export.json`` entry of a written export (file relative to the run folder when inside it)."""
    try:
        file = os.path.relpath(result.path, job.folder) if result.path.resolve().is_relative_to(job.folder.resolve()) \
            else str(result.path)
    except ValueError:
        file = str(result.path)
    entry = {"file": file, "format": result.format, "precision": result.precision,
             "runtime_precision": result.runtime_precision, "size_bytes": result.size_bytes,
             "seconds": result.seconds, "exporter": result.exporter, "opset": result.opset,
             "weights_sha256": job.sha, "created": timestamp(),
             "calibration": result.calibration, "parity": result.parity}
    return record(job.folder, job.variant, entry)
