"""The short Python API: every public name is the function, even after its module was imported."""

from __future__ import annotations

import importlib
import subprocess
import sys

import classbench


def test_api_names_stay_functions_after_importing_every_module() -> None:
    for module in ("classbench.training", "classbench.evaluation", "classbench.comparison", "classbench.exporting",
                   "classbench.predict", "classbench.benchmark", "classbench.data.check", "classbench.data.split",
                   "classbench.data.demo"):
        importlib.import_module(module)
    for name in ("check", "split", "demo_data", "train", "evaluate", "load", "compare", "export", "bench"):
        assert callable(getattr(classbench, name)), name
        assert not isinstance(getattr(classbench, name), type(classbench)), f"classbench.{name} is a module"


def test_cli_imports_stay_lazy() -> None:
    """`classbench --help` must not pay for torch, timm or lightning."""
    code = "import sys, classbench.cli; print(sorted(m for m in ('torch', 'timm', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "classbench.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("check", "split", "demo-data", "train", "evaluate", "predict", "compare", "report", "export",
                    "bench", "demo"):
        assert command in out, command
