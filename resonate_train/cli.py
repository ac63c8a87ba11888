"""The ``resonate-train`` command line. Training commands (pretrain, grpo, dpo) join it as they land."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

import resonate_train
import ttaeval
from ttaeval.exits import ExitCodeGroup

app = typer.Typer(
    cls=ExitCodeGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Train flow-matching text-to-audio models.",
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


@app.command()
def grpo(
    out: Annotated[Path, typer.Option("--out", help="Run folder (resumed if it has a checkpoint).")],
    base: Annotated[str | None, typer.Option("--base", help="Starting checkpoint folder.")] = None,
    reward: Annotated[
        list[str] | None, typer.Option("--reward", help="SCORER[#METRIC][@WEIGHT]; repeatable.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML with GRPOConfig's fields.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed.")] = None,
) -> None:
    """Online GRPO (Flow-GRPO) with ttaeval scorers as rewards."""
    from resonate_train.grpo import GRPOConfig, GRPOTrainer, reward_gain

    overrides = {"base": base, "rewards": reward, "steps": steps, "seed": seed}
    cfg = (
        GRPOConfig.from_toml(config, **overrides)
        if config
        else GRPOConfig(**{k: v for k, v in overrides.items() if v not in (None, [])})
    )
    if not cfg.base:
        raise typer.BadParameter("give --base (or base in the config)")
    final = GRPOTrainer(cfg, out, log=typer.echo).train()
    typer.echo(f"final weights: {final}")
    if cfg.eval_every:
        gain = reward_gain(out)
        typer.echo(
            f"evaluation reward gain (last - first, {gain.n} prompts): {gain.mean:+.4f} "
            f"[{gain.low:+.4f}, {gain.high:+.4f}] 95% CI, p = {gain.p_value:.3g}"
        )


@app.command()
def dpo(
    out: Annotated[Path, typer.Option("--out", help="Run folder (resumed if it has a checkpoint).")],
    base: Annotated[str | None, typer.Option("--base", help="Starting (and reference) checkpoint.")] = None,
    reward: Annotated[str | None, typer.Option("--reward", help="Scorer ranking the samples.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML with DPOConfig's fields.")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimiser steps.")] = None,
    online_every: Annotated[int | None, typer.Option(help="Online variant: new pairs every N steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (pairs and batches).")] = None,
) -> None:
    """Flow-matching DPO on preference pairs sampled from the base model and ranked by a scorer."""
    from resonate_train.dpo import DPOConfig, DPOTrainer

    overrides = {"base": base, "reward": reward, "steps": steps, "online_every": online_every, "seed": seed}
    cfg = (
        DPOConfig.from_toml(config, **overrides)
        if config
        else DPOConfig(**{k: v for k, v in overrides.items() if v is not None})
    )
    if not cfg.base:
        raise typer.BadParameter("give --base (or base in the config)")
    typer.echo(f"final weights: {DPOTrainer(cfg, out, log=typer.echo).train()}")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder (a run's final/).")],
    out: Annotated[Path, typer.Argument(help="Folder to write.")],
    dtype: Annotated[str, typer.Option("--dtype", help="float16, bfloat16 or float32.")] = "float16",
) -> None:
    """Write a checkpoint for shipping: weights in half precision, with the run's logs and recipe."""
    from resonate_train.export import export_checkpoint

    try:
        folder = export_checkpoint(checkpoint, out, weights_dtype=dtype)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(f"exported: {folder}")


@app.command()
def compare(
    config: Annotated[Path, typer.Option("--config", help="TOML with CompareConfig's fields.")],
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (overrides the config's).")] = None,
) -> None:
    """Evaluate fine-tunes with ttaeval and write the report with the claims under test."""
    import sys

    from resonate_train.compare import CompareConfig, compare

    cfg = CompareConfig.from_toml(config, out=str(out) if out else None)
    folder = compare(cfg, command=" ".join(["resonate-train", *sys.argv[1:]]))
    typer.echo(f"report: {folder / 'report.md'} and {folder / 'report.html'}")


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Print the traceback of a failure.")] = False,
) -> None:
    """Train flow-matching text-to-audio models. Exit codes: 0 done, 2 usage or input error (a bad
    option, config or checkpoint), 3 environment or storage failure (disk full, read-only folder)."""
    if debug:
        os.environ["TTAEVAL_DEBUG"] = "1"


def main() -> None:
    app()
