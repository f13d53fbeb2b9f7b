"""PyTorch -> ONNX graph bytes with classbench's metadata (the fp32 graph every other export starts from).

Exporter choice (measured on torch 2.14.1 / onnxscript 0.7.2, 2-core CPU, warm process): the TorchScript-based
exporter (``torch.onnx.export(..., dynamo=False)``) is tried first and the torch.export-based "dynamo" exporter is
the fallback. Both gave identical ORT parity (max probability difference <= 1.5e-7) on resnet18, mobilenetv2_100,
test_efficientnet, inception_v3, efficientnet_b0, mobilenetv3_large_100, densenet121, convnext_atto and vit_tiny;
the TorchScript exporter took 0.06-2.3 s against 1.6-9.7 s for dynamo, prints nothing and targets any opset
(default 17, which TensorRT 8.5+ on JetPack 5/6 reads; dynamo needs opset >= 18). It failed only on ``test_vit`` at
a non-native size (``aten::_upsample_bicubic2d_aa``), which the dynamo fallback exports. The fallback also runs when
the first graph fails to load in ONNX Runtime or fails its check (``build_graph``'s ``check``).

The graph outputs raw ``logits``; input ``input`` is NCHW float32, RGB, squashed to SxS, /255, normalised with the
metadata's mean/std. fp16 wraps the ``.half()`` model so that input and output stay float32.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from classbench.calibration import stored_temperature
from classbench.errors import ModelError, first_line

ONNX_FORMAT = "classbench-onnx/1"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17


@dataclass
class Graph:
    """An ONNX model that passed ``check``: serialized ``data``, the exporter and opset that made it, what
    ``check`` returned, and a note per exporter that failed first."""

    data: bytes
    exporter: str
    opset: int
    checked: Any = None
    notes: list[str] = field(default_factory=list)


def metadata(meta: dict[str, Any], sha: str, exporter: str, opset: int, precision: str) -> dict[str, str]:
    """The metadata_props of a classbench ONNX file (strings; JSON for lists and numbers)."""
    import classbench

    size = int(meta["img_size"])
    return {
        "format": ONNX_FORMAT, "architecture": meta["architecture"], "classes": json.dumps(list(meta["classes"])),
        "img_size": str(size), "mean": json.dumps(list(meta["mean"])), "std": json.dumps(list(meta["std"])),
        "temperature": json.dumps(stored_temperature(meta)), "weights_sha256": sha,
        "classbench_version": classbench.__version__, "input_layout": "NCHW float32 normalised",
        "preprocessing": f"RGB, squash-resize to {size}x{size} (bilinear, antialias), /255, (x - mean) / std",
        "output": "logits; probabilities = softmax(logits / temperature)",
        "precision": precision, "exporter": exporter, "opset": str(opset),
    }


def set_metadata(proto: Any, props: dict[str, str]) -> None:
    """Write ``props`` into an ``onnx.ModelProto``'s metadata_props, replacing keys it already has."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for key, value in [*keep, *props.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


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


def onnx_bytes(model: Any, example: Any, opset: int | None, dynamic_batch: bool, dynamo: bool) -> tuple[bytes, int]:
    """Serialized ONNX of ``model`` traced on ``example`` (no metadata) and the opset used; quiet on success."""
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


def build_graph(model: Any, meta: dict[str, Any], sha: str, example: Any, opset: int | None, dynamic_batch: bool,
                fp16: bool, check: Callable[[bytes], Any]) -> Graph:
    """Export ``model`` (fp32, or fp16 weights with float32 IO) with the TorchScript exporter, else dynamo.

    ``check(data)`` runs the candidate (ONNX Runtime) and raises when it does not match PyTorch; the first graph
    that passes is returned with what ``check`` returned. ModelError when both exporters fail, with both reasons.
    """
    import onnx

    net = _fp32_io(model) if fp16 else model
    notes: list[str] = []
    try:
        for exporter in ("torchscript", "dynamo"):
            try:
                data, version = onnx_bytes(net, example, opset, dynamic_batch, exporter == "dynamo")
                proto = onnx.load_from_string(data)
                set_metadata(proto, metadata(meta, sha, exporter, version, "float16" if fp16 else "float32"))
                proto.doc_string = f"classbench {meta['architecture']} classifier ({len(meta['classes'])} classes)"
                onnx.checker.check_model(proto)
                data = proto.SerializeToString()
                return Graph(data, exporter, version, check(data), notes)
            except Exception as err:  # noqa: BLE001 - try the other exporter, report both
                notes.append(f"{exporter} exporter: {type(err).__name__}: {first_line(err, 300)}")
    finally:
        if fp16:
            model.float()  # _fp32_io halved the model in place: the caller gets its fp32 model back
    raise ModelError(f"{meta['architecture']}: ONNX export failed with both exporters ({'; '.join(notes)}); "
                     "try another --opset")
