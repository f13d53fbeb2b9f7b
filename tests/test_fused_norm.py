"""The fused BatchNorm + activation kernels: built for real with the system's C compiler, checked against float64."""

from __future__ import annotations

import copy
import shutil

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import nn

import classbench.fused_norm as fused_norm
from classbench.fused_norm import FusedBatchNormAct2d, fuse_norm_act

needs_compiler = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                    reason="no C compiler on this machine")


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """A cold kernel cache in tmp_path and no library loaded yet in this process."""
    monkeypatch.setenv("CLASSBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLASSBENCH_FUSED_NORM", raising=False)
    monkeypatch.setattr(fused_norm, "_library", None)
    monkeypatch.setattr(fused_norm, "_unavailable", None)
    return tmp_path / "cache" / "kernels"


def _norm_act(channels: int, act: type[nn.Module], momentum: float | None = 0.1) -> BatchNormAct2d:
    torch.manual_seed(channels)
    module = BatchNormAct2d(channels, momentum=momentum, act_layer=act, apply_act=act is not nn.Identity)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
    return module


def _float64_reference(x, module, gy):
    """Forward and gradients of batch_norm + act in float64 (the truth both implementations approximate)."""
    x64 = x.double().requires_grad_()
    w64 = module.weight.detach().double().requires_grad_()
    b64 = module.bias.detach().double().requires_grad_()
    rm, rv = module.running_mean.double().clone(), module.running_var.double().clone()
    y = F.batch_norm(x64, rm, rv, w64, b64, True, 0.1, module.eps)
    y = {nn.ReLU: F.relu, nn.ReLU6: F.relu6}.get(type(module.act), lambda t: t)(y)
    y.backward(gy.double())
    return y, x64.grad, w64.grad, b64.grad, rm, rv


def _run(module, x, gy):
    xx = x.detach().requires_grad_()
    y = module(xx)
    y.backward(gy)
    return y, xx.grad, module.weight.grad, module.bias.grad, module.running_mean, module.running_var


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@needs_compiler
@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6, nn.Identity])
def test_fused_kernels_match_float64_and_pytorch(fresh_build, act) -> None:
    plain = _norm_act(40, act)
    holder = nn.Sequential(copy.deepcopy(plain))
    assert fuse_norm_act(holder) == 1 and isinstance(holder[0], FusedBatchNormAct2d)
    fused = holder[0]
    assert list(fresh_build.glob("fused_norm-*.so")), "the kernel was built into the cache"
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 40, 11, 13, generator=gen) * 3 + 1.5).bfloat16().contiguous(memory_format=torch.channels_last)
    gy = torch.randn(x.shape, generator=gen).bfloat16().contiguous(memory_format=torch.channels_last)
    truth = _float64_reference(x, plain, gy)
    ours, theirs = _run(fused, x, gy), _run(plain, x, gy)
    assert ours[0].dtype == torch.bfloat16 and ours[0].is_contiguous(memory_format=torch.channels_last)
    assert ours[1].dtype == torch.bfloat16 and ours[1].is_contiguous(memory_format=torch.channels_last)
    for name, mine, pytorch, exact in zip(("y", "dx", "dweight", "dbias", "running_mean", "running_var"),
                                          ours, theirs, truth):
        tolerance = 8e-3 if name in ("y", "dx") else 1e-5  # bf16 outputs; float statistics and parameter grads
        assert _rel_err(mine, exact) < tolerance, name
        assert _rel_err(mine, exact) <= _rel_err(pytorch, exact) * 1.5 + 1e-6, name  # never clearly worse
    assert fused.num_batches_tracked.item() == plain.num_batches_tracked.item() == 1


@needs_compiler
def test_cumulative_average_momentum_none(fresh_build) -> None:
    plain = _norm_act(16, nn.ReLU, momentum=None)
    holder = nn.Sequential(copy.deepcopy(plain))
    fuse_norm_act(holder)
    for seed in range(3):
        x = torch.randn(4, 16, 5, 5, generator=torch.Generator().manual_seed(seed)).bfloat16()
        x = x.contiguous(memory_format=torch.channels_last)
        holder(x), plain(x)
    assert holder[0].num_batches_tracked.item() == 3
    assert torch.allclose(holder[0].running_mean, plain.running_mean, atol=1e-4)
    assert torch.allclose(holder[0].running_var, plain.running_var, rtol=1e-3)


@needs_compiler
def test_eval_fp32_and_nchw_inputs_take_pytorchs_kernels_unchanged(fresh_build) -> None:
    plain = _norm_act(8, nn.ReLU6)
    holder = nn.Sequential(copy.deepcopy(plain))
    fuse_norm_act(holder)
    fused = holder[0]
    x = torch.randn(2, 8, 6, 6) * 4
    for module in (plain, fused):
        module.eval()
    assert torch.equal(fused(x), plain(x))  # eval, fp32
    for module in (plain, fused):
        module.train()
    assert torch.equal(fused(x), plain(x))  # training, fp32
    assert torch.equal(fused(x.bfloat16()), plain(x.bfloat16()))  # training, bf16 but not channels-last


@needs_compiler
def test_swapped_model_keeps_its_state_dict_and_learns(fresh_build) -> None:
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_035", num_classes=3).to(memory_format=torch.channels_last)
    reference = timm.create_model("mobilenetv2_035", num_classes=3)
    keys = list(model.state_dict())
    assert fuse_norm_act(model) == 52
    assert list(model.state_dict()) == keys
    assert all(type(m) is not BatchNormAct2d for m in model.modules())
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]  # they learn only through the norms' dx
    optimiser = torch.optim.AdamW(convs, lr=1e-2)
    losses = []
    for _ in range(25):  # memorise one batch
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), labels)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses
    assert sum(isinstance(m, FusedBatchNormAct2d) for m in model.modules()) == 52
    reference.load_state_dict(model.state_dict())  # what a run saves loads into the plain timm model
    assert any(not torch.equal(b, torch.ones_like(b)) for n, b in reference.named_buffers() if n.endswith("running_var"))


def test_turned_off_by_environment_swaps_nothing(fresh_build, monkeypatch) -> None:
    monkeypatch.setenv("CLASSBENCH_FUSED_NORM", "off")
    model = timm.create_model("test_byobnet", num_classes=3)
    assert fuse_norm_act(model) == "unavailable: turned off by CLASSBENCH_FUSED_NORM"
    assert not any(isinstance(m, FusedBatchNormAct2d) for m in model.modules())
    assert not fresh_build.exists()


def test_a_compiler_that_fails_leaves_the_model_alone(fresh_build, monkeypatch, tmp_path) -> None:
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: fatal error: no input files' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    model = timm.create_model("test_byobnet", num_classes=3)
    result = fuse_norm_act(model)
    assert isinstance(result, str) and "could not build fused_norm.c" in result and "no input files" in result
    assert not any(isinstance(m, FusedBatchNormAct2d) for m in model.modules())
    assert not list(fresh_build.glob("*.so")) and not list(fresh_build.glob("tmp*"))  # no half-written library


@needs_compiler
def test_the_cache_is_reused_across_processes(fresh_build, monkeypatch) -> None:
    assert fused_norm.load() is not None
    (built,) = fresh_build.glob("fused_norm-*.so")
    stamp = built.stat().st_mtime_ns
    monkeypatch.setattr(fused_norm, "_library", None)  # as a new process would start
    monkeypatch.setattr(fused_norm, "_unavailable", None)
    monkeypatch.setenv("CC", "/nonexistent/cc")  # would fail if it tried to build again
    assert fused_norm.load() is not None
    assert built.stat().st_mtime_ns == stamp
