"""The ``resonate-train`` command line. Training commands (pretrain, grpo, dpo) join it as they land."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML with PretrainConfig's fields.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps (overrides the config).")] = None,
    scenes: Annotated[int | None, typer.Option(help="Training scenes (overrides the config).")] = None,
) -> None:
    """Pretrain the mini flow-matching model on the synthetic world (conditional flow matching)."""
    from resonate_train.pretrain import PretrainConfig
    from resonate_train.pretrain import pretrain as run_pretrain

    overrides = {"steps": steps, "scenes": scenes}
    cfg = (
        PretrainConfig.from_toml(config, **overrides)
        if config
        else PretrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    )
    run_pretrain(cfg, out, log=typer.echo)


@app.callback()
def _root() -> None:
    """Train flow-matching text-to-audio models."""


def main() -> None:
    app()
