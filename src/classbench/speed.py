"""CPU speed levers that training and ``bench`` share; each one measured (benchmarks/cpu_levers.py).

- :func:`tune_allocator`: glibc serves big blocks with ``mmap`` and unmaps them on ``free``, so a CPU
  training step page-faults its large activations in again, every step (resnet18 @128, batch 32: 45,000
  faults per step; tuned: under 1,000). Keeping freed memory in the heap made a mobilenetv2 bf16 step 25%
  faster on 2 cores, for 4-11% more resident memory. Off with ``CLASSBENCH_MALLOC=default``.
- :func:`fp32_strided_depthwise`: oneDNN's bf16 kernel for a *strided depthwise* convolution's backward pass
  is 3.6x slower than its fp32 one (32x96x112x112: 170 ms vs 47 ms), so under CPU bf16 autocast those few
  layers run in fp32 (and are more precise for it): mobilenetv2 +24-28%, efficientnet_lite0 +35%.
- :func:`out_of_place_activations`: on channels-last CPU tensors PyTorch's in-place activations are slower
  than the out-of-place ones (ReLU6 on 32x96x112x112 bf16, forward + backward: 86 ms in place, 53 ms not;
  ``hardtanh_`` clamps into a new tensor and copies it back), so CPU training runs them out of place: a whole
  bf16 step @224 mobilenetv2 +10%, densenet121 +9%, resnet50 +4%, same peak memory.
- ``fused_norm.fuse_norm_act`` (CPU bf16): timm's BatchNorm+ReLU/ReLU6 modules run as one C kernel, built once
  per machine (densenet121 +14-24%, mobilenetv2 +29%, inception_v3 +7-18% per model-only step @224).
- :func:`adamw`: PyTorch's fused AdamW kernel (CPU and CUDA) instead of the default multi-tensor one:
  an inception_v3 optimiser step took 16 ms instead of 54 ms on 2 cores (mobilenetv2: 1.7 vs 6.3 ms).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameter numbers (malloc.h)
_allocator_tuned: bool | None = None
_libc: ctypes.CDLL | None = None


def tune_allocator() -> bool:
    """Keep freed memory in the process heap (glibc on Linux); True when in effect. Idempotent."""
    global _allocator_tuned, _libc
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get("CLASSBENCH_MALLOC", "tuned") == "default":
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        _libc = ctypes.CDLL("libc.so.6")
        _allocator_tuned = _libc.mallopt(_M_MMAP_MAX, 0) == 1 and _libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
    return _allocator_tuned


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (``malloc_trim``), e.g. before measuring peak memory."""
    if _allocator_tuned and _libc is not None:
        _libc.malloc_trim(0)


class Fp32Conv2d(nn.Conv2d):
    """A ``Conv2d`` that computes in fp32 under autocast; same parameters and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def is_strided_depthwise(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.groups > 1 and module.groups == module.in_channels
            == module.out_channels and max(module.stride) > 1)


def fp32_strided_depthwise(model: nn.Module) -> int:
    """Swap every strided depthwise ``nn.Conv2d`` for an :class:`Fp32Conv2d` sharing its parameters."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not is_strided_depthwise(child):
                continue
            conv = Fp32Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                              child.dilation, child.groups, child.bias is not None, child.padding_mode,
                              device="meta")
            conv.weight, conv.bias = child.weight, child.bias
            conv.train(child.training)
            setattr(parent, name, conv)
            swapped += 1
    return swapped


def out_of_place_activations(model: nn.Module) -> int:
    """Set ``inplace=False`` on every activation module that computes in place (ReLU, ReLU6, SiLU, ...)."""
    switched = 0
    for module in model.modules():
        if getattr(module, "inplace", None) is True:
            module.inplace = False
            switched += 1
    return switched


def cpu_levers(model: nn.Module, precision: str, on_gpu: bool) -> dict[str, object]:
    """Apply the levers that fit this run (CPU only); returns what was done, for the run's config."""
    if on_gpu:
        return {}
    done: dict[str, object] = {"malloc_tuned": tune_allocator(),
                               "out_of_place_activations": out_of_place_activations(model)}
    if precision == "bf16-mixed":
        done["fp32_strided_depthwise_convs"] = fp32_strided_depthwise(model)
        from classbench.fused_norm import fuse_norm_act

        done["fused_norm_act"] = fuse_norm_act(model)
    return done


def adamw(params: Iterable[Any], fused: bool = True, **options: Any) -> torch.optim.AdamW:
    """AdamW with the fused kernel where this torch build has it for the parameters' device."""
    params = list(params)
    if not fused:
        return torch.optim.AdamW(params, **options)
    try:
        return torch.optim.AdamW(params, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # an older torch, or a device without the fused kernel
        return torch.optim.AdamW(params, **options)
