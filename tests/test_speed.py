"""CPU speed levers: out-of-place activations change no value or gradient; the fused AdamW still clips."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import yaml

import classbench
from classbench.models import load_model
from classbench.speed import cpu_levers, out_of_place_activations
from tests.synth import make_class_folders


def test_out_of_place_activations_compute_the_same_values_and_gradients() -> None:
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_035", num_classes=3).to(memory_format=torch.channels_last)
    reference = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    assert out_of_place_activations(model) == 35  # every ReLU6 of mobilenetv2
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    assert out_of_place_activations(model) == 0  # idempotent
    for net in (model, reference):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(x).float().sum().backward()
    grads = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, grads[name].grad), name


def test_levers_follow_the_device_and_touch_nothing_else() -> None:
    net = timm.create_model("test_efficientnet", num_classes=3)
    assert cpu_levers(net, on_gpu=True) == {}
    assert sum(getattr(m, "inplace", False) is True for m in net.modules()) == 11  # a GPU keeps them in place
    types = [type(m) for m in net.modules()]
    assert cpu_levers(net, on_gpu=False) == {"out_of_place_activations": 11}
    assert [type(m) for m in net.modules()] == types  # no module swapped, no kernel of our own


def test_bf16_training_run_records_levers_and_saves_a_plain_model(tmp_path) -> None:
    data = make_class_folders(tmp_path / "data", {"a": 12, "b": 12})
    run = classbench.train(data, model="test_efficientnet", out=tmp_path / "run", epochs=1, img_size=32,
                           batch_size=8, precision="bf16-mixed", accelerator="cpu", progress=False)
    levers = yaml.safe_load((run.path / "config.yaml").read_text())["resolved"]["cpu_levers"]
    assert levers == {"out_of_place_activations": 11}
    model, meta = load_model(run.path)
    assert meta["classes"] == ["a", "b"]
    assert {type(m) for m in model.modules()} <= {type(m) for m in timm.create_model("test_efficientnet").modules()}


def test_fused_adamw_where_supported_and_clipping_still_applies() -> None:
    from classbench.speed import adamw
    from classbench.training.module import ClassifierModule

    net = timm.create_model("test_efficientnet", num_classes=3)
    module = ClassifierModule(net, 3, (0.5,) * 3, (0.5,) * 3, lr=1e-3, backbone_lr=1e-3)
    optimizer = adamw(module.parameters(), lr=1e-3)
    assert optimizer.defaults["fused"] is True  # torch >= 2.4 has the fused kernel on CPU
    assert not adamw(module.parameters(), fused=False).defaults.get("fused")
    for p in module.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.configure_gradient_clipping(optimizer, 1.0, "norm")  # Lightning's plugin would refuse a fused optimiser
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in module.parameters()]))
    assert norm == pytest.approx(1.0, rel=1e-3)
    for p in module.parameters():
        p.grad.fill_(3.0)
    module.configure_gradient_clipping(optimizer, 0.01, "value")
    assert max(float(p.grad.abs().max()) for p in module.parameters()) == pytest.approx(0.01)
    before = [p.detach().clone() for p in module.parameters()]
    optimizer.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, module.parameters()))
