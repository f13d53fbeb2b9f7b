"""The CLI as a user types it: exit codes, one-line errors, outputs written where asked."""

from __future__ import annotations

import csv
import io
import json
import pickle

import pytest
from PIL import Image
from typer.testing import CliRunner

from classbench.cli import app
from classbench.errors import ImageLoadError
from tests.synth import make_class_folders

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_class_folders(root / "data", {"a": 16, "b": 16})
    result = invoke("train", data, "--model", "test_efficientnet", "--epochs", "1", "--img-size", "32",
                    "--out", root / "run")
    assert result.exit_code == 0, result.output
    return data, root / "run"


def test_check_split_and_demo_data_commands(tmp_path) -> None:
    demo = tmp_path / "digits"
    assert invoke("demo-data", demo, "--imbalance", "5").exit_code == 0
    result = invoke("check", demo, "--json", tmp_path / "check.json")
    assert result.exit_code == 0, result.output
    facts = json.loads((tmp_path / "check.json").read_text())
    assert len(facts["classes"]) == 10 and "digit_0" in result.output
    result = invoke("split", demo, "--val", "0.2", "--test", "0.1", "--out", tmp_path / "split.csv")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "split.csv") as fh:
        assert {row["split"] for row in csv.DictReader(fh)} == {"train", "val", "test"}


def test_check_exits_non_zero_for_unusable_data(tmp_path) -> None:
    make_class_folders(tmp_path / "one", {"only": 5})
    result = invoke("check", tmp_path / "one")
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_predict_formats_and_markup_safe_names(trained, tmp_path, monkeypatch) -> None:
    data, run = trained
    Image.open(next(data.glob("a/*.png"))).save(tmp_path / "odd [red] [bold]name.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    monkeypatch.chdir(tmp_path)  # short relative names: a long temp path would be folded over table lines
    result = invoke("predict", run, "odd [red] [bold]name.png", "broken.png", "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert "[red] [bold]name.png" in result.output and "broken.png" in result.output
    out = tmp_path / "p.json"
    assert invoke("predict", run, data / "a", "--format", "json", "--out", out).exit_code == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 16 and all(abs(sum(t["prob"] for t in r["top"]) - 1) < 1e-3 for r in rows if not r["error"])
    result = invoke("predict", run, data / "b", "--format", "csv", "--top-k", "1")
    parsed = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(parsed) == 16 and {r["class_1"] for r in parsed} <= {"a", "b"}


def test_evaluate_export_and_report_commands(trained) -> None:
    _, run = trained
    assert invoke("evaluate", run).exit_code == 0
    assert json.loads((run / "eval.json").read_text())["split"] == "test"
    result = invoke("export", run)
    assert result.exit_code == 0, result.output
    assert (run / "model.onnx").stat().st_size > 0
    result = invoke("report", run)
    assert result.exit_code == 0 and (run / "report.html").is_file()


def test_bad_numbers_and_missing_runs_are_one_line_errors(tmp_path) -> None:
    result = invoke("train", tmp_path, "--batch-size", "lots")
    assert result.exit_code == 2 and "--batch-size must be a whole number" in result.output
    result = invoke("evaluate", tmp_path / "nope")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_image_errors_survive_pickling_from_dataloader_workers() -> None:
    err = pickle.loads(pickle.dumps(ImageLoadError("x/y.png", "truncated image file")))
    assert err.path == "x/y.png" and err.reason == "truncated image file" and str(err) == "x/y.png: truncated image file"


def test_cli_defaults_are_the_api_defaults() -> None:
    """One source of options: every train/compare flag that is a TrainConfig field defaults to the field's default."""
    from typer.main import get_command

    from classbench.comparison.folder import ARG_DEFAULTS
    from classbench.training.config import DEFAULTS

    commands = get_command(app).commands
    checked, seen = 0, set()
    for name in ("train", "compare"):
        for param in commands[name].params:
            key = param.name.rstrip("_")  # folds_ / repeats_: strings on the command line, 'auto' or a number
            if key in DEFAULTS and key not in ("data", "out", "folds"):
                expected = DEFAULTS[key]
                assert param.default == expected or str(param.default) == str(expected), (name, key)
                checked += 1
            elif key in ARG_DEFAULTS and name == "compare":
                assert str(param.default) == str(ARG_DEFAULTS[key]), key
                checked, seen = checked + 1, seen | {key}
    assert checked >= 30 and {"folds", "repeats", "seeds", "refit"} <= seen


def test_commands_that_wrap_one_api_function_default_to_its_defaults() -> None:
    """evaluate, bench, export, demo, demo-data, predict, explain, push and compare: a flag named like an API parameter
    has that parameter's default."""
    import inspect

    from typer.main import get_command

    from classbench.benchmark import bench
    from classbench.comparison import compare, demo
    from classbench.data.demo import demo as demo_data
    from classbench.evaluation import evaluate
    from classbench.explain import explain_files
    from classbench.exporting import export
    from classbench.hub import push
    from classbench.predict import Classifier, load, render_predictions

    commands = get_command(app).commands
    checked = 0
    for name, functions in {"evaluate": [evaluate], "bench": [bench], "export": [export], "demo": [demo],
                            "demo-data": [demo_data], "predict": [load, Classifier.predict_batch, render_predictions],
                            "explain": [explain_files], "push": [push], "compare": [compare]}.items():
        api = {key: p.default for f in functions for key, p in inspect.signature(f).parameters.items()
               if p.default is not inspect.Parameter.empty}
        for param in commands[name].params:
            if param.name in api and param.name not in ("run", "exports", "data", "out", "paths", "models"):
                expected = api[param.name]
                expected = ",".join(expected) if isinstance(expected, tuple) else expected
                assert str(param.default) == str(expected), (name, param.name, param.default, expected)
                checked += 1
    assert checked >= 40
