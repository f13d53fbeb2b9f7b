"""Fused BatchNorm + ReLU/ReLU6 for CPU bf16 training (a speed lever; see ``speed.cpu_levers``).

On a CPU the memory-bound BatchNorm and activation passes, not the convolutions, bound a bf16 training step
of densenet121 (BN 30%, ReLU 23% of the step). ``fused_norm.c`` does BatchNorm's statistics, normalisation,
activation and their backward in 3 + 5 passes over the activations instead of PyTorch's 5 + 8, and sums more
precisely. Measured on 2 Xeon cores, model-only step @224, batch 32: densenet121 +14-24%, mobilenetv2 +29%,
inception_v3 +7-18% (benchmarks/cpu_levers.py).

The C file is compiled once per machine with the system's C compiler into a user cache folder and loaded with
ctypes (no PyTorch headers, under a second to build). Without a compiler, or off Linux, or with
``CLASSBENCH_FUSED_NORM=off``, nothing changes: :func:`fuse_norm_act` swaps no module and says why.
Evaluation, fp32 and GPU runs always take PyTorch's own kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

SOURCE = Path(__file__).with_name("fused_norm.c")
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-shared", "-fPIC")
ACTIVATIONS: dict[type[nn.Module], int] = {nn.Identity: 0, nn.ReLU: 1, nn.ReLU6: 2}

_library: ctypes.CDLL | None = None
_unavailable: str | None = None


def cache_dir() -> Path:
    """Where built kernels live: ``$CLASSBENCH_CACHE/kernels`` or ``~/.cache/classbench/kernels``."""
    from classbench.data.dataset import default_cache_dir

    return default_cache_dir() / "kernels"


def _cpu_signature() -> str:
    """The CPU's feature flags, so a cache shared between machines never loads a binary built for another CPU."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(target: Path, compiler: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        command = [*shlex.split(compiler), *FLAGS, str(SOURCE), "-o", str(out)]  # CC may be "ccache gcc"
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        os.replace(out, target)  # atomic: processes building at once (DDP) each rename a complete file


def load() -> ctypes.CDLL | None:
    """The built kernel library, building it on first use; None when it can't (``_unavailable`` says why)."""
    global _library, _unavailable
    if _library is not None or _unavailable is not None:
        return _library
    _unavailable = _check_platform()
    if _unavailable is not None:
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        _unavailable = "no C compiler found (install gcc, or set CC)"
        return None
    key = hashlib.sha256("\n".join([SOURCE.read_text(), *FLAGS, _cpu_signature()]).encode()).hexdigest()
    target = cache_dir() / f"fused_norm-{key[:16]}.so"
    try:
        if not target.exists():
            _build(target, compiler)
        _library = _bind(ctypes.CDLL(str(target)))
    except (OSError, subprocess.SubprocessError) as err:
        detail = " ".join((getattr(err, "stderr", b"") or b"").decode(errors="replace").split())[:200] or str(err)
        _unavailable = f"could not build {SOURCE.name} with {compiler}: {detail}"
    return _library


def _check_platform() -> str | None:
    if os.environ.get("CLASSBENCH_FUSED_NORM", "on").lower() in ("off", "0", "false"):
        return "turned off by CLASSBENCH_FUSED_NORM"
    if sys.platform != "linux":
        return "built only on Linux"
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return "this PyTorch build does not use OpenMP threads"
    return None


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.bn_stats.argtypes = [ptr, i64, i64, ptr, ptr]
    lib.bn_stats.restype = i32
    lib.bn_act_forward.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i32]
    lib.bn_act_forward.restype = None
    lib.bn_act_backward_sums.argtypes = [ptr, ptr, ptr, ptr, ptr, i64, i64, i32, ptr, ptr]
    lib.bn_act_backward_sums.restype = i32
    lib.bn_act_backward.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i32]
    lib.bn_act_backward.restype = None
    return lib


def _rows(x: torch.Tensor) -> tuple[int, int]:
    return x.numel() // x.shape[1], x.shape[1]


class _BatchNormAct(torch.autograd.Function):
    """y = act(batch_norm(x)) with batch statistics; returns (y, mean, biased var) for the running stats."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, act: int):  # type: ignore[override]
        lib = load()
        assert lib is not None
        rows, channels = _rows(x)
        mean, var = torch.empty(channels, dtype=torch.float64), torch.empty(channels, dtype=torch.float64)
        if lib.bn_stats(x.data_ptr(), rows, channels, mean.data_ptr(), var.data_ptr()):
            raise MemoryError("fused BatchNorm: out of memory")
        invstd = (var + eps).rsqrt().float()
        mean32 = mean.float()
        scale = (weight.detach().float() * invstd).contiguous()
        shift = (bias.detach().float() - mean32 * scale).contiguous()
        y = torch.empty_like(x, memory_format=torch.channels_last)
        lib.bn_act_forward(x.data_ptr(), scale.data_ptr(), shift.data_ptr(), y.data_ptr(), rows, channels, act)
        ctx.save_for_backward(x, weight, mean32, invstd, scale, shift)
        ctx.act = act
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy: torch.Tensor, _mean: torch.Tensor, _var: torch.Tensor):  # type: ignore[override]
        lib = load()
        assert lib is not None
        x, weight, mean, invstd, scale, shift = ctx.saved_tensors
        rows, channels = _rows(x)
        dy = dy.to(x.dtype).contiguous(memory_format=torch.channels_last)
        sum_g, sum_gx = torch.empty(channels, dtype=torch.float64), torch.empty(channels, dtype=torch.float64)
        if lib.bn_act_backward_sums(dy.data_ptr(), x.data_ptr(), mean.data_ptr(), scale.data_ptr(), shift.data_ptr(),
                                    rows, channels, ctx.act, sum_g.data_ptr(), sum_gx.data_ptr()):
            raise MemoryError("fused BatchNorm: out of memory")
        sum_g, sum_gx = sum_g.float(), sum_gx.float()
        # dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat)) = a * g + b * x + d, with a = w * invstd = scale
        a = scale
        b = (-a * invstd * invstd * sum_gx / rows).contiguous()
        d = (-a * sum_g / rows - b * mean).contiguous()
        dx = torch.empty_like(x, memory_format=torch.channels_last)
        lib.bn_act_backward(dy.data_ptr(), x.data_ptr(), scale.data_ptr(), shift.data_ptr(), a.data_ptr(), b.data_ptr(),
                            d.data_ptr(), dx.data_ptr(), rows, channels, ctx.act)
        dweight = (sum_gx * invstd).to(weight.dtype) if ctx.needs_input_grad[1] else None
        dbias = sum_g.to(weight.dtype) if ctx.needs_input_grad[2] else None
        return dx, dweight, dbias, None, None


class FusedBatchNormAct2d(nn.BatchNorm2d):
    """``BatchNorm2d`` followed by ``act`` (ReLU, ReLU6 or Identity); same parameters, buffers and state-dict keys
    as the module it replaces. Takes the fused kernels only when they apply, else PyTorch's own."""

    act: nn.Module
    drop: nn.Module

    def fused_applies(self, x: torch.Tensor) -> bool:
        return (self.training and self.affine and self.track_running_stats and self.running_mean is not None
                and x.dtype == torch.bfloat16 and x.device.type == "cpu" and x.dim() == 4
                and x.is_contiguous(memory_format=torch.channels_last) and x.numel() > x.shape[1]
                and not torch.jit.is_scripting() and not torch.compiler.is_compiling())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fused_applies(x):
            return self.act(self.drop(super().forward(x)))
        assert self.num_batches_tracked is not None and self.running_var is not None
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        y, mean, var = _BatchNormAct.apply(x, self.weight, self.bias, self.eps, ACTIVATIONS[type(self.act)])
        rows = x.numel() // x.shape[1]
        with torch.no_grad():
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
            self.running_var.lerp_((var * (rows / (rows - 1))).to(self.running_var.dtype), factor)
        return y


def _fusable(module: nn.Module) -> bool:
    from timm.layers import BatchNormAct2d

    return (type(module) is BatchNormAct2d and type(getattr(module, "act", None)) in ACTIVATIONS
            and type(getattr(module, "drop", None)) is nn.Identity)


def fuse_norm_act(model: nn.Module) -> int | str:
    """Swap timm's ``BatchNormAct2d`` (ReLU, ReLU6 or no activation) for :class:`FusedBatchNormAct2d`, sharing its
    parameters and buffers; returns how many, or why none could be (no compiler, ...)."""
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if _fusable(child)]
    if not targets:
        return 0
    if load() is None:
        return f"unavailable: {_unavailable}"
    for parent, name, child in targets:
        fused = FusedBatchNormAct2d(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats, device="meta")
        for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            setattr(fused, key, getattr(child, key))
        fused.act, fused.drop = child.act, child.drop
        fused.train(child.training)
        setattr(parent, name, fused)
    return len(targets)
