"""``classbench export RUN --format hf`` writes the Hub folder; ``classbench.load("hf-hub:ORG/NAME")`` reads one
through the same download path (only ``snapshot_download`` mocked: no network here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import classbench
from classbench.cli import app
from tests.synth import make_class_folders

huggingface_hub = pytest.importorskip("huggingface_hub")


def test_export_format_hf_then_load_from_the_hub_predicts_like_the_run(tmp_path: Path, monkeypatch) -> None:
    data = make_class_folders(tmp_path / "data", {"dock": 12, "lift": 12})
    run = classbench.train(data, model="test_efficientnet", out=tmp_path / "run", epochs=1, img_size=32,
                           progress=False, augment="none").path
    done = CliRunner().invoke(app, ["export", str(run), "--format", "hf"])
    assert done.exit_code == 0, done.output
    folder = run / "hf"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "model.json", "README.md"}
    asked = {}

    def snapshot(**kwargs):
        asked.update(kwargs)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    shared = classbench.load("hf-hub:someone/docks@v1", backend="torch")
    assert asked["repo_id"] == "someone/docks" and asked["revision"] == "v1"
    images = sorted(data.rglob("*.png"))[:6]
    local = classbench.load(run, backend="torch")
    assert [shared.predict(p) for p in images] == [local.predict(p) for p in images]
