"""The ``classbench`` command: a thin Typer layer over the Python API (no logic of its own).

One module per stage of the flow registers its commands on the one ``app``; options that several commands
share are declared once in :mod:`classbench.cli.options`. Heavy libraries are imported inside the commands, so
``classbench --help`` stays fast.
"""

from __future__ import annotations

import sys

from classbench.cli._app import app

# Each module registers its commands on `app`, imported in the order of the flow (--help's order).
# isort: off
from classbench.cli import data, training, deploy, hub, results, explain  # noqa: F401
# isort: on


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exit_:
        sys.exit(exit_.code)


__all__ = ["app", "main"]
