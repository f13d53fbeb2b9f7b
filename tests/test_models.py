"""Model factory: names, sizes, safe weight loading, save/load round trip, hub-download failures."""

from __future__ import annotations

import json
from unittest import mock

import pytest
import torch

from classbench import models
from classbench.errors import ModelError


def test_aliases_resolve_to_timm_names() -> None:
    assert models.resolve_name("mobilenetv2") == "mobilenetv2_100"
    assert models.resolve_name("InceptionV3") == "inception_v3"
    assert models.resolve_name("densenet121") == "densenet121"
    assert models.resolve_name("resnet50") == "resnet50"


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ModelError, match="did you mean.*resnet50"):
        models.resolve_name("resnet5O")


def test_default_config_comes_from_the_model() -> None:
    assert models.default_config("inception_v3")["img_size"] == 299
    assert models.default_config("resnet18")["img_size"] == 224


def test_input_size_too_small_is_refused_with_the_minimum() -> None:
    assert models.min_input_size("inception_v3") == 75
    with pytest.raises(ModelError, match="--img-size >= 75"):
        models.check_input_size("inception_v3", 64)
    models.check_input_size("inception_v3", 75)
    # the measured minimum really works and one below really fails
    net = models.create_model("inception_v3", 2).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 75, 75)).shape == (1, 2)
        with pytest.raises(RuntimeError):
            net(torch.zeros(1, 3, 74, 74))


def test_save_and_load_round_trip(tmp_path) -> None:
    net = models.create_model("test_efficientnet", 3)
    meta = {"architecture": "test_efficientnet", "classes": ["a", "b", "c"], "img_size": 32,
            "mean": [0.5] * 3, "std": [0.5] * 3, "temperature": 1.0}
    models.save_model(net, meta, tmp_path)
    loaded, read = models.load_model(tmp_path / "model.safetensors")
    assert read["classes"] == ["a", "b", "c"] and read["format"] == models.MODEL_FORMAT
    for (k, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("*.tmp"))


def test_weights_file_loads_backbone_and_keeps_a_new_head(tmp_path) -> None:
    source = models.create_model("resnet18", 5)
    models.save_model(source, {"architecture": "resnet18", "classes": list("abcde"), "img_size": 32,
                               "mean": [0.5] * 3, "std": [0.5] * 3}, tmp_path)
    target = models.create_model("resnet18", 3, weights=tmp_path / "model.safetensors")
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert target.fc.weight.shape == (3, 512)


def test_wrong_architecture_weights_are_refused(tmp_path) -> None:
    models.save_model(models.create_model("test_efficientnet", 2), {"architecture": "test_efficientnet",
                      "classes": ["a", "b"], "img_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}, tmp_path)
    with pytest.raises(ModelError, match="backbone tensors match"):
        models.create_model("resnet18", 2, weights=tmp_path)


def test_pickle_weights_are_never_unpickled(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle

    bad = tmp_path / "weights.pth"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError, match="pickle-based weights are never loaded"):
        models.read_state_dict(bad)
    # a pickle disguised as safetensors is not readable either
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError, match="not a readable safetensors"):
        models.read_state_dict(disguised)
    assert not marker.exists()


def test_damaged_model_json_gives_a_clear_error(tmp_path) -> None:
    models.save_model(models.create_model("test_efficientnet", 2), {"architecture": "test_efficientnet",
                      "classes": ["a", "b"], "img_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}, tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="damaged model.json"):
        models.load_model(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelError, match="not a classbench-model"):
        models.load_model(tmp_path)


def test_pretrained_download_failure_says_how_to_use_weights() -> None:
    """Only the download is mocked: timm's real create_model path runs up to the hub fetch."""
    with mock.patch("timm.models._builder.load_pretrained", side_effect=OSError("no network")):
        with pytest.raises(ModelError, match="--weights FILE"):
            models.create_model("resnet18", 3, pretrained=True)


def test_pretrained_download_success_path_uses_timm_hub(tmp_path) -> None:
    """With the hub download mocked to succeed, pretrained=True builds the model with a fresh head."""
    calls = []

    def fake_load_pretrained(model, *args, **kwargs):
        calls.append(kwargs.get("num_classes"))

    with mock.patch("timm.models._builder.load_pretrained", side_effect=fake_load_pretrained):
        net = models.create_model("resnet18", 4, pretrained=True)
    assert calls and net.fc.out_features == 4
