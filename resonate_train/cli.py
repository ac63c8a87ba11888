"""The ``resonate-train`` command line. Training commands (pretrain, grpo, dpo) join it as they land."""

from __future__ import annotations

import typer

import resonate_train
import ttaeval

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Train flow-matching text-to-audio models."
)


@app.command()
def version() -> None:
    """Print the versions of resonate_train and the ttaeval it scores with."""
    typer.echo(f"resonate_train {resonate_train.__version__} (ttaeval {ttaeval.__version__})")


@app.callback()
def _root() -> None:
    """Train flow-matching text-to-audio models."""


def main() -> None:
    app()
