"""The package as users get it: --version, the declared floors equal to the tested constraints (make test-floor),
resume kept free of unpickling at the Lightning floor, and (slow) the wheel `python -m build` makes: its contents,
and installed into a fresh venv, the installed command running the demo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from classbench.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_version_option_prints_the_installed_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"classbench {version('classbench')}" == "classbench 0.1.0"


def test_declared_floors_are_the_tested_constraints() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floors = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,;\s]+)", dep).groups() for dep in project["dependencies"])
    pins = dict(line.split("==") for line in (ROOT / "constraints-floor.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))

    def same(a: str, b: str) -> bool:  # "2.4" floors the release 2.4.0
        return re.sub(r"(\.0)+$", "", a) == re.sub(r"(\.0)+$", "", b)
    assert set(floors) == set(pins) and all(same(floors[k], pins[k]) for k in floors), (floors, pins)
    assert project["requires-python"] == ">=3.10"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``python -m build --wheel`` on a copy of the project (nothing is written into the working tree)."""
    root = tmp_path_factory.mktemp("build")
    source = root / "src-copy"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    # No isolation: this environment's setuptools builds it, offline (setuptools >= 70.1 makes wheels itself, so
    # build-system's "wheel" is not checked for).
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
                           "--outdir", str(root / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (built,) = (root / "dist").glob("classbench-0.1.0-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_the_package_and_templates_and_nothing_from_tests_or_benchmarks(wheel) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "classbench/hub.py" in names and "classbench/cli/hub.py" in names and "classbench/training/loggers.py" in names
    assert any(re.fullmatch(r"classbench/report/templates/[^/]+\.j2", n) for n in names)
    assert all(n.startswith(("classbench/", "classbench-0.1.0.dist-info/")) for n in names), names
    assert not [n for n in names if re.search(r"(^|/)(tests?|benchmarks)/|\.pyc$|conftest", n)]
    entry_points = zipfile.ZipFile(wheel).read("classbench-0.1.0.dist-info/entry_points.txt").decode()
    assert "classbench = classbench.cli:main" in entry_points


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_runs_version_and_demo(wheel, tmp_path) -> None:
    """A fresh venv (no system site-packages) gets the wheel with --no-deps; the dependencies come from this
    environment's site-packages through a plain path line in a .pth file, so none is downloaded again and its
    .pth files (this checkout's editable install among them) are not run: classbench can only come from the wheel."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "_classbench_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile", "-q", str(wheel)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)), "COLUMNS": "100"}
    where = subprocess.run([str(python), "-c", "import classbench; print(classbench.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT), where
    command = venv / "bin" / "classbench"
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == "classbench 0.1.0", version.stderr
    demo = subprocess.run([str(command), "demo", "--epochs", "1", "--out", str(tmp_path / "demo")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=1800)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert (tmp_path / "demo" / "compare" / "report.html").is_file() and "Report:" in demo.stdout + demo.stderr


class _Pickled:
    """Not a tensor, dict or number: torch's weights-only unpickler refuses to build it."""


def test_resume_on_a_lightning_without_weights_only_still_never_unpickles_objects(tmp_path) -> None:
    """Lightning < 2.6 (the floor is 2.4) has no ``fit(weights_only=...)``: the file is read with torch's
    weights-only unpickler first, and one holding any other object is refused before Lightning loads it."""
    import torch

    from classbench.errors import RunError
    from classbench.training.run import _weights_only

    class OldTrainer:
        def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None):
            raise AssertionError("not called here")

    class NewTrainer:
        def fit(self, model, train_dataloaders=None, val_dataloaders=None, datamodule=None, ckpt_path=None,
                weights_only=None):
            raise AssertionError("not called here")

    safe, unsafe = tmp_path / "safe.ckpt", tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 1, "loops": {"fit_loop": {}}}, safe)
    torch.save({"state_dict": {}, "callbacks": {"x": _Pickled()}}, unsafe)
    assert _weights_only(NewTrainer(), str(unsafe)) == {"weights_only": True}  # Lightning itself refuses it
    assert _weights_only(OldTrainer(), str(safe)) == {} and _weights_only(OldTrainer(), None) == {}
    with pytest.raises(RunError, match="holds more than weights and training state"):
        _weights_only(OldTrainer(), str(unsafe))
