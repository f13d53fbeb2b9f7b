"""Static INT8 quantization of the fp32 ONNX graph with ``onnxruntime.quantization`` (``model.int8.onnx``).

Defaults (measured on the 2-core Xeon with AVX512-VNNI/AMX, ORT 1.32, models trained on drone_maritime at 96 px,
val split; docs/deploy.md): QDQ format, per-channel symmetric int8 weights, **uint8** (asymmetric) activations,
MinMax calibration on 128 seeded training images. Signed int8 activations (S8S8) kept resnet50's agreement lower
(93.3% vs 97.1%) and ran 3.6x *slower* than fp32 here (38 vs 140 img/s at batch 32), U8S8 ran 1.2x faster
(165 img/s); Entropy calibration gave the same agreement as MinMax. ``quant_pre_process`` (ONNX shape inference and
ORT graph optimisation, symbolic shape inference skipped) runs first, as onnxruntime recommends.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from classbench.exporting.onnx_graph import INPUT_NAME, set_metadata


def settings(for_tensorrt: bool = False) -> dict[str, str]:
    """What ``quantize_int8`` does, as recorded in the file's metadata and ``export.json``."""
    activations = "int8 symmetric (for TensorRT)" if for_tensorrt else "uint8 asymmetric"
    return {"format": "QDQ", "activations": activations, "weights": "int8 symmetric per-channel", "method": "MinMax"}


def quantize_int8(fp32: bytes, calibration: Sequence[np.ndarray], for_tensorrt: bool = False) -> bytes:
    """``fp32`` (a classbench ONNX graph) quantized to INT8 (QDQ), calibrated on ``calibration`` (normalised
    float32 batches). The metadata is kept, with ``precision`` = ``int8`` and the settings in ``quantization``.
    ``for_tensorrt``: signed symmetric int8 activations (TensorRT's explicit quantization has no uint8)."""
    import json

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="classbench-int8-") as tmp, _quiet():
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        src.write_bytes(fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": for_tensorrt})
        proto = onnx.load(str(out))
    images = sum(len(b) for b in calibration)
    set_metadata(proto, {"precision": "int8", "quantization": json.dumps({**settings(for_tensorrt), "images": images})})
    return proto.SerializeToString()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence onnxruntime.quantization's chatter: root-logger warnings such as "Axis 1 is out-of-range for weight"
    (a BatchNorm that could not be folded into a convolution, e.g. densenet121's: quantized per tensor instead)
    and its prints; errors still raise."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


