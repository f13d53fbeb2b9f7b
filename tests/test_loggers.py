"""--logger: TensorBoard and MLflow (local SQLite store) read back for real after a 1-epoch run, W&B offline,
the resumed run continuing the same MLflow run, compare forwarding the option, and the one-line refusals."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from classbench.cli import app
from classbench.errors import ClassbenchError
from classbench.training.config import TrainConfig, parse_loggers, resolve_mlflow_uri
from tests.synth import make_class_folders

runner = CliRunner()
TINY = ["--model", "test_efficientnet", "--epochs", "1", "--img-size", "32"]


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def mlflow_client(uri: str):
    import mlflow

    return mlflow.tracking.MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_class_folders(tmp_path_factory.mktemp("loggers") / "data", {"a": 12, "b": 12})


@pytest.fixture(scope="module")
def logged(data, tmp_path_factory) -> tuple[Path, str]:
    """One 1-epoch run logged to TensorBoard and MLflow (repeated and comma-separated --logger)."""
    root = tmp_path_factory.mktemp("logged")
    uri = f"sqlite:///{root / 'store' / 'runs.db'}"  # a URI as given (its folder does not exist yet)
    result = invoke("train", data, *TINY, "--logger", "tensorboard", "--logger", "csv,mlflow", "--mlflow-uri", uri,
                    "--out", root / "run")
    assert result.exit_code == 0, result.output
    return root / "run", uri


def test_parse_loggers_keeps_csv_first_and_refuses_unknown_names() -> None:
    assert parse_loggers(None) == ("csv",)
    assert parse_loggers("tensorboard, MLflow") == ("csv", "tensorboard", "mlflow")
    assert parse_loggers(["wandb", "csv,wandb"]) == ("csv", "wandb")
    with pytest.raises(ClassbenchError, match="'comet' is not one of: csv, tensorboard, mlflow, wandb"):
        parse_loggers("csv,comet")


def test_a_missing_logger_package_is_one_line_before_anything_is_written(data, tmp_path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("wandb") else real(name, *a))
    result = invoke("train", data, *TINY, "--logger", "wandb", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert 'needs the wandb package: pip install "classbench[wandb]"' in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    with pytest.raises(ClassbenchError, match="classbench\\[wandb\\]"):
        TrainConfig(data=str(data), logger="wandb").validate()


def test_metrics_csv_stays_and_tensorboard_has_the_metrics_and_hyperparameters(logged) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = logged
    with open(run / "metrics.csv", encoding="utf-8") as fh:
        row = next(csv.DictReader(fh))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"val_macro_f1", "val_loss", "train_loss", "best/val_macro_f1", "best/epoch"} <= scalars
    assert events.Scalars("val_macro_f1")[0].value == pytest.approx(float(row["val_macro_f1"]), abs=1e-5)
    summary = json.loads((run / "summary.json").read_text())
    assert events.Scalars("best/val_macro_f1")[-1].value == pytest.approx(summary["best_value"], abs=1e-5)
    hparams = yaml.safe_load((run / "tensorboard" / "hparams.yaml").read_text())
    assert hparams["model"] == "test_efficientnet" and hparams["epochs"] == 1 and hparams["resolved/img_size"] == 32
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")  # the HParams tab: options with the best metrics
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert session.session_start_info.hparams["model"].string_value == "test_efficientnet"


def test_mlflow_store_has_the_config_as_params_and_the_best_metrics(logged) -> None:
    run, uri = logged
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name("classbench")
    (found,) = client.search_runs([experiment.experiment_id])
    ids = json.loads((run / "loggers.json").read_text())
    assert found.info.run_id == ids["mlflow_run_id"] and found.info.run_name == "run" and found.info.status == "FINISHED"
    params = found.data.params
    assert params["model"] == "test_efficientnet" and params["epochs"] == "1" and params["resolved/img_size"] == "32"
    summary = json.loads((run / "summary.json").read_text())
    best = summary["best_metrics"]
    metrics = found.data.metrics
    assert metrics["best/val_macro_f1"] == pytest.approx(best["val_macro_f1"], abs=1e-5)
    assert metrics["best/val_balanced_acc"] == pytest.approx(best["val_balanced_acc"], abs=1e-5)
    assert metrics["best/epoch"] == 1 and "val_loss" in metrics


def test_a_resumed_run_continues_the_same_mlflow_run(logged) -> None:
    run, uri = logged
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["args"]["epochs"] = 2  # the finished 1-epoch run becomes an interrupted 2-epoch one
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "summary.json").unlink()
    run_id = json.loads((run / "loggers.json").read_text())["mlflow_run_id"]
    result = invoke("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "loggers.json").read_text())["mlflow_run_id"] == run_id
    history = mlflow_client(uri).get_metric_history(run_id, "val_macro_f1")
    assert len(history) == 2 and history[0].step < history[1].step


def test_mlflow_defaults_to_a_sqlite_store_beside_the_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_mlflow_uri(None, tmp_path / "runs" / "r18") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "compare.json").write_text("{}")
    fold = tmp_path / "cmp" / "cv" / "resnet18" / "fold-1"
    assert resolve_mlflow_uri(None, fold) == f"sqlite:///{tmp_path / 'cmp' / 'mlflow.db'}"
    assert resolve_mlflow_uri(str(tmp_path / "store"), fold) == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert resolve_mlflow_uri((tmp_path / "old").as_uri(), fold) == (tmp_path / "old").as_uri()  # a file: store as given
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert resolve_mlflow_uri(None, fold) == "http://mlflow.example:5000"


def test_compare_forwards_the_loggers_to_every_run(data, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    out = tmp_path / "cmp"
    result = invoke("compare", data, "--models", "test_efficientnet,test_resnet", "--folds", "1", "--no-refit",
                    "--epochs", "1", "--img-size", "32", "--logger", "tensorboard,mlflow", "--out", out)
    assert result.exit_code == 0, result.output
    runs = [out / "test_efficientnet", out / "test_resnet"]
    assert all(list((r / "tensorboard").glob("events.out.tfevents.*")) for r in runs)
    client = mlflow_client(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classbench")
    assert experiment.artifact_location == (out / "mlartifacts").as_uri()  # beside the store, not in the cwd
    found = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in found) == ["cmp/test_efficientnet", "cmp/test_resnet"]
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # the host process's environment is left alone
    assert all("best/val_macro_f1" in r.data.metrics for r in found)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (pip install wandb)")
def test_wandb_offline_run_is_written_in_the_run_folder(data, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = invoke("train", data, *TINY, "--logger", "wandb", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    wandb_id = json.loads((tmp_path / "run" / "loggers.json").read_text())["wandb_id"]
    (offline,) = (tmp_path / "run" / "wandb").glob(f"offline-run-*-{wandb_id}")
    assert (offline / f"run-{wandb_id}.wandb").stat().st_size > 0
