"""Commands that share models through the Hugging Face Hub: push."""

from pathlib import Path
from typing import Optional

import typer

from classbench.cli._app import app, friendly
from classbench.cli.options import api_defaults
from classbench.console import console
from classbench.hub import push as api_push

PUSH = api_defaults(api_push)


@app.command()
@friendly
def push(
    run: Path = typer.Argument(..., help="A run folder (after training; evaluate it first to put its test table in the card)."),
    repo_id: str = typer.Argument(..., help="Hub model repository ORG/NAME (created when missing)."),
    private: bool = typer.Option(PUSH["private"], "--private", help="Create the repository as private."),
    token: Optional[str] = typer.Option(None, help="Hugging Face token (default: the one `hf auth login` saved, or HF_TOKEN)."),
    out: Optional[Path] = typer.Option(None, help="Where the exported folder goes before the upload (default RUN/hf)."),
) -> None:
    """Upload a run to the Hugging Face Hub as a timm model (timm.create_model("hf-hub:ORG/NAME") loads it)."""
    from rich.markup import escape

    url = api_push(run, repo_id, private=private, token=token, out_dir=out)
    console.print(f"[bold green]Pushed[/] {escape(str(run))} to {escape(url)}", soft_wrap=True)
    console.print(f'Load it with timm.create_model("hf-hub:{escape(repo_id)}", pretrained=True), or train from it with '
                  f"--weights hf-hub:{escape(repo_id)}", soft_wrap=True)
