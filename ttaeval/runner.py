"""The benchmark runner: plan -> generate -> score -> store, resumable and sharded over processes.

``run(config)`` answers every prompt of a suite ``samples_per_prompt`` times with every system,
scores each clip with every scorer, and commits batch by batch. Work the store already holds is
skipped before anything is generated or loaded, so a run killed at any point and started again
ends with exactly the rows of an uninterrupted run, and a finished run re-run computes nothing.

Generated audio is written (float WAV, exact) under ``RUN_DIR/audio/SYSTEM/``, atomically, before
its rows are committed; a ``folder`` system's clips stay where they are and are re-read on every
run (the cache is keyed on their content, so an edited file is scored again, an unchanged one not).

Under ``torchrun --nproc-per-node N -m ttaeval run ...`` the batches of (prompt, sample) pairs are
dealt out over the ranks (the same batches one process would make, so the numbers are the same to the
bit), each rank writes its own shard store (``RUN_DIR/shards/rank-R``), and rank 0 merges the shards into
the run store once every rank is done (torch.distributed barrier; gloo on CPU, NCCL on GPU). Each rank
binds its device (``device``: ``cuda:LOCAL_RANK`` on a GPU node) before any model is built, with the
trainers' helper (``ttaeval.devices.setup_process``).

Every generated clip is stored with its efficiency numbers (``ttaeval.metrics.efficiency``: generation
time, real-time factor, peak memory, batch size, device): TTA-Bench's efficiency dimension.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttaeval.devices import check_device_name
from ttaeval.generators import (
    GenerationFailure,
    GenerationSettings,
    Generator,
    clip_seed,
    get_generator,
    parse_generator_spec,
)
from ttaeval.io.audio import AudioError, Clip, ValidationConfig, check_audio, float_wav_bytes, load_audio
from ttaeval.io.folder import safe_name
from ttaeval.io.prompts import Prompt, load_prompts
from ttaeval.metrics.efficiency import measure
from ttaeval.registry import check_types
from ttaeval.scorers import Scorer
from ttaeval.scoring import ScoringSummary, score_and_commit
from ttaeval.store import ClipRecord, RunLock, RunStore, StoreError, prompt_key_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

AUDIO_DIR = "audio"
REFERENCE_SYSTEM = "reference"
"""The system name a ``--reference folder:DIR`` gets."""
SHARD_DIR = "shards"


@dataclass
class RunConfig:
    """What ``ttaeval run`` does. A TOML file (``--config``) holds these keys; flags override them."""

    out: Path
    """The run directory (created if needed; an existing one is resumed)."""
    systems: dict[str, str]
    """System name -> generator spec (``folder:PATH``, ``synth,degrade=noise``, ``resonate:CKPT`` ...)."""
    suite: str
    """Prompt suite: a TTA-Bench folder or JSON file, an AudioCaps jsonl, a .txt, or ``synth:NAME``."""
    scorers: list[str] = field(default_factory=list)
    """Scorer specs (``clap:mini``, ``judge:mini,w_quality=0``, ...)."""
    protocol: str | None = None
    """A named protocol whose scorers and set metrics are added (``ttaeval protocols``)."""
    weights: dict[str, str] = field(default_factory=dict)
    """Checkpoint paths for the protocol's scorers (KEY -> PATH)."""
    set_metrics: list[str] = field(default_factory=list)
    """Set metric specs against the reference (``fad:embed:vggish``, ``kl:embed:panns``, ...), besides
    the protocol's."""
    samples_per_prompt: int = 1
    """Clips per prompt and system (each with its own seed)."""
    seed: int = 0
    """Run seed; each (prompt, sample) gets ``clip_seed(seed, prompt id, sample)``."""
    duration: float | None = None
    """Seconds per generated clip (None: each generator's default)."""
    steps: int | None = None
    """Sampler steps (None: each generator's default)."""
    guidance: float | None = None
    """Classifier-free guidance scale (None: each generator's default)."""
    reference: str | None = None
    """The reference set of set metrics: one of the systems, or ``folder:DIR`` (audio named by prompt
    id, added as the system ``reference``)."""
    batch_size: int = 16
    """Clips generated, scored and committed together."""
    limit: int | None = None
    """Use only the suite's first N prompts (quick looks)."""
    max_duration: float = 600.0
    """Refuse audio longer than this (seconds)."""
    device: str = "auto"
    """Where this process computes: ``auto`` (the GPU when there is one, else the CPU), ``cpu``,
    ``cuda``. Under torchrun each rank takes ``cuda:LOCAL_RANK``. Generators and scorers whose spec
    sets no ``device`` of their own compute there."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if not self.systems:
            raise ValueError("give at least one system (--system NAME=SPEC)")
        for name in self.systems:
            if not name or "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"system name {name!r}: use letters, digits, '-', '_' (no path separators)")
        for name in ("scorers", "set_metrics"):
            if not isinstance(getattr(self, name), list | tuple):
                raise ValueError(f"{name} must be a list of specs, not {getattr(self, name)!r}")
        if self.samples_per_prompt < 1 or self.batch_size < 1:
            raise ValueError("samples_per_prompt and batch_size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1 (or absent for every prompt), not {self.limit}")
        if not (math.isfinite(self.max_duration) and self.max_duration > 0):
            raise ValueError(f"max_duration must be a positive number of seconds, not {self.max_duration}")
        if self.duration is not None and not (0 < self.duration <= self.max_duration):
            raise ValueError(
                f"duration must be in (0, max_duration = {self.max_duration}] seconds, not {self.duration}"
            )
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, not {self.steps}")
        if self.guidance is not None and not math.isfinite(self.guidance):
            raise ValueError(f"guidance must be a finite number, not {self.guidance}")
        check_device_name(self.device)
        if self.reference is not None and self.reference.startswith("folder:"):
            if REFERENCE_SYSTEM in self.systems and self.systems[REFERENCE_SYSTEM] != self.reference:
                raise ValueError(
                    f"--reference folder:DIR becomes system {REFERENCE_SYSTEM!r}: rename that one"
                )
            self.systems = {**self.systems, REFERENCE_SYSTEM: self.reference}
            self.reference = REFERENCE_SYSTEM
        if self.reference is not None and self.reference not in self.systems:
            raise ValueError(
                f"reference {self.reference!r} is not one of the systems: {', '.join(self.systems)} "
                "(or give --reference folder:DIR)"
            )

    @property
    def settings(self) -> GenerationSettings:
        return GenerationSettings(self.duration, self.steps, self.guidance)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read a TOML run file; ``overrides`` (flags given on the command line) win over its keys.
        Relative paths in the file (``out``, ``folder:`` systems stay as written) are kept as given."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the run config: {exc}") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        check_types(cls, data, str(path))
        data.update({k: v for k, v in overrides.items() if v not in (None, [], {})})
        missing = [k for k in ("out", "systems", "suite") if k not in data]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class RunSummary:
    """What one invocation did (on this rank)."""

    planned: int = 0
    skipped: int = 0
    generated: int = 0
    loaded: int = 0
    generation_failed: int = 0
    scoring: ScoringSummary = field(default_factory=ScoringSummary)
    errors: list[str] = field(default_factory=list)

    @property
    def all_ok(self) -> bool:
        return self.generation_failed == 0 and self.scoring.all_ok


@dataclass(frozen=True)
class _Work:
    prompt: Prompt
    sample: int
    seed: int
    stored: ClipRecord | None  # an ok stored clip whose scores are incomplete: re-read, don't generate


def dist_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    from ttaeval import devices

    rank, world, _ = devices.dist_env()
    return rank, world


def build_scorers(config: RunConfig, device: str | Callable[[], str] | None = None) -> list[Scorer]:
    """The run's scorers, checked before any audio is made (``protocols.build_scorers``); those
    whose spec sets no device compute on ``device`` (or what it returns, asked only if one does)."""
    from ttaeval.protocols import build_scorers as build

    return build(
        config.scorers,
        protocol=config.protocol,
        weights=config.weights,
        set_metrics=config.set_metrics,
        reference=config.reference is not None,
        reference_flag="--reference SYSTEM or --reference folder:DIR",
        device=device,
    )


def build_generator(spec: str, device: str | Callable[[], str] | None = None) -> Generator:
    """A system's generator; one with a ``device`` option its spec leaves unset computes on ``device``
    (or what it returns)."""
    generator = get_generator(spec)
    fields = {f.name for f in dataclasses.fields(generator)}  # type: ignore[arg-type]
    if device is not None and "device" in fields:
        _, options = parse_generator_spec(spec)
        if "device" not in dict(options):
            generator.device = device() if callable(device) else device  # type: ignore[attr-defined]
    return generator


def run(
    config: RunConfig,
    *,
    scorers: Sequence[Scorer] | None = None,
    generators: dict[str, Generator] | None = None,
    command: str | None = None,
    on_plan: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """Run (or resume) the benchmark described by ``config``; see the module docstring.

    ``scorers``/``generators`` may be passed already built (the trainers reuse theirs); otherwise
    they are built from the config's specs before any work starts, so a bad spec fails fast.
    ``on_plan`` gets the number of clips this rank will handle, ``on_progress`` each batch's size.
    """
    from ttaeval.devices import setup_process

    rank, world = dist_env()

    @functools.cache
    def device() -> str:
        """This process's device, bound on first use: rank R computes on cuda:LOCAL_RANK. A run whose
        scorers and systems hold no model (signal checks of a folder) never imports torch."""
        return str(setup_process(config.device).device)

    if world > 1:
        device()  # bound, and the process group joined, before anything else
    prompts = load_prompts(config.suite)[: config.limit]
    scorers = list(scorers) if scorers is not None else build_scorers(config, device)
    generators = generators or {name: build_generator(spec, device) for name, spec in config.systems.items()}
    for generator in generators.values():
        generator.prepare(prompts, config.samples_per_prompt)
    command = command or shlex.join(["ttaeval", *sys.argv[1:]])
    summary = RunSummary()
    run_dir = config.out
    with ExitStack() as stack:
        if rank == 0:  # the run store: this rank's own store, or the one the shards merge into
            stack.enter_context(RunLock(run_dir))
            main = stack.enter_context(RunStore(run_dir))
            if (run_dir / SHARD_DIR).is_dir():  # a sharded run that died before merging: keep its work
                merge_shards(run_dir, main)
            main.add_prompts(prompts)
            main.record_run(command, config.to_dict(), scorers)
            for name, gen in generators.items():
                if gen.stores_audio:
                    main.claim_system(name, getattr(gen, "spec", gen.kind), _identity(gen, config))
        if world > 1:
            _barrier()  # the run store exists and has accepted the systems before any rank reads it
            shard = run_dir / SHARD_DIR / f"rank-{rank}"
            stack.enter_context(RunLock(shard))
            store = stack.enter_context(RunStore(shard))
            store.register_scorers(scorers)
            for name, gen in generators.items():
                if gen.stores_audio:
                    store.claim_system(name, getattr(gen, "spec", gen.kind), _identity(gen, config))
            if rank != 0:
                main = stack.enter_context(RunStore(run_dir))
        else:
            store = main
        store.add_prompts(prompts)
        stores = list(dict.fromkeys([store, main]))
        batches = _batches(prompts, config, rank, world)
        plan = {name: _plan(name, gen, batches, config, scorers, stores) for name, gen in generators.items()}
        summary.planned = sum(len(b) for b in batches) * len(generators)
        summary.skipped = summary.planned - sum(len(b) for batches in plan.values() for b in batches)
        if on_plan:
            on_plan(summary.planned - summary.skipped)
        validation = ValidationConfig(max_duration=config.max_duration)
        for name, batches in plan.items():
            for batch in batches:
                _do_batch(name, generators[name], batch, config, scorers, store, validation, summary, stores)
                if on_progress:
                    on_progress(len(batch))
        if world > 1:
            store.close()
            _barrier()  # every shard is complete
            if rank == 0:
                merge_shards(run_dir, main)
            _barrier()
    return summary


def _identity(generator: Generator, config: RunConfig) -> dict[str, Any]:
    """What a stored system's clips were made with: the generator, the run seed, the settings. A
    resumed run that changes any of them is refused rather than mixing clips of both."""
    return {**generator.identity, "seed": config.seed, "settings": generator.resolve(config.settings)}


def merge_shards(run_dir: Path, main: RunStore) -> int:
    """Merge every rank's shard store into the run store, then remove the shards; returns how many.
    Merging is idempotent: a merge killed halfway is simply done again on the next run."""
    shards = sorted((run_dir / SHARD_DIR).glob("rank-*"))
    for shard in shards:
        RunStore(shard).close()  # brings a shard an older ttaeval left up to this schema
        main.merge(shard)
    for shard in shards:
        shutil.rmtree(shard)
    with contextlib.suppress(OSError):
        (run_dir / SHARD_DIR).rmdir()
    return len(shards)


def _batches(prompts: Sequence[Prompt], config: RunConfig, rank: int, world: int) -> list[list[_Work]]:
    """This rank's batches: cut from the full, fixed list of (prompt, sample) pairs (suite order) and
    dealt out round-robin over the ranks before anything is filtered, so the ranks agree on who does
    what without talking, and a batch holds the same clips whether one process or N run it (a scorer
    may round a clip's numbers differently next to other clips)."""
    pairs = [
        _Work(p, k, clip_seed(config.seed, p.id, k), None)
        for p in prompts
        for k in range(config.samples_per_prompt)
    ]
    return [pairs[i : i + config.batch_size] for i in range(0, len(pairs), config.batch_size)][rank::world]


def _plan(
    system: str,
    generator: Generator,
    batches: list[list[_Work]],
    config: RunConfig,
    scorers: Sequence[Scorer],
    stores: list[RunStore],
) -> list[list[_Work]]:
    """The batches, each cut down to the pairs of one system that still need audio or scores. A
    system whose audio lives outside the run (``folder``) is re-read every time: its files may have
    changed."""
    if not generator.stores_audio:
        return batches
    stored: dict[tuple[str, int], ClipRecord] = {}
    for st in reversed(stores):  # the shard's own rows win over the main store's
        stored.update(st.clip_rows(system))
    candidates: dict[tuple[str, int], ClipRecord] = {}
    for work in (w for b in batches for w in b):
        rec = stored.get((work.prompt.id, work.sample))
        if (
            rec is not None
            and rec.clip_key is not None
            and rec.error is None
            and rec.prompt_key == work.prompt.content_key
            and rec.source
            and _source_path(config, rec.source).exists()
        ):
            candidates[(work.prompt.id, work.sample)] = rec
    prompt_of = {w.prompt.id: w.prompt for b in batches for w in b}
    incomplete: set[tuple[str, int]] = set()
    for scorer in scorers:  # a stored clip is complete when every scorer has its result
        keys = {
            (rec.clip_key, prompt_key_for(scorer, prompt_of[pid])): (pid, k)
            for (pid, k), rec in candidates.items()
        }
        done: set[tuple[str, str]] = set()
        for st in stores:
            done |= st.done(scorer.id, keys)
        incomplete |= {pair for key, pair in keys.items() if key not in done}
    plan = []
    for batch in batches:
        todo = []
        for w in batch:
            pair = (w.prompt.id, w.sample)
            if pair not in candidates:
                todo.append(w)
            elif pair in incomplete:
                todo.append(dataclasses.replace(w, stored=candidates[pair]))
        if todo:
            plan.append(todo)
    return plan


def _source_path(config: RunConfig, source: str) -> Path:
    path = Path(source)
    return path if path.is_absolute() else config.out / path


def _do_batch(
    system: str,
    generator: Generator,
    batch: Sequence[_Work],
    config: RunConfig,
    scorers: Sequence[Scorer],
    store: RunStore,
    validation: ValidationConfig,
    summary: RunSummary,
    stores: Sequence[RunStore] = (),
) -> None:
    """Get the batch's audio (re-read or generate), write it, score it and commit it as one."""
    got: dict[int, Clip | GenerationFailure] = {}
    fresh = [i for i, w in enumerate(batch) if w.stored is None or not generator.stores_audio]
    for i, w in enumerate(batch):
        if i not in fresh:
            try:
                clip = load_audio(_source_path(config, w.stored.source), validation=validation)
                got[i] = Clip(clip.audio, clip.sample_rate, w.prompt, w.stored.source, clip.warnings)
                summary.loaded += 1
            except (AudioError, OSError):  # the stored file went bad: make it again
                fresh.append(i)
    timing = None
    if fresh:
        fresh.sort()
        try:
            generator.load()  # not timed: the efficiency numbers are generation's alone
            with measure(getattr(generator, "device", "cpu")) as timing:
                made = generator.generate(
                    [batch[i].prompt for i in fresh],
                    [batch[i].seed for i in fresh],
                    config.settings,
                    [batch[i].sample for i in fresh],
                )
            if len(made) != len(fresh):
                raise RuntimeError(f"returned {len(made)} clips for {len(fresh)} prompts")
        except Exception as exc:  # a generator bug fails its batch's clips, not the run
            made = [GenerationFailure(f"{system}: generator failed: {type(exc).__name__}: {exc}")] * len(
                fresh
            )
        got.update(zip(fresh, made))
    settings = generator.resolve(config.settings)
    records, clips = [], []
    for i, w in enumerate(batch):
        clip = got[i]
        base = {"seed": w.seed, **settings} if generator.stores_audio else None
        if isinstance(clip, Clip) and i in fresh and generator.stores_audio:
            clip = _checked(clip, w.prompt)
            if isinstance(clip, Clip):
                rel = _write(config.out, system, w, clip)
                clip = Clip(clip.audio, clip.sample_rate, w.prompt, rel, clip.warnings)
                summary.generated += 1
        elif isinstance(clip, Clip) and i in fresh:
            summary.loaded += 1
        if isinstance(clip, GenerationFailure):
            summary.generation_failed += 1
            summary.errors.append(f"{system}/{w.prompt.id}#{w.sample}: {clip.reason}")
            records.append(
                ClipRecord(system, w.prompt.id, w.sample, None, None, None, error=clip.reason, settings=base)
            )
            continue
        clip = Clip(clip.audio, clip.sample_rate, w.prompt, clip.source, clip.warnings)
        clips.append(clip)
        made_here = timing is not None and i in fresh and generator.stores_audio
        efficiency = timing.per_clip(len(fresh), clip.duration) if made_here else None
        records.append(
            ClipRecord(
                system,
                w.prompt.id,
                w.sample,
                clip.key,
                w.prompt.content_key,
                clip.source,
                clip.sample_rate,
                clip.channels,
                clip.duration,
                clip.warnings,
                settings=base,
                efficiency=efficiency,
            )
        )
    summary.scoring.clips += len(batch)
    score_and_commit(records, clips, scorers, store, summary.scoring, also=stores)


def _checked(clip: Clip, prompt: Prompt) -> Clip | GenerationFailure:
    """A generated clip passes the same checks as a loaded file (NaN/Inf, empty) or is a failure."""
    try:
        warnings = check_audio(clip.audio)
    except AudioError as exc:
        return GenerationFailure(f"generated audio for {prompt.id!r}: {exc}")
    return Clip(clip.audio, clip.sample_rate, prompt, clip.source, warnings)


def _write(run_dir: Path, system: str, work: _Work, clip: Clip) -> str:
    """Write the clip as float WAV (lossless for float32) atomically; the path relative to the run."""
    rel = Path(AUDIO_DIR) / safe_name(system) / f"{safe_name(work.prompt.id)}_{work.sample}.wav"
    path = run_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    data = float_wav_bytes(clip.audio.T, clip.sample_rate)
    try:  # written by Python, so a full disk is an OSError naming the file, not libsndfile's "System error"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    return rel.as_posix()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


__all__ = ["RunConfig", "RunSummary", "StoreError", "dist_env", "merge_shards", "run", "safe_name"]
