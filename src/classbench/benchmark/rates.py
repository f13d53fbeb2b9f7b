"""``classbench bench``'s inference rates: PyTorch fp32 and the exported runtimes side by side (images/s at the
bench's batch size, ms at batch 1).

The exported variants are the ones ``classbench export`` writes, built the same way (``classbench.exporting``):
``onnx`` (ONNX Runtime fp32), ``onnx-int8`` (ONNX Runtime static INT8, QDQ), ``openvino`` (the CPU plugin's own
precision: bf16 on CPUs with AMX/AVX512-BF16) and ``openvino-int8`` (NNCF). bench's model has random weights, so
INT8 is calibrated on seeded random tensors: the rate is the runtime's, agreement is measured by ``export``.
A variant whose package is missing, or that fails to build, gets ``{"error": ...}`` instead of numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from classbench.benchmark.training import sync
from classbench.errors import first_line

EXPORT_RATES = ("onnx", "onnx-int8", "openvino", "openvino-int8")
CALIBRATION_BATCHES = 4


def torch_rates(module: Any, batch_size: int, size: int, device: Any, repeats: int = 5) -> tuple[float, float]:
    """fp32 eval of the module (uint8 input, as evaluation/predict feed it): images/s at ``batch_size`` and ms
    per image at batch 1."""
    import torch

    module.eval()
    with torch.inference_mode():
        rates = time_runner(module, batch_size, size, repeats, wait=sync,
                            make=lambda n: torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=device))
    module.train()
    return rates


def time_runner(run: Callable[[Any], Any], batch_size: int, size: int, repeats: int = 5,
                make: Callable[[int], Any] | None = None, wait: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """Images/s of ``run`` at ``batch_size`` and ms at batch 1: one warm-up call each, then ``repeats`` /
    ``4 x repeats`` timed calls on ``make(batch)`` (default: seeded normal float32 NCHW arrays); ``wait()``
    before each clock read (``sync`` for CUDA work)."""
    make = make or (lambda n: np.random.default_rng(0).standard_normal((n, 3, size, size), dtype=np.float32))
    out = []
    for batch in (batch_size, 1):
        x = make(batch)
        run(x)
        n = repeats if batch > 1 else repeats * 4
        wait()
        start = time.perf_counter()
        for _ in range(n):
            run(x)
        wait()
        out.append((time.perf_counter() - start) / n)
    return round(batch_size / out[0], 2), round(out[1] * 1000, 3)


def _runners(model: Any, size: int, variants: Sequence[str]) -> dict[str, Any]:
    """``variant -> (run, precision)`` or ``variant -> error text``, built as ``classbench export`` builds them."""
    import torch

    from classbench.exporting.onnx_graph import onnx_bytes
    from classbench.exporting.quantize import quantize_int8
    from classbench.inference import OnnxSession

    data, _ = onnx_bytes(model.eval().float(), torch.randn(2, 3, size, size), None, True, False)
    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((8, 3, size, size), dtype=np.float32) for _ in range(CALIBRATION_BATCHES)]
    built: dict[str, Any] = {}
    ov_model = None
    for variant in variants:
        try:
            if variant == "onnx":
                built[variant] = (OnnxSession("bench.onnx", model_bytes=data).run, "fp32")
            elif variant == "onnx-int8":
                int8 = quantize_int8(data, calibration)
                built[variant] = (OnnxSession("bench.int8.onnx", model_bytes=int8).run, "int8")
            elif variant.startswith("openvino"):
                from classbench.exporting.openvino_ir import quantize_nncf, to_openvino
                from classbench.inference import OpenVinoModel

                ov_model = ov_model if ov_model is not None else to_openvino(data, {})
                net = ov_model
                if variant == "openvino-int8":
                    net = quantize_nncf(ov_model.clone(), [b[i:i + 1] for b in calibration for i in range(len(b))])
                runner = OpenVinoModel(f"bench.{variant}.xml", model=net)
                built[variant] = (runner.run, f"int8+{runner.precision}" if variant.endswith("int8") else runner.precision)
            else:
                built[variant] = f"unknown export {variant!r}; choose from {', '.join(EXPORT_RATES)}"
        except Exception as err:  # noqa: BLE001 - one runtime failing must not lose the others' numbers
            built[variant] = first_line(err)
    return built


def export_rates(model: Any, batch_size: int, size: int, variants: Sequence[str] = EXPORT_RATES,
                 repeats: int = 5) -> dict[str, dict[str, Any]]:
    """``{variant: {"images_per_s", "ms_batch1", "precision"}}`` on the CPU (or ``{"error": text}``) for the
    fp32 model ``model`` (left in train mode afterwards)."""
    try:
        built = _runners(model, size, variants)
    except Exception as err:  # noqa: BLE001 - no ONNX graph: no exported rates, the training numbers stand
        return {v: {"error": f"ONNX export failed: {first_line(err)}"}
                for v in variants}
    finally:
        model.train()
    rates: dict[str, dict[str, Any]] = {}
    for variant, runner in built.items():
        if isinstance(runner, str):
            rates[variant] = {"error": runner}
            continue
        run, precision = runner
        ips, ms = time_runner(run, batch_size, size, repeats)
        rates[variant] = {"images_per_s": ips, "ms_batch1": ms, "precision": precision}
    return rates
