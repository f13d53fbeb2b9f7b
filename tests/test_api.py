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


def test_a_missing_optional_package_is_one_line_naming_the_feature_and_the_extra(monkeypatch) -> None:
    import pytest

    from classbench.errors import ClassbenchError

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import huggingface_hub now raises ImportError
    expected = r'^the Hugging Face Hub needs huggingface_hub, which is not installed: pip install "classbench\[hub\]"$'
    with pytest.raises(ClassbenchError, match=expected):
        classbench.load("hf-hub:someone/model")


def test_first_line_quotes_a_third_party_error_in_one_line() -> None:
    from classbench.errors import first_line

    assert first_line(RuntimeError("\n  bad header\nat byte 12\n")) == "bad header"
    assert first_line(OSError()) == "OSError" and first_line(ValueError("x" * 500), 10) == "x" * 10
