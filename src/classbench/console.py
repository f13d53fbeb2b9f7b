"""One rich console for progress and messages (stderr, so stdout stays clean for CSV/JSON output)."""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True, highlight=False)


def info(message: str, markup: bool = True) -> None:
    """Print a message; pass ``markup=False`` when it holds user text (paths, class names)."""
    console.print(message, markup=markup, soft_wrap=True)


def warn(message: str) -> None:
    """A warning; the message is printed literally (it often names user files or classes)."""
    from rich.markup import escape

    console.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)
