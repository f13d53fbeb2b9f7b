"""One rich console for progress and messages (stderr, so stdout stays clean for CSV/JSON output)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[bold yellow]warning:[/] {message}")
