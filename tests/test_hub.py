"""Hub model folders: timm loads an exported run through its own hf-hub path (only the download mocked) and
predicts like the run; the card escapes the data's names; push is tested with the upload mocked (no network),
resolve with snapshot_download mocked, and --weights hf-hub:ORG/NAME starts a training from those weights."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from typer.testing import CliRunner

import classbench
from classbench import hub
from classbench.cli import app
from classbench.errors import ClassbenchError, ModelError
from classbench.models import read_state_dict
from tests.synth import make_class_folders

huggingface_hub = pytest.importorskip("huggingface_hub")
timm = pytest.importorskip("timm")
CLASSES = {"boat|<b>": 14, "car_*x*": 14}  # Markdown and HTML syntax in class names: the card must escape them
OPTS = {"model": "test_efficientnet", "img_size": 32, "progress": False, "augment": "none", "seed": 0}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hub")
    data = make_class_folders(root / "data", CLASSES)
    result = classbench.train(data, out=root / "run", epochs=2, **OPTS)
    classbench.evaluate(result.path, progress=False)
    return data, result.path


@pytest.fixture(scope="module")
def folder(run, tmp_path_factory) -> Path:
    return hub.export_hf(run[1], tmp_path_factory.mktemp("export") / "hf", repo_id="someone/boats")


def hub_download(folder: Path):
    """huggingface_hub.hf_hub_download answering from ``folder`` (as the Hub would for that repository)."""
    def download(repo_id: str, filename: str, **kwargs):
        path = folder / filename
        if not path.is_file():
            raise huggingface_hub.utils.EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(path)
    return download


def test_export_writes_timm_config_weights_classbench_meta_and_card(run, folder) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "test_efficientnet" and config["num_classes"] == 2
    assert config["label_names"] == sorted(CLASSES)
    meta = json.loads((run[1] / "model.json").read_text())
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 32, 32] and cfg["mean"] == meta["mean"] and cfg["std"] == meta["std"]
    assert cfg["crop_pct"] == 1.0 and "hf_hub_id" not in cfg and "url" not in cfg
    assert json.loads((folder / "model.json").read_text())["classes"] == meta["classes"]
    weights = read_state_dict(folder / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in read_state_dict(run[1]).items())


def test_model_card_has_the_eval_table_with_escaped_names(run, folder) -> None:
    card = (folder / "README.md").read_text()
    evaluation = json.loads((run[1] / "eval.json").read_text())
    assert card.startswith("---\nlibrary_name: timm\n") and "pipeline_tag: image-classification" in card
    assert f"| macro-F1 | {evaluation['metrics']['macro_f1']:.3f} |" in card
    assert "| boat\\|&lt;b&gt; |" in card and "| car\\_\\*x\\* |" in card
    assert "<b>" not in card and 'timm.create_model("hf-hub:someone/boats", pretrained=True)' in card
    assert "No evaluation" in hub.model_card(json.loads((folder / "model.json").read_text()), None)


def test_timm_loads_the_folder_through_hf_hub_and_predicts_like_the_run(run, folder) -> None:
    import timm.data
    import timm.models._hub as timm_hub
    from PIL import Image

    data, run_dir = run
    with mock.patch.object(timm_hub, "hf_hub_download", hub_download(folder)):
        model = timm.create_model("hf-hub:someone/boats", pretrained=True).eval()
    assert model.pretrained_cfg["label_names"] == sorted(CLASSES)
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))  # timm's own eval transform
    images = sorted(data.rglob("*.png"))[::3]
    with torch.no_grad():
        logits = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in images]))
    clf = classbench.load(run_dir, backend="torch")
    expected = clf.logits(clf.normalise(torch.stack([clf.preprocess(p) for p in images])))
    assert torch.allclose(logits, torch.as_tensor(expected), atol=1e-4)
    top1 = [model.pretrained_cfg["label_names"][i] for i in logits.argmax(1).tolist()]
    assert top1 == [clf.predict(p)[0][0] for p in images]
    if "local-dir" in getattr(timm.models._factory, "_MODEL_SOURCES", ()):  # timm >= 1.0.16: the folder itself
        local = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        assert torch.equal(local.state_dict()["classifier.weight"], model.state_dict()["classifier.weight"])


def test_the_folder_is_a_classbench_model_too(run, folder) -> None:
    image = next(run[0].rglob("*.png"))
    assert classbench.load(folder, backend="torch").predict(image) == classbench.load(run[1], backend="torch").predict(image)


def http_error(message: str) -> Exception:
    """huggingface_hub's HTTP error as a refused upload raises it (its constructor differs across releases)."""
    from huggingface_hub.utils import HfHubHTTPError

    try:
        return HfHubHTTPError(message, response=mock.Mock(status_code=403, headers={}))
    except TypeError:  # huggingface_hub < 1.0 reads the response of requests
        return HfHubHTTPError(message, response=None)


class FakeApi:
    """huggingface_hub.HfApi with create_repo/upload_folder recorded instead of sent."""

    calls: list[tuple[str, dict]] = []
    fail: Exception | None = None

    def __init__(self, token: str | None = None) -> None:
        self.token = token

    def create_repo(self, **kwargs):
        FakeApi.calls.append(("create_repo", {**kwargs, "token": self.token}))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        if FakeApi.fail is not None:
            raise FakeApi.fail
        FakeApi.calls.append(("upload_folder", {**kwargs, "files": sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())}))


@pytest.fixture
def fake_api(monkeypatch):
    FakeApi.calls, FakeApi.fail = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    return FakeApi


def test_push_exports_then_creates_and_uploads(run, fake_api, tmp_path) -> None:
    result = CliRunner().invoke(app, ["push", str(run[1]), "someone/boats", "--private", "--token", "t0k",
                                      "--out", str(tmp_path / "hf")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "https://huggingface.co/someone/boats" in result.output
    (create, repo), (upload, sent) = fake_api.calls
    assert create == "create_repo" and repo["repo_id"] == "someone/boats" and repo["private"] and repo["token"] == "t0k"
    assert upload == "upload_folder" and sent["folder_path"] == str(tmp_path / "hf") and sent["repo_id"] == "someone/boats"
    assert {"config.json", "model.safetensors", "model.json", "README.md"} <= set(sent["files"])


def test_push_without_credentials_or_write_access_is_one_line_and_keeps_the_export(run, fake_api, tmp_path) -> None:
    result = CliRunner().invoke(app, ["push", str(run[1]), "someone/boats", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "no Hugging Face token" in result.output and (tmp_path / "a" / "model.safetensors").is_file()
    assert not fake_api.calls
    fake_api.fail = http_error("403 Forbidden: you cannot write to someone/boats")
    with pytest.raises(ClassbenchError, match=r"push to someone/boats failed \(HfHubHTTPError: 403 Forbidden.*kept in"):
        hub.push(run[1], "someone/boats", token="t0k", out_dir=tmp_path / "b")
    assert (tmp_path / "b" / "config.json").is_file()


def test_resolve_fetches_only_safe_files_and_reports_failures(folder, monkeypatch) -> None:
    seen = {}

    def snapshot(**kwargs):
        seen.update(kwargs)
        return str(folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert hub.resolve("hf-hub:someone/boats@v1") == folder and hub.resolve("runs/x") == Path("runs/x")
    assert seen["repo_id"] == "someone/boats" and seen["revision"] == "v1" and "*.bin" not in seen["allow_patterns"]
    monkeypatch.setattr(huggingface_hub, "snapshot_download", mock.Mock(side_effect=OSError("no network")))
    with pytest.raises(ModelError, match="could not fetch it from the Hugging Face Hub"):
        hub.resolve("hf-hub:someone/boats")


def test_training_with_weights_from_the_hub_starts_from_them(run, folder, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: str(folder))
    # One head-only epoch: every backbone tensor (BatchNorm statistics too) is still exactly the hub model's.
    result = classbench.train(run[0], out=tmp_path / "tuned", epochs=1, freeze_epochs=1,
                              weights="hf-hub:someone/boats", **OPTS)
    source, tuned = read_state_dict(folder), read_state_dict(result.path)
    backbone = [k for k in tuned if not k.startswith("classifier.")]
    assert backbone and all(torch.equal(tuned[k], source[k]) for k in backbone)
    assert json.loads((result.path / "model.json").read_text())["pretrained"] == "hf-hub:someone/boats"
