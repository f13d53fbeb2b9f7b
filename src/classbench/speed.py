"""CPU speed levers that training and ``bench`` share; each one measured (docs/benchmarks.md).

- :func:`out_of_place_activations`: on channels-last CPU tensors PyTorch's in-place activations are slower
  than the out-of-place ones (ReLU6 on 32x96x112x112 bf16, forward + backward: 86 ms in place, 53 ms not;
  ``hardtanh_`` clamps into a new tensor and copies it back), so CPU training runs them out of place: a whole
  bf16 step @224 mobilenetv2 +10%, densenet121 +9%, resnet50 +4%, same peak memory. It changes a module
  attribute of the model being trained, nothing outside it.
- :func:`adamw`: PyTorch's fused AdamW kernel (CPU and CUDA) instead of the default multi-tensor one:
  an inception_v3 optimiser step took 16 ms instead of 54 ms on 2 cores (mobilenetv2: 1.7 vs 6.3 ms).

Removed (docs/DESIGN.md, "Levers that went"): a run-time-compiled BatchNorm+ReLU C kernel, the process-wide
glibc ``mallopt`` setting and the fp32 swap of strided depthwise convolutions under bf16.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def out_of_place_activations(model: nn.Module) -> int:
    """Set ``inplace=False`` on every activation module that computes in place (ReLU, ReLU6, SiLU, ...)."""
    switched = 0
    for module in model.modules():
        if getattr(module, "inplace", None) is True:
            module.inplace = False
            switched += 1
    return switched


def cpu_levers(model: nn.Module, on_gpu: bool) -> dict[str, object]:
    """Apply the levers that fit this run (CPU only); returns what was done, for the run's config."""
    if on_gpu:
        return {}
    return {"out_of_place_activations": out_of_place_activations(model)}


def adamw(params: Iterable[Any], fused: bool = True, **options: Any) -> torch.optim.AdamW:
    """AdamW with the fused kernel where this torch build has it for the parameters' device."""
    params = list(params)
    if not fused:
        return torch.optim.AdamW(params, **options)
    try:
        return torch.optim.AdamW(params, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # an older torch, or a device without the fused kernel
        return torch.optim.AdamW(params, **options)
