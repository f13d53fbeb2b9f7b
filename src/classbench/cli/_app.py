"""The Typer application, its error handling and the parsers shared by every command."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer

from classbench.console import console

app = typer.Typer(
    name="classbench",
    help="Train, compare, evaluate and export image classifiers on your own folders of images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def version_text() -> str:
    """``classbench X.Y.Z``: the installed distribution's version (the package's own when run from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"classbench {version('classbench')}"
    except PackageNotFoundError:
        from classbench import __version__

        return f"classbench {__version__}"


def _print_version(value: bool) -> None:
    """``--version``: print :func:`version_text` and stop before any command runs."""
    if value:
        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Train, compare, evaluate and export image classifiers on your own folders of images."""


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn user-facing errors into one red line and a non-zero exit code (never a traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rich.markup import escape

        from classbench.errors import ClassbenchError

        try:
            return func(*args, **kwargs)
        except ClassbenchError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except PermissionError as err:
            console.print(f"[bold red]error:[/] {escape(str(err.filename))}: permission denied; choose a writable "
                          "location", soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def int_or_auto(option: str, value: str) -> int | str:
    """'auto' or a positive integer, else a one-line error."""
    from classbench.errors import ClassbenchError

    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise ClassbenchError(f"{option} must be a whole number or 'auto' (got {value!r})") from None
    if number < 1:
        raise ClassbenchError(f"{option} must be >= 1 (got {number})")
    return number


def learning_rate(value: str | None) -> float | str | None:
    """None (the default), 'auto', or a positive number; else a one-line error."""
    from classbench.errors import ClassbenchError

    if value is None or value == "auto":
        return value
    try:
        number = float(value)
    except ValueError:
        raise ClassbenchError(f"--lr must be a number or 'auto' (got {value!r})") from None
    if not number > 0:
        raise ClassbenchError(f"--lr must be > 0 (got {number})")
    return number


def devices(value: str) -> int | str:
    """'auto', a count ('2') or a device list ('0,1') passed through to Lightning."""
    return int(value) if value.isdigit() else value


def names(value: str | None) -> list[str] | None:
    """A comma-separated list of names ('a, b,c') as a list, or None when not given."""
    return [name.strip() for name in value.split(",") if name.strip()] if value else None
