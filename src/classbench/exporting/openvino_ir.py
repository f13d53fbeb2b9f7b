"""OpenVINO IR from the fp32 ONNX graph (``openvino/model.xml``), optionally INT8 via NNCF post-training
quantization (``openvino/model.int8.xml``); the optional extra ``classbench[openvino]``.

``openvino.convert_model`` reads the ONNX file; classbench's metadata goes into the IR's ``rt_info["classbench"]``
(so ``classbench.inference.OpenVinoModel`` and ``predict --backend openvino`` check staleness as for ONNX). The IR
keeps fp32 weights (``compress_to_fp16=False``); at run time the CPU plugin picks its inference precision (bf16 on
CPUs with AMX/AVX512-BF16), and parity is measured exactly as ``predict`` runs it: from the saved files, compiled for
the CPU. NNCF's defaults (the ``PERFORMANCE`` preset: symmetric int8 weights and activations, fast bias correction)
run over the same calibration images as ONNX Runtime's INT8 (batch 1, as NNCF recommends for its statistics).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classbench.inference import import_optional, keep_signal_stack


def to_openvino(fp32: bytes, props: dict[str, str]) -> Any:
    """An ``openvino.Model`` converted from the ONNX bytes ``fp32``, ``props`` stored under rt_info classbench."""
    ov = import_optional("openvino", "openvino")
    with tempfile.TemporaryDirectory(prefix="classbench-ov-") as tmp:
        src = Path(tmp, "model.onnx")
        src.write_bytes(fp32)
        model = ov.convert_model(str(src))
    for key, value in props.items():
        model.set_rt_info(value, ["classbench", key])
    return model


def quantize_nncf(model: Any, calibration: Sequence[np.ndarray]) -> Any:
    """NNCF post-training INT8 quantization of ``model`` on ``calibration`` (normalised float32 batches of 1);
    the rt_info's ``precision`` becomes ``int8``. NNCF's progress output is swallowed; it compiles models to collect
    statistics, so the thread's signal stack is kept (``classbench.inference.keep_signal_stack``)."""
    nncf = import_optional("nncf", "openvino")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), keep_signal_stack():
        quantized = nncf.quantize(model, nncf.Dataset(list(calibration)), subset_size=len(calibration))
    quantized.set_rt_info("int8", ["classbench", "precision"])
    return quantized


@contextlib.contextmanager
def staged_ir(model: Any, target: Path) -> Iterator[Path]:
    """Save ``model`` as an IR in a hidden folder (in the nearest existing folder above ``target``) and yield the
    staged ``.xml``.

    When the ``with`` body returns, ``target``'s folder is created if needed and the ``.bin`` and then the
    ``.xml`` replace ``target``'s (``os.replace``; other files in the folder untouched); when it raises, nothing
    is moved, no folder is created and the stage is removed.
    """
    ov = import_optional("openvino", "openvino")
    root = next(p for p in target.absolute().parents if p.is_dir())
    stage = Path(tempfile.mkdtemp(prefix=".openvino-", dir=root))
    try:
        staged = stage / target.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        yield staged
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.with_suffix(".bin").replace(target.with_suffix(".bin"))
        staged.replace(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
