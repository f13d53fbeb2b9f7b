"""Heatmaps (classbench.explain): the map's contract, the automatic layer for CNNs and ViTs, one-line errors, the
``classbench explain`` command, and a sanity check that can fail: a model trained to find a bright square in one
corner looks at that corner.

The trained model is a ``test_efficientnet`` fitted in a few seconds (30 Adam steps, seeded) at 96 px, where its
last feature map is 3 x 3: class ``corner`` has a bright square in the top-right corner, class ``plain`` does not.
Top-right against bottom-left also catches a transposed or flipped map.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from classbench.cli import app
from classbench.data.manifest import Manifest, Sample
from classbench.data.transforms import normalize
from classbench.errors import ClassbenchError
from classbench.explain import INSTALL, cam_library, explain_images, find_layer
from classbench.models import create_model, save_model
from classbench.predict import Classifier, load

SIZE, MEAN, STD = 96, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
CLASSES = ["corner", "plain"]
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def square_images(n: int, corner: bool, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """``n`` noise images (HWC uint8); with ``corner`` a bright square in the top-right corner."""
    x = rng.normal(110, 30, (n, size, size, 3))
    if corner:
        x[:, size // 24: size // 24 + size // 4, -(size // 24 + size // 4): -(size // 24)] = 245
    return np.clip(x, 0, 255).astype(np.uint8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def corner_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/run`` (the trained corner model) and ``root/images/<class>/*.png`` (4 unseen images per class)."""
    root = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = create_model("test_efficientnet", len(CLASSES)).train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(30):
        batch = np.concatenate([square_images(8, True, rng), square_images(8, False, rng)])
        x = normalize(torch.from_numpy(batch).permute(0, 3, 1, 2), MEAN, STD)
        loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0] * 8 + [1] * 8))
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_model(model.eval(), {"architecture": "test_efficientnet", "classes": CLASSES, "img_size": SIZE,
                              "mean": MEAN, "std": STD, "temperature": 1.0}, root / "run")
    for name, corner in (("corner", True), ("plain", False)):
        (root / "images" / name).mkdir(parents=True)
        for i, img in enumerate(square_images(4, corner, rng)):
            Image.fromarray(img).save(root / "images" / name / f"{name}_{i}.png")
    return root


def test_map_is_the_model_input_size_finite_and_in_0_1(corner_run: Path) -> None:
    clf = load(corner_run / "run", backend="torch")
    path = corner_run / "images" / "corner" / "corner_0.png"
    for image in (path, str(path), Image.open(path).convert("L")):  # a path, a string, a grey PIL image
        heat = clf.explain(image)
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
        assert heat.max() > 0.5  # min-max scaled: the strongest evidence is 1
    for method in ("layercam", "gradcam++", "eigencam"):
        heat = clf.explain(path, method=method, target="plain")
        assert heat.shape == (SIZE, SIZE) and 0.0 <= heat.min() <= heat.max() <= 1.0


def test_trained_model_looks_at_the_corner_that_decides_the_class(corner_run: Path) -> None:
    clf = load(corner_run / "run", backend="torch")
    paths = sorted((corner_run / "images" / "corner").glob("*.png"))
    assert [clf.predict(p)[0][0] for p in paths] == ["corner"] * 4  # the task was learnt
    half = SIZE // 2
    for path in paths:
        heat = clf.explain(path, target="corner")
        top_right, bottom_left = heat[:half, half:].sum(), heat[half:, :half].sum()
        assert top_right > 3 * bottom_left, (top_right, bottom_left)
        assert not np.allclose(heat, clf.explain(path, target="plain"), atol=0.05)  # another class, another map


def test_explanations_carry_the_prediction_and_the_class_explained(corner_run: Path) -> None:
    clf = load(corner_run / "run", backend="torch")
    paths = sorted((corner_run / "images").rglob("*.png"))
    exps = explain_images(clf, paths, target=None, batch_size=3)
    assert [Path(e.path).parent.name for e in exps] == [p.parent.name for p in paths]
    assert all(e.target == e.predicted and e.layer == "bn2" and e.method == "gradcam" for e in exps)
    assert all(0.5 <= e.probability <= 1.0 for e in exps)
    forced = explain_images(clf, paths[:2], target=1)
    assert [e.target for e in forced] == ["plain", "plain"]
    with pytest.raises(ClassbenchError, match=r"--class 'boat'.*corner, plain"):
        explain_images(clf, paths[:1], target="boat")
    with pytest.raises(ClassbenchError, match=r"--method 'nope'.*gradcam"):
        explain_images(clf, paths[:1], method="nope")


@pytest.mark.parametrize(("arch", "size", "expected"), [("resnet18", 64, "layer4"), ("test_efficientnet", 64, "bn2"),
                                                        ("test_convnext", 64, "stages")])
def test_auto_layer_of_a_cnn_is_the_last_one_before_pooling(arch: str, size: int, expected: str) -> None:
    model = create_model(arch, 3).eval()
    layer = find_layer(model, size)
    assert layer.name == expected and layer.reshape is None
    assert layer.module is dict(model.named_modules())[expected]


def test_auto_layer_of_a_vit_is_the_last_norm1_with_its_tokens_on_the_patch_grid(tmp_path: Path) -> None:
    model = create_model("test_vit", 3).eval()
    layer = find_layer(model, 160)
    assert layer.name == f"blocks.{len(model.blocks) - 1}.norm1"
    tokens = torch.randn(2, model.num_prefix_tokens + 100, 7)
    grid = layer.reshape(tokens)
    assert grid.shape == (2, 7, 10, 10)  # the class token dropped, 100 patches on the 10 x 10 grid
    assert torch.equal(grid[:, :, 0, 1], tokens[:, model.num_prefix_tokens + 1, :])  # row-major patch order
    save_model(model, {"architecture": "test_vit", "classes": ["a", "b", "c"], "img_size": 160, "mean": MEAN,
                       "std": STD}, tmp_path / "vit")
    img = Image.fromarray(square_images(1, True, np.random.default_rng(1), 160)[0])
    heat = load(tmp_path / "vit", backend="torch").explain(img)
    assert heat.shape == (160, 160) and np.isfinite(heat).all() and 0.0 <= heat.min() <= heat.max() <= 1.0


def test_unknown_layer_and_failed_search_name_layer_and_candidates() -> None:
    model = create_model("test_efficientnet", 3).eval()
    with pytest.raises(ClassbenchError) as err:
        find_layer(model, 64, "blocks.99", "test_efficientnet")
    text = str(err.value)
    assert "\n" not in text and "--layer 'blocks.99'" in text and "bn2" in text and "conv_head" in text
    with pytest.raises(ClassbenchError, match=r"--layer 'global_pool'"):  # after the pooling: no map there
        find_layer(model, 64, "global_pool")
    assert find_layer(model, 64, "blocks.3").name == "blocks.3"  # an earlier, finer map on request
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ClassbenchError, match=r"cannot pick the layer.*pass --layer NAME"):
        find_layer(flat, 8, None, "mlp")


def test_cli_writes_an_overlay_png_per_image_of_a_folder(corner_run: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = invoke("explain", corner_run / "run", corner_run / "images", tmp_path / "bad.png", "--out",
                    tmp_path / "maps", "--method", "layercam", "--batch-size", "3")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == sorted(f"{c}_{i}.layercam.png" for c in CLASSES for i in range(4))
    with Image.open(tmp_path / "maps" / "corner_0.layercam.png") as im:
        assert im.format == "PNG" and im.width > 2 * 200 and im.height > 224
    assert "bad.png" in result.output and "Wrote 8 heatmap overlay(s)" in result.output
    assert "corner (" in result.output and "layer bn2" in result.output
    forced = invoke("explain", corner_run / "run", corner_run / "images" / "plain", "--class", "corner")
    assert forced.exit_code == 0, forced.output
    assert len(list((corner_run / "run" / "explain").glob("*.gradcam.png"))) == 4  # default: RUN/explain


def test_cli_errors_are_one_line(corner_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    image = corner_run / "images" / "corner" / "corner_0.png"
    for args, needle in (((image, "--layer", "nope"), "--layer 'nope'"), ((image, "--class", "boat"), "--class"),
                         ((tmp_path / "missing.png",), "missing.png")):
        result = invoke("explain", corner_run / "run", *args, "--out", tmp_path / "o")
        assert result.exit_code == 2 and needle in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # grad-cam not installed
    with pytest.raises(ClassbenchError, match="grad-cam"):
        cam_library()
    result = invoke("explain", corner_run / "run", image)
    assert result.exit_code == 2 and INSTALL in result.output and len(result.output.strip().splitlines()) == 1


def test_true_class_comes_from_the_runs_split(corner_run: Path, tmp_path: Path) -> None:
    from classbench.explain import _true_labels

    img = tmp_path / "elsewhere" / "x.png"
    img.parent.mkdir()
    Image.fromarray(square_images(1, True, np.random.default_rng(2))[0]).save(img)
    run = tmp_path / "run"
    save_model(create_model("test_efficientnet", 2), {"architecture": "test_efficientnet", "classes": CLASSES,
                                                      "img_size": 32, "mean": MEAN, "std": STD}, run)
    assert _true_labels(run, [str(img)], CLASSES) == [None]
    Manifest([Sample(img, "plain", "test")], CLASSES).save(run / "split.csv")
    folder_named = corner_run / "images" / "corner" / "corner_1.png"
    assert _true_labels(run, [str(img), str(folder_named)], CLASSES) == ["plain", "corner"]


def test_onnx_classifier_cannot_be_explained(corner_run: Path) -> None:
    meta = {"classes": CLASSES, "img_size": SIZE, "mean": MEAN, "std": STD}
    clf = Classifier(meta, "onnx", lambda batch: np.zeros((len(batch), 2)), corner_run)
    with pytest.raises(ClassbenchError, match=r"PyTorch model.*backend='torch'"):
        clf.explain(corner_run / "images" / "corner" / "corner_0.png")


@pytest.mark.parametrize(("arch", "size"), [("test_efficientnet", 64), ("test_vit", 160)])
def test_maps_equal_grad_cams_own_full_backward(arch: str, size: int) -> None:
    """``cam_maps`` starts the graph at the layer (the backward pass stops there): the maps must not change."""
    from pytorch_grad_cam import GradCAM, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from classbench.explain import cam_maps

    torch.manual_seed(0)
    model = create_model(arch, 3).eval()
    with torch.no_grad():
        model.get_classifier().weight.normal_(0, 1.0)  # an untrained head of 0.01 gives near-zero gradients
    layer = find_layer(model, size)
    x = torch.randn(3, 3, size, size)
    for name, cls in (("gradcam", GradCAM), ("layercam", LayerCAM)):
        ours, logits = cam_maps(model, layer, name, x, [0, 1, 2])
        reference = cls(model=model, target_layers=[layer.module], reshape_transform=layer.reshape)
        theirs = reference(input_tensor=x, targets=[ClassifierOutputTarget(i) for i in range(3)])
        reference.activations_and_grads.release()
        assert ours.max() > 0.5 and ours.std() > 0.05  # not a trivial (all-zero) map
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
        assert logits.shape == (3, 3)
    assert all(p.requires_grad for p in model.parameters())  # restored
