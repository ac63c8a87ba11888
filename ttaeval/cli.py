"""The ``ttaeval`` command line (typer + rich).

Exit codes (``ttaeval.exits``): 0 when every clip scored, 1 when some failed (their records are still
written), 2 for usage and input errors, 3 for environment and storage failures; one line, naming the
file, and no traceback unless ``--debug``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ttaeval.exits import USAGE as USAGE_ERROR
from ttaeval.exits import ExitCodeGroup, failure
from ttaeval.io.audio import TruncatedAudioWarning, ValidationConfig
from ttaeval.io.folder import collect_folder, printable
from ttaeval.io.prompts import PromptError, load_prompts
from ttaeval.optional import install_hint
from ttaeval.protocols import PROTOCOLS, get_protocol, run_set_metrics
from ttaeval.report.html import frame_table
from ttaeval.report.tables import (
    clip_table,
    correlations_markdown,
    efficiency,
    human_correlations,
    leaderboard,
    leaderboard_markdown,
    paired_table,
    tta_bench_markdown,
    tta_bench_table,
)
from ttaeval.scorers import SCORERS
from ttaeval.scoring import score_items
from ttaeval.store import STORE_NAME, RunLock, RunStore, StoreError

app = typer.Typer(
    cls=ExitCodeGroup, add_completion=False, no_args_is_help=True, help="Evaluate text-to-audio systems."
)
console = Console(stderr=True, soft_wrap=True)  # messages are one line each, however narrow the terminal


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Print the traceback of a failure.")] = False,
) -> None:
    """Evaluate text-to-audio systems. Exit codes: 0 all scored, 1 some clips failed (recorded),
    2 usage or input error, 3 environment or storage failure (disk full, read-only, corrupt store)."""
    if debug:
        os.environ["TTAEVAL_DEBUG"] = "1"
    # a truncated file is recorded in its clip's warnings; not printed again under the progress bar
    warnings.filterwarnings("ignore", category=TruncatedAudioWarning)


def _say(label: str, text: str) -> None:
    """Print ``label`` (Rich markup) then ``text`` to stderr; ``text`` — names, paths, prompts, error
    messages — is never read as markup, and bytes UTF-8 cannot hold are shown escaped."""
    console.print(
        f"{label} {escape(printable(str(text)))}" if label else escape(printable(str(text))), highlight=False
    )


def _failure(exc: BaseException) -> typer.Exit:
    """The exit (code and one line) the contract gives ``exc`` (``ttaeval.exits``)."""
    return failure(exc, console)


def _usage_error(message: str) -> typer.Exit:
    _say("[red]error:[/red]", message)
    return typer.Exit(USAGE_ERROR)


def _open_existing(run_dir: Path) -> RunStore:
    if not (run_dir / STORE_NAME).exists():
        raise _usage_error(f"{run_dir} is not a run directory (no {STORE_NAME})")
    return RunStore(run_dir, read_only=True)


@app.command()
def scorers() -> None:
    """List the registered scorers (what each returns: metrics, or artefacts for the set metrics) and
    whether their packages are installed; then the set metrics that read those artefacts."""
    from ttaeval.metrics.set_metrics import SET_METRICS

    table = Table(title="ttaeval scorers")
    for col in ("spec", "installed", "returns"):
        table.add_column(col)
    for entry in SCORERS:
        metrics = ""
        if entry.installed():
            try:
                cls = entry.load()
                metrics = ", ".join(m.name + m.arrow for m in cls.metrics)
                if getattr(cls, "artefacts", None) and not cls.metrics:
                    metrics = "artefacts: " + ", ".join(cls.artefacts)
            except ImportError as exc:
                metrics = str(exc)
        missing = [r for r in entry.requires if importlib.util.find_spec(r) is None]
        hint = "yes" if not missing else f"no: {install_hint(missing[0], entry.extra)}"
        table.add_row(escape(entry.name), escape(hint), escape(metrics))
    Console().print(table)
    sets = Table(title="set metrics (METRIC:SCORER[,K=V], against a reference)")
    for col in ("metric", "reads", "direction", "pairs", "options"):
        sets.add_column(col)
    for entry in SET_METRICS:
        cls = entry.load()
        options = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(cls))
        pairs = "by prompt id" if cls.paired else ("no reference" if not cls.needs_reference else "unpaired")
        arrow = "higher ↑" if cls.higher_is_better else "lower ↓"
        sets.add_row(entry.name, cls.artefact, arrow, pairs, escape(options))
    Console().print(sets)


@app.command()
def score(
    audio_dir: Annotated[Path, typer.Argument(help="Folder of audio files named by prompt id.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (created if needed).")],
    scorer: Annotated[
        list[str] | None, typer.Option("--scorer", help="Scorer spec NAME[:BACKEND][,K=V]; repeatable.")
    ] = None,
    prompts: Annotated[
        str | None, typer.Option("--prompts", help="Prompt suite: TTA-Bench JSON/folder, jsonl, txt.")
    ] = None,
    system: Annotated[
        str | None, typer.Option("--system", help="System name (default: folder name).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per batch and commit.")] = 32,
    max_duration: Annotated[float, typer.Option(help="Refuse clips longer than this (seconds).")] = 600.0,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="Add a named protocol's scorers (ttaeval protocols).")
    ] = None,
    weights: Annotated[
        list[str] | None, typer.Option("--weights", help="KEY=PATH checkpoint for --protocol; repeatable.")
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Folder of reference audio (system 'reference') for set metrics."),
    ] = None,
    set_metric: Annotated[
        list[str] | None,
        typer.Option("--set-metric", help="METRIC:SCORER[,K=V], e.g. fad:embed:vggish; repeatable."),
    ] = None,
) -> None:
    """Score a folder of generated audio against a prompt suite into RUN_DIR; with --reference, the
    reference folder too, and the set metrics (a protocol's, --set-metric) against it."""
    from ttaeval.metrics.set_metrics import evaluate_set_metrics
    from ttaeval.protocols import build_scorers
    from ttaeval.runner import REFERENCE_SYSTEM

    scorer = list(scorer or [])
    set_metric = list(set_metric or [])
    try:
        built = build_scorers(
            scorer,
            protocol=protocol,
            weights=_pairs(weights, "--weights"),
            set_metrics=set_metric,
            reference=reference is not None,
            reference_flag="--reference DIR",
        )
    except (KeyError, ValueError, ImportError, OSError) as exc:
        raise _failure(exc) from None
    suite = None
    if prompts is not None:
        try:
            suite = load_prompts(prompts)
        except (PromptError, FileNotFoundError) as exc:
            raise _failure(exc) from None
    elif needs := [s.label for s in built if s.uses_prompt]:
        raise _usage_error(f"{', '.join(needs)} score audio against prompts: pass --prompts")
    try:
        items = collect_folder(audio_dir, suite, system)
        if reference is not None:
            if (system or audio_dir.resolve().name) == REFERENCE_SYSTEM:
                raise ValueError(
                    f"the reference folder is the system {REFERENCE_SYSTEM!r}: name yours --system"
                )
            items += collect_folder(reference, suite, REFERENCE_SYSTEM)
    except (NotADirectoryError, ValueError) as exc:
        raise _failure(exc) from None
    if all(item.problem == "missing" for item in items):
        raise _usage_error(f"{audio_dir}: no audio files (.wav, .flac, .ogg, .mp3)")
    try:
        lock = RunLock(out)
        store = RunStore(out)
        if suite is not None:
            store.add_prompts(suite)
    except StoreError as exc:
        raise _failure(exc) from None
    with lock, store:
        config = {
            "audio_dir": str(audio_dir),
            "prompts": prompts,
            "system": system,
            "scorers": scorer,
            "protocol": get_protocol(protocol).id if protocol else None,
            "reference": REFERENCE_SYSTEM if reference is not None else None,
            "reference_dir": str(reference) if reference is not None else None,
            "set_metrics": set_metric,
            "batch_size": batch_size,
            "max_duration": max_duration,
        }
        store.record_run(shlex.join(["ttaeval", *sys.argv[1:]]), config, built)
        progress = Progress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        with progress:
            task = progress.add_task("score", total=len(items))
            summary = score_items(
                items,
                built,
                store,
                batch_size=batch_size,
                validation=ValidationConfig(max_duration=max_duration),
                on_batch=lambda n: progress.advance(task, n),
            )
    for message in summary.errors[:20]:
        _say("[yellow]failed:[/yellow]", message)
    if len(summary.errors) > 20:
        console.print(f"[yellow]... and {len(summary.errors) - 20} more (see `ttaeval export`)[/yellow]")
    unscored = f"; not scored: {summary.unscored()}" if summary.unscored() else ""
    _say(
        "",
        f"{summary.clips} clips: {summary.computed} scores computed, {summary.cached} from cache, "
        f"{summary.failed} failed{unscored}. Store: {store.path}",
    )
    if specs := run_set_metrics(config):
        with RunStore(out) as store:
            try:
                sets = evaluate_set_metrics(store, reference=config["reference"], specs=specs)
            except ValueError as exc:
                raise _failure(exc) from None
        sys.stdout.write(leaderboard_markdown(sets.drop(columns=["group"]).assign(best=False)))
    raise typer.Exit(0 if summary.all_ok else 1)


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    """``NAME=VALUE`` options -> a dict (order kept); a repeated name or a missing ``=`` is an error."""
    out: dict[str, str] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"{flag} {item!r}: expected NAME=VALUE")
        if key.strip() in out:
            raise ValueError(f"{flag}: {key.strip()!r} given twice")
        out[key.strip()] = value.strip()
    return out


@app.command()
def run(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML run file (keys: RunConfig's fields).")
    ] = None,
    system: Annotated[
        list[str] | None,
        typer.Option("--system", help="NAME=GENERATOR_SPEC, e.g. base=resonate:ckpt/ or mine=folder:wavs/."),
    ] = None,
    suite: Annotated[
        str | None, typer.Option("--suite", help="TTA-Bench folder/JSON, AudioCaps jsonl, .txt, synth:NAME.")
    ] = None,
    scorer: Annotated[list[str] | None, typer.Option("--scorer", help="Scorer spec; repeatable.")] = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="Add a named protocol's scorers.")
    ] = None,
    weights: Annotated[
        list[str] | None, typer.Option("--weights", help="KEY=PATH checkpoint for --protocol; repeatable.")
    ] = None,
    samples_per_prompt: Annotated[
        int | None, typer.Option("--samples-per-prompt", min=1, help="Clips per prompt and system.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed (per-clip seeds derive from it).")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds per generated clip.")] = None,
    steps: Annotated[int | None, typer.Option(help="Sampler steps.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Classifier-free guidance scale.")] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="Reference set of the set metrics: a system, or folder:DIR (files named by prompt id)."
        ),
    ] = None,
    set_metric: Annotated[
        list[str] | None,
        typer.Option("--set-metric", help="METRIC:SCORER[,K=V], e.g. fad:embed:vggish; repeatable."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Clips per batch and commit.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the suite's first N prompts.")] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="auto, cpu, cuda: where models compute unless a spec says (torchrun: a GPU per rank)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (resumed if it exists).")] = None,
    quiet: Annotated[bool, typer.Option(help="No leaderboard at the end.")] = False,
) -> None:
    """Generate and score: every system answers every prompt, every clip is scored, all resumable.

    Under torchrun (``torchrun --nproc-per-node N -m ttaeval run ...``) prompts are sharded over ranks.
    """
    from ttaeval.runner import RunConfig, dist_env
    from ttaeval.runner import run as run_benchmark

    rank, world = dist_env()
    try:
        flags = {
            "out": out,
            "systems": _pairs(system, "--system"),
            "suite": suite,
            "scorers": list(scorer or []),
            "protocol": protocol,
            "weights": _pairs(weights, "--weights"),
            "set_metrics": list(set_metric or []),
            "samples_per_prompt": samples_per_prompt,
            "seed": seed,
            "duration": duration,
            "steps": steps,
            "guidance": guidance,
            "reference": reference,
            "batch_size": batch_size,
            "limit": limit,
            "device": device,
        }
        if config is not None:
            cfg = RunConfig.from_toml(config, **flags)
        else:
            missing = [f"--{k}" for k in ("out", "suite") if flags[k] is None] + (
                ["--system"] if not flags["systems"] else []
            )
            if missing:
                raise ValueError(f"give {', '.join(missing)} (or --config FILE)")
            cfg = RunConfig(**{k: v for k, v in flags.items() if v is not None})
    except (ValueError, TypeError) as exc:
        raise _failure(exc) from None
    progress = Progress(
        TextColumn("run"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=rank != 0,
    )
    with progress:
        task = progress.add_task("run", total=None)
        try:
            summary = run_benchmark(
                cfg,
                on_plan=lambda n: progress.update(task, total=n),
                on_progress=lambda n: progress.advance(task, n),
            )
        except (KeyError, ValueError, ImportError, OSError, PromptError, StoreError) as exc:
            raise _failure(exc) from None
    for message in summary.errors[:20] + summary.scoring.errors[:20]:
        _say("[yellow]failed:[/yellow]", message)
    sc = summary.scoring
    where = f"rank {rank}/{world}: " if world > 1 else ""
    _say(
        "",
        f"{where}{summary.planned} clips planned, {summary.skipped} already complete; "
        f"{summary.generated} generated, {summary.loaded} read, "
        f"{summary.generation_failed} failed to generate; "
        f"{sc.computed} scores computed, {sc.cached} from cache, {sc.failed} failed. Store: {cfg.out}",
    )
    if rank == 0 and not quiet:
        with RunStore(cfg.out) as store:
            try:
                board = leaderboard(
                    store, reference=cfg.reference, set_metrics=run_set_metrics(cfg.to_dict())
                )
                speed = efficiency(store)
            except ValueError as exc:
                raise _failure(exc) from None
        sys.stdout.write(leaderboard_markdown(board, efficiency=speed))
    raise typer.Exit(0 if summary.all_ok else 1)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """One row per clip: system, prompt_id, every metric, error."""
    if format not in ("csv", "json"):
        raise _usage_error(f"--format must be csv or json, not {format!r}")
    with _open_existing(run_dir) as store:
        table = clip_table(store)
    text = table.to_csv(index=False) if format == "csv" else table.to_json(orient="records", indent=1)
    _write(text, output)


@app.command(name="leaderboard")
def leaderboard_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    format: Annotated[str, typer.Option("--format", help="md, csv, json or html.")] = "md",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by", help="Group prompts: dimension, event_count, event_relation, perturbation_type, ..."
        ),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Paired differences of every system against this one.")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="Reference system for FAD/FAD-inf/KAD (default: the run's)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="tta-bench: its per-dimension/attribute tables.")
    ] = None,
) -> None:
    """Mean and 95% bootstrap CI over prompts per system and metric; set metrics; paired tests."""
    from ttaeval.report.html import leaderboard_html, page

    if format not in ("md", "csv", "json", "html"):
        raise _usage_error(f"--format must be md, csv, json or html, not {format!r}")
    if format == "csv" and baseline:
        raise _usage_error(
            "--baseline adds a second table: use --format json, md or html (or csv without it)"
        )
    if protocol is not None:
        from ttaeval.protocols import get_protocol

        if not get_protocol(protocol).per_clip_tables:
            raise _usage_error(
                f"--protocol {protocol}: only tta-bench has tables of its own; {protocol}'s are "
                "columns of the plain leaderboard (see ttaeval protocols --explain)"
            )
        with _open_existing(run_dir) as store:
            table = tta_bench_table(store)
        text = {
            "md": lambda: tta_bench_markdown(table),
            "csv": lambda: table.to_csv(index=False),
            "html": lambda: page(f"TTA-Bench tables: {run_dir.name}", frame_table(table)),
        }.get(format, lambda: table.to_json(orient="records", indent=1))()
        _write(text, output)
        return
    with _open_existing(run_dir) as store:
        runs = store.runs()
        config = runs[-1]["config"] if runs else {}
        reference = reference or config.get("reference")
        try:
            board = leaderboard(
                store, by=by, reference=reference, set_metrics=run_set_metrics(config), seed=seed
            )
            paired = paired_table(store, baseline, by=by, seed=seed) if baseline else None
            speed = efficiency(store, seed=seed)
        except ValueError as exc:
            raise _failure(exc) from None
    if format == "md":
        text = leaderboard_markdown(board, paired, efficiency=speed)
    elif format == "html":
        text = page(f"Leaderboard: {run_dir.name}", leaderboard_html(board, paired, efficiency=speed))
    else:
        frames = {
            "leaderboard": board,
            "efficiency": speed,
            **({"paired": paired} if paired is not None else {}),
        }
        if format == "csv":
            text = board.to_csv(index=False) + (
                "\n" + paired.to_csv(index=False) if paired is not None else ""
            )
        else:
            text = json.dumps(
                {k: json.loads(f.to_json(orient="records")) for k, f in frames.items()}, indent=1
            )
    _write(text, output)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.md, report.html, figures/.")],
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Paired tests of every system against this one.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="Reference system for set metrics (default: the run's).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="The report's title.")] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Write a run's report: Markdown, a self-contained HTML page, and PNG figures."""
    from ttaeval.report.report import write_report

    _open_existing(run_dir).close()
    try:
        files = write_report(run_dir, out, baseline=baseline, reference=reference, seed=seed, title=title)
    except ValueError as exc:
        raise _failure(exc) from None
    _say("", f"wrote {files.markdown}, {files.html} and {len(files.figures)} figures")


@app.command()
def correlate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    human: Annotated[
        Path, typer.Option("--human", help="CSV: prompt_id[, system][, sample], rating columns.")
    ],
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="Column label/metric to correlate (default: all).")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="md, csv or json.")] = "md",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Per-clip metrics against human ratings: LCC, SRCC, KTAU with bootstrap CIs."""
    if format not in ("md", "csv", "json"):
        raise _usage_error(f"--format must be md, csv or json, not {format!r}")
    try:
        ratings = pd.read_csv(human)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise _usage_error(f"{human}: cannot read the ratings ({exc})") from None
    with _open_existing(run_dir) as store:
        try:
            table = human_correlations(store, ratings, metric, seed=seed)
        except ValueError as exc:
            raise _usage_error(f"{human}: {exc}") from None
    if format == "md":
        text = correlations_markdown(table)
    else:
        text = table.to_csv(index=False) if format == "csv" else table.to_json(orient="records", indent=1)
    _write(text, output)


@app.command()
def fad(
    generated: Annotated[Path, typer.Argument(help="Folder of generated audio (the set evaluated).")],
    reference: Annotated[
        Path | None, typer.Argument(help="Folder of reference audio (or give --reference).")
    ] = None,
    reference_dir: Annotated[
        Path | None, typer.Option("--reference", help="Folder of reference audio (unambiguous form).")
    ] = None,
    embedder: Annotated[
        str,
        typer.Option("--embedder", help="Embedding scorer: embed:mini, embed:vggish,checkpoint=PATH, ..."),
    ] = "embed:mini",
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory keeping the embeddings (cached by content).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Threads decoding and resampling files.")] = 2,
) -> None:
    """FAD of GENERATED against REFERENCE (argument order: evaluated set first, then the reference;
    fadtk takes the baseline first — pass --reference REF to be explicit).

    Both folders are embedded through the scorer path into a run store and the ``fad`` set metric is
    read from it, as leaderboards read it. Prints the FAD on stdout; files that cannot be read are
    named on stderr and left out (exit 1)."""
    from ttaeval.folder_fad import embedding_scorer, folder_fad

    if (reference is None) == (reference_dir is None):
        raise _usage_error("give the reference folder once: as the second argument or as --reference DIR")
    reference = reference or reference_dir
    try:
        model = embedding_scorer(embedder)
    except (KeyError, ValueError, FileNotFoundError, ImportError) as exc:
        raise _failure(exc) from None
    try:
        result = folder_fad(generated, reference, model, store_dir=out, workers=workers)
    except (NotADirectoryError, ValueError, StoreError) as exc:
        raise _failure(exc) from None
    for message in result.errors:
        _say("[yellow]left out:[/yellow]", message)
    _say(
        "",
        f"FAD ({model.id}) of {result.generated_files} generated against {result.reference_files} "
        "reference files",
    )
    print(repr(result.fad))  # full precision: scripts compare it
    raise typer.Exit(1 if result.errors else 0)


@app.command()
def verify(
    run_dir: Annotated[Path, typer.Argument(help="Run directory.")],
    repair: Annotated[
        bool, typer.Option(help="Rebuild a damaged store from its readable rows; drop incomplete results.")
    ] = False,
) -> None:
    """Check a run store: SQLite integrity, and results marked done whose values are gone. Exit 0 when
    sound (or repaired), 3 when damage is found and not repaired. After --repair, run the recorded
    command again: it recomputes exactly what was lost."""
    from ttaeval.store.verify import verify as check

    found = check(run_dir, repair=repair)
    for problem in found.corrupt[:10]:
        _say("[red]damaged:[/red]", problem)
    for table, (kept, lost) in found.salvaged.items():
        if lost:
            _say("[yellow]rebuilt:[/yellow]", f"{table}: {kept} rows kept, {lost} unreadable rows lost")
    if found.incomplete:
        what = "dropped" if repair else "found"
        _say("[yellow]incomplete:[/yellow]", f"{found.incomplete} results marked done without values {what}")
    if found.sound:
        _say("", f"{run_dir}: the store is sound")
        return
    if not repair:
        _say("", f"run `ttaeval verify {run_dir} --repair`, then the run again, to recompute what is lost")
        raise typer.Exit(3)
    if found.backup:
        _say("", f"the damaged file is kept as {found.backup}")
    with RunStore(run_dir) as store:
        runs = store.runs()
    again = runs[-1]["command"] if runs else "the run's command"
    _say("", f"repaired; `{again}` recomputes what was lost")


@app.command()
def protocols(
    explain: Annotated[str | None, typer.Option("--explain", help="Print one protocol in full.")] = None,
) -> None:
    """List the named metric protocols, or explain one (rates, windows, checkpoints, formulas)."""
    if explain is not None:
        try:
            sys.stdout.write(get_protocol(explain).explain())
        except KeyError as exc:
            raise _failure(exc) from None
        return
    table = Table(title="ttaeval protocols")
    for col in ("protocol", "summary", "weights"):
        table.add_column(col)
    for entry in PROTOCOLS:
        p = entry.load()
        table.add_row(escape(p.id), escape(p.summary), escape(", ".join(p.weights)))
    Console().print(table)


synth_app = typer.Typer(no_args_is_help=True, help="The synthetic mini world.")
app.add_typer(synth_app, name="synth")


@synth_app.command("export")
def synth_export(
    out: Annotated[Path, typer.Argument(help="Folder to write the suites and their audio into.")],
    audio: Annotated[bool, typer.Option(help="Also render one wav a prompt and the reference set.")] = True,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the first N prompts of each suite (and N references).")
    ] = None,
) -> None:
    """Write synth:accuracy/generalization/robustness as TTA-Bench JSON files, one wav a prompt."""
    from ttaeval.synth.export import export_suites

    with console.status("rendering the synthetic suites"):
        counts = export_suites(out, audio=audio, limit=limit)
    _say("", ", ".join(f"{k}: {v}" for k, v in counts.items()) + f" -> {out}")


judge_app = typer.Typer(no_args_is_help=True, help="The LALM judge as a local server.")
app.add_typer(judge_app, name="judge")


@judge_app.command("serve")
def judge_serve(
    model: Annotated[
        Path | None,
        typer.Option(help="Qwen2-Audio or Qwen2.5-Omni folder (default: the shipped judge-mini)."),
    ] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind; loopback only unless --allow-remote.")] = (
        "127.0.0.1"
    ),
    served_name: Annotated[
        str | None, typer.Option(help="The model name clients send (default: the folder's name).")
    ] = None,
    device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    max_batch: Annotated[int, typer.Option(min=1, help="Requests grouped into one forward pass.")] = 16,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Require Authorization: Bearer <the key in this environment variable>."),
    ] = None,
    allow_remote: Annotated[
        bool, typer.Option(help="Allow a non-loopback --host (the server has no auth without a key).")
    ] = False,
    max_audio_seconds: Annotated[
        float, typer.Option(min=0.001, help="Longest clip a request may send (read from its header).")
    ] = 60.0,
    max_prompt_chars: Annotated[int, typer.Option(min=0, help="Longest prompt a request may send.")] = 2000,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="For testing clients: KIND[,every=N][,times=K][,seconds=S][,retry_after=S]; repeatable. "
            "Kinds: delay, http500, http503, http429, reset, malformed, no-logprobs, not-yes-no."
        ),
    ] = None,
) -> None:
    """Serve a judge on the OpenAI chat-completions subset judge:http speaks (audio parts, logprobs)."""
    import logging
    import os

    from ttaeval.judge import hf as judge_hf
    from ttaeval.judge import server as judge_server
    from ttaeval.judge.faults import Fault

    try:
        judge_server.check_host(host, allow_remote)
        faults = [Fault.parse(f) for f in fault or []]
    except ValueError as exc:
        raise _failure(exc) from None
    if model is None:
        model = judge_hf.JUDGE_MINI
        if not model.is_dir():
            raise _usage_error(
                f"the shipped judge-mini is not there (yet): {model} does not exist; it is trained by "
                "`python -m ttaeval.synth.train_judge`. Pass --model DIR to serve another judge."
            )
    elif not model.is_dir():
        raise _usage_error(f"--model {model}: no such folder (a Qwen2-Audio or Qwen2.5-Omni model folder)")
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise _usage_error(f"--api-key-env {api_key_env}: that environment variable is not set")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    def ready(server: judge_server.JudgeHTTPServer) -> None:
        typer.echo(f"serving {server.served_name} on {server.url} (Ctrl-C stops)")
        typer.echo(f"scorer spec: judge:http,url={server.url},served_model={server.served_name}")
        sys.stdout.flush()

    with console.status(f"loading the judge from {escape(printable(str(model)))}"):
        try:
            engine = judge_server.JudgeEngine(model, device=device, max_batch=max_batch)
        except (OSError, ValueError, KeyError) as exc:
            raise _usage_error(f"cannot load a judge from {model}: {exc}") from None
    try:
        judge_server.serve(
            engine,
            host=host,
            port=port,
            served_name=served_name or model.name,
            api_key=api_key,
            faults=faults,
            allow_remote=allow_remote,
            limits=judge_server.ServerLimits(
                max_audio_seconds=max_audio_seconds, max_prompt_chars=max_prompt_chars
            ),
            on_ready=ready,
        )
    except OSError as exc:  # the port is taken, the address is not ours
        raise _usage_error(f"cannot serve on {host}:{port}: {exc}") from None
    typer.echo("stopped")


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        _say("", f"wrote {output}")


def main() -> None:
    app()
