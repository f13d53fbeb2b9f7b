"""User-facing errors: one clear line that names the file and the fix."""

from __future__ import annotations

import importlib
from typing import Any


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``str(err)`` (at most ``limit`` characters), else the exception's type name: what
    a one-line message quotes of a third-party error."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]


class ClassbenchError(Exception):
    """An error caused by user input; the CLI prints ``str(err)`` on one line and exits non-zero.

    Messages name the offending file or value and say how to fix it, e.g.
    ``"data/boat/x.jpg: truncated image file; re-export it or delete it"``.
    """

    exit_code: int = 2


class DataError(ClassbenchError):
    """A dataset or image file problem."""


class ImageLoadError(DataError):
    """One image could not be decoded; ``path`` names it."""

    def __init__(self, path: object, reason: str = "cannot be read") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple:
        # DataLoader workers re-raise errors in the main process: keep both fields across pickling.
        return (type(self), (self.path, self.reason))


class ModelError(ClassbenchError):
    """A model name, size or weights file problem."""


class RunError(ClassbenchError):
    """A run folder problem (missing, exists, unwritable, incomplete)."""


class Interrupted(RunError):
    """Training was stopped by Ctrl-C; the message says how to continue. Exit code 130, as for SIGINT."""

    exit_code = 130


def import_optional(module: str, extra: str, needed_by: str | None = None) -> Any:
    """``importlib.import_module(module)``, or one ClassbenchError line naming ``pip install "classbench[extra]"``
    (and ``needed_by``, the feature that needs it, when given)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        fix = f'pip install "classbench[{extra}]"'
        if needed_by:
            raise ClassbenchError(f"{needed_by} needs {module}, which is not installed: {fix}") from None
        raise ClassbenchError(f"{module} is not installed (needed here); {fix}") from None
