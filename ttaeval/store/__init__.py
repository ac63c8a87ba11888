"""The run store: one SQLite file (WAL) in a run directory.

Tables:
    runs       one row per invocation: command, config, package versions, git revision, scorer ids.
    scorers    scorer id -> label (the spec the user wrote), metrics, whether it reads the prompt.
    prompts    the suite's prompts (a prompt id keeps one content within a run directory).
    clips      (system, prompt_id, sample) -> content key of the audio, source, warnings or error.
    results    (clip key, prompt key, scorer id) -> ok / error: the score cache.
    metric_values  one row per metric of a result: value (NULL for NaN) and the reason.
    artefacts  per-clip arrays (embeddings, posteriors) as float32 blobs.
    systems    system -> the generator that made its clips (``ttaeval run``): a stored system is
               never extended by another generator.

The cache is keyed by content only: the clip's PCM hash and, for scorers that read the prompt, the
prompt's content hash (identical audio answering two prompts — silence from a broken model — has
two CLAP scores). Never by path. Every write is an idempotent upsert inside a short transaction,
so a run killed at any point and started again ends with the same rows as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ttaeval.io.prompts import Prompt
from ttaeval.records import Efficiency, ScoreResult, ScorerInfo

STORE_NAME = "run.sqlite"
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT NOT NULL, command TEXT NOT NULL,
    config TEXT NOT NULL, versions TEXT NOT NULL, git_revision TEXT, scorer_ids TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scorers (
    scorer_id TEXT PRIMARY KEY, label TEXT NOT NULL, uses_prompt INTEGER NOT NULL, metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id TEXT PRIMARY KEY, text TEXT NOT NULL, dimension TEXT NOT NULL, attributes TEXT NOT NULL,
    content_key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clips (
    system TEXT NOT NULL, prompt_id TEXT NOT NULL, sample INTEGER NOT NULL, clip_key TEXT,
    prompt_key TEXT, source TEXT, sample_rate INTEGER, channels INTEGER, duration REAL,
    warnings TEXT, error TEXT, settings TEXT, efficiency TEXT,
    PRIMARY KEY (system, prompt_id, sample));
CREATE TABLE IF NOT EXISTS results (
    clip_key TEXT NOT NULL, prompt_key TEXT NOT NULL, scorer_id TEXT NOT NULL, ok INTEGER NOT NULL,
    error TEXT, PRIMARY KEY (clip_key, prompt_key, scorer_id));
CREATE TABLE IF NOT EXISTS metric_values (
    clip_key TEXT NOT NULL, prompt_key TEXT NOT NULL, scorer_id TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, error TEXT, status TEXT NOT NULL DEFAULT 'ok',
    PRIMARY KEY (clip_key, prompt_key, scorer_id, metric));
CREATE TABLE IF NOT EXISTS artefacts (
    clip_key TEXT NOT NULL, prompt_key TEXT NOT NULL, scorer_id TEXT NOT NULL, name TEXT NOT NULL,
    shape TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (clip_key, prompt_key, scorer_id, name));
CREATE TABLE IF NOT EXISTS systems (system TEXT PRIMARY KEY, spec TEXT NOT NULL, identity TEXT NOT NULL);
"""
# Tables a shard holds and a merge copies (runs stay with the main store).
MERGED_TABLES = ("scorers", "prompts", "systems", "clips", "results", "metric_values", "artefacts")
LOCK_NAME = ".lock"


class StoreError(RuntimeError):
    """The run directory cannot be used as asked (another suite's prompts, a lock held)."""


class StorageError(StoreError):
    """The store itself failed: disk full, read-only, corrupt, or written by a newer ttaeval."""


def _storage_error(path: Path, exc: sqlite3.Error) -> StorageError:
    """A SQLite error as a ``StorageError`` naming the store and saying what to do."""
    text = str(exc)
    hint = {
        "disk is full": "free some disk space and run again: the committed work is kept",
        "readonly": "the run folder is read-only: copy it somewhere writable",
        "not a database": "the store is corrupt: restore it, or start a new run folder",
        "malformed": "the store is corrupt: `ttaeval verify` tells what is left; or start a new run folder",
        "unable to open": "the run folder cannot be written: check its permissions",
    }
    why = next((h for k, h in hint.items() if k in text), "")
    return StorageError(f"{path}: {text}" + (f" ({why})" if why else ""))


class _Cursor(sqlite3.Cursor):
    """A cursor whose SQLite errors name the store (pandas reads through cursors; pages are read as
    rows are fetched, so fetching is guarded as well as executing)."""

    def _guarded(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except sqlite3.Error as exc:
            raise _storage_error(self.connection.store_path, exc) from exc  # type: ignore[attr-defined]

    def execute(self, *args: Any) -> sqlite3.Cursor:
        return self._guarded(super().execute, *args)

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        return self._guarded(super().executemany, *args)

    def fetchone(self) -> Any:
        return self._guarded(super().fetchone)

    def fetchmany(self, *args: Any) -> list[Any]:
        return self._guarded(super().fetchmany, *args)

    def fetchall(self) -> list[Any]:
        return self._guarded(super().fetchall)

    def __next__(self) -> Any:
        return self._guarded(super().__next__)


class _Connection(sqlite3.Connection):
    """A connection whose every statement goes through ``_Cursor``."""

    store_path = Path()

    def cursor(self, factory: type = _Cursor) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        return self.cursor().execute(*args)

    def executemany(self, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        return self.cursor().executemany(*args)

    def executescript(self, script: str) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().executescript(script)
        except sqlite3.Error as exc:
            raise _storage_error(self.store_path, exc) from exc


class RunLock:
    """An exclusive lock on a run directory while a process writes to it.

    ``flock`` on ``RUN_DIR/.lock``: the kernel releases it when the process dies, even by SIGKILL,
    so a killed run never leaves a stale lock; a second writer is refused with the holder's pid.
    The lock is held until ``release()``, the end of a ``with`` block, or the object being garbage
    collected — keep a reference. ``owner`` names the tool in the refusal (resonate_train's trainers
    lock their run folders too).
    """

    def __init__(self, run_dir: str | Path, owner: str = "ttaeval") -> None:
        import fcntl

        self._fd = -1  # set first: __del__ runs even when this constructor raises
        path = Path(run_dir) / LOCK_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"{run_dir} is in use by another {owner} process (pid {holder}); wait for it to finish "
                "or use another run directory"
            ) from None
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:  # (no import here: __del__ may run at interpreter shutdown)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class ClipRecord:
    """Where one (system, prompt, sample) stands: its audio's content key, or why there is none."""

    system: str
    prompt_id: str
    sample: int
    clip_key: str | None
    prompt_key: str | None
    source: str | None
    sample_rate: int | None = None
    channels: int | None = None
    duration: float | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    settings: dict[str, Any] | None = None
    efficiency: Efficiency | None = None
    """How long and how much memory its generation took (None: not generated by the run)."""


def prompt_key_for(scorer: ScorerInfo, prompt: Prompt | None) -> str:
    """The prompt part of a cache key: the prompt's content hash for scorers that read it, else ''."""
    return prompt.content_key if scorer.uses_prompt and prompt is not None else ""


class RunStore:
    """A run directory's SQLite store. Use as a context manager, or call ``close``."""

    def __init__(self, run_dir: str | Path, *, check: bool = True, read_only: bool = False) -> None:
        """Open (or create) the store of ``run_dir``; with ``check``, SQLite's quick integrity check
        runs first, so a damaged store is refused rather than half-read. ``read_only`` opens an
        existing store without writing anything (a run folder on a read-only share is readable)."""
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STORE_NAME
        if not read_only:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            if read_only:  # ``immutable`` where not even WAL's shared-memory file may be made
                mode = "ro" if os.access(self.run_dir, os.W_OK) else "ro&immutable=1"
                uri = f"{self.path.resolve().as_uri()}?mode={mode}"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, factory=_Connection)
            else:
                self._db = sqlite3.connect(self.path, isolation_level=None, timeout=60, factory=_Connection)
        except sqlite3.Error as exc:
            raise _storage_error(self.path, exc) from exc
        self._db.store_path = self.path
        try:
            self._open(check, read_only)
        except BaseException:
            self._db.close()
            raise

    def _open(self, check: bool, read_only: bool) -> None:
        if not read_only:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None and not read_only:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path}: schema {row[0]} is newer than this ttaeval ({SCHEMA_VERSION}): upgrade ttaeval"
            )
        elif row is None or int(row[0]) < SCHEMA_VERSION:
            if read_only:
                raise StorageError(f"{self.path}: an older schema: open it once where it can be written")
            self._migrate(int(row[0]))
        if check:
            problems = self.integrity_problems(quick=True)
            if problems:
                raise StorageError(
                    f"{self.path}: the store is corrupt ({problems[0]}); `ttaeval verify "
                    f"{self.run_dir}` tells what can be kept"
                )

    def _migrate(self, version: int) -> None:
        """Bring a store of an older schema up to date, in one transaction."""
        with self.transaction():
            if version < 2:  # a value's status was an "n/a: " prefix of its reason
                self._db.execute("ALTER TABLE metric_values ADD COLUMN status TEXT NOT NULL DEFAULT 'ok'")
                self._db.execute(
                    "UPDATE metric_values SET status = CASE WHEN error LIKE 'n/a: %' THEN 'n/a' "
                    "WHEN value IS NULL THEN 'failed' ELSE 'ok' END, "
                    "error = CASE WHEN error LIKE 'n/a: %' THEN substr(error, 6) ELSE error END"
                )
            if version < 3:  # clips made before the efficiency numbers were recorded have none
                self._db.execute("ALTER TABLE clips ADD COLUMN efficiency TEXT")
            self._db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))

    def integrity_problems(self, quick: bool = False) -> list[str]:
        """SQLite's integrity check (``quick_check`` when ``quick``): the problems, none when sound."""
        try:
            rows = self._db.execute(f"PRAGMA {'quick_check' if quick else 'integrity_check'}").fetchall()
        except StorageError as exc:  # too damaged to check: SQLite's own words
            return [str(exc.__cause__ or exc)]
        return [r[0] for r in rows if r[0] != "ok"]

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back itself (disk full)
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- writes ------------------------------------------------------------------------------------
    def register_scorers(self, scorers: Sequence[ScorerInfo]) -> None:
        """Record each scorer's id, label and metrics (what the tables need to name and orient them)."""
        with self.transaction():
            self._register_scorers(scorers)

    def _register_scorers(self, scorers: Sequence[ScorerInfo]) -> None:
        for s in scorers:
            metrics = [
                {"name": m.name, "higher_is_better": m.higher_is_better, "range": list(m.range)}
                for m in s.metrics
            ]
            self._db.execute(
                "INSERT OR REPLACE INTO scorers VALUES (?, ?, ?, ?)",
                (s.id, s.label, int(s.uses_prompt), json.dumps(metrics)),
            )

    def record_run(self, command: str, config: dict[str, Any], scorers: Sequence[ScorerInfo]) -> int:
        """Append this invocation to the manifest and register its scorers."""
        with self.transaction():
            self._register_scorers(scorers)
            cur = self._db.execute(
                "INSERT INTO runs (started, command, config, versions, git_revision, scorer_ids) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    command,
                    json.dumps(config, default=str),
                    json.dumps(package_versions()),
                    git_revision(),
                    json.dumps([s.id for s in scorers]),
                ),
            )
        return int(cur.lastrowid)

    def add_prompts(self, prompts: Iterable[Prompt]) -> None:
        """Record the suite's prompts; a prompt id already stored with other content is an error."""
        prompts = list(prompts)
        stored = dict(self._db.execute("SELECT prompt_id, content_key FROM prompts").fetchall())
        for p in prompts:
            if p.id in stored and stored[p.id] != p.content_key:
                raise StoreError(
                    f"{self.run_dir}: prompt {p.id!r} is already stored with different text or attributes; "
                    "use a new run directory for another suite"
                )
        with self.transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO prompts VALUES (?, ?, ?, ?, ?)",
                [(p.id, p.text, p.dimension, json.dumps(p.attributes), p.content_key) for p in prompts],
            )

    def put_clip(self, rec: ClipRecord) -> None:
        """Store where a clip stands; names and messages that UTF-8 cannot hold (a file name's
        undecodable bytes) are stored with those bytes escaped, never refused."""
        self._db.execute(
            "INSERT OR REPLACE INTO clips VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                _text(rec.system),
                _text(rec.prompt_id),
                rec.sample,
                rec.clip_key,
                rec.prompt_key,
                _text(rec.source),
                rec.sample_rate,
                rec.channels,
                rec.duration,
                _text("; ".join(rec.warnings)) or None,
                _text(rec.error),
                json.dumps(rec.settings) if rec.settings is not None else None,
                rec.efficiency.to_json() if rec.efficiency is not None else None,
            ),
        )

    def put_result(self, clip_key: str, prompt_key: str, scorer_id: str, result: ScoreResult) -> None:
        """Store one clip's result; a result with no value at all is kept as failed (retried later)."""
        key = (clip_key, prompt_key, scorer_id)
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
            (*key, int(not result.failed), result.error),
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO metric_values VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    *key,
                    name,
                    value if math.isfinite(value) else None,
                    result.errors.get(name) or result.not_applicable.get(name),
                    result.status(name),
                )
                for name, value in result.values.items()
            ],
        )
        for name, array in result.artefacts.items():
            arr = np.ascontiguousarray(array, dtype=np.float32)
            self._db.execute(
                "INSERT OR REPLACE INTO artefacts VALUES (?, ?, ?, ?, ?, ?)",
                (*key, name, json.dumps(list(arr.shape)), arr.tobytes()),
            )

    def forget_clips(self, system: str) -> None:
        """Drop a system's clip rows (its results stay cached by content): for a folder scored anew,
        whose files may have gone since."""
        with self.transaction():
            self._db.execute("DELETE FROM clips WHERE system=?", (system,))

    def claim_system(self, system: str, spec: str, identity: dict[str, Any]) -> None:
        """Record which generator makes ``system``'s clips; another generator under the same name is
        refused (its stored clips would be mixed with the new ones)."""
        ident = json.dumps(identity, sort_keys=True)
        row = self._db.execute("SELECT spec, identity FROM systems WHERE system=?", (system,)).fetchone()
        if row is None:
            self._db.execute("INSERT INTO systems VALUES (?, ?, ?)", (system, spec, ident))
        elif row[1] != ident:
            raise StoreError(
                f"{self.run_dir}: system {system!r} was generated by {row[0]!r}; it cannot now be "
                f"{spec!r}. Give the new system another name, or use a new run directory."
            )

    def merge(self, other: str | Path) -> None:
        """Copy every row of another store (a rank's shard) into this one, in one transaction.
        Rows are idempotent upserts, so merging the same shard twice changes nothing."""
        other_path = Path(other)
        other_path = other_path / STORE_NAME if other_path.is_dir() else other_path
        self._db.execute("ATTACH DATABASE ? AS shard", (str(other_path),))
        try:
            with self.transaction():
                for table in MERGED_TABLES:
                    self._db.execute(f"INSERT OR REPLACE INTO main.{table} SELECT * FROM shard.{table}")
        finally:
            self._db.execute("DETACH DATABASE shard")

    # -- reads -------------------------------------------------------------------------------------
    def clip_rows(self, system: str) -> dict[tuple[str, int], ClipRecord]:
        """The stored clips of one system by (prompt id, sample)."""
        cur = self._db.execute(
            "SELECT prompt_id, sample, clip_key, prompt_key, source, error FROM clips WHERE system=?",
            (system,),
        )
        return {
            (pid, sample): ClipRecord(system, pid, sample, key, pkey, source, error=error)
            for pid, sample, key, pkey, source, error in cur
        }

    def artefacts(self, scorer_id: str, name: str) -> pd.DataFrame:
        """One artefact of one scorer for every clip: columns system, prompt_id, sample, array."""
        query = """
            SELECT c.system, c.prompt_id, c.sample, a.shape, a.data
            FROM clips c JOIN scorers s ON s.scorer_id = ?
            JOIN artefacts a ON a.clip_key = c.clip_key AND a.scorer_id = s.scorer_id AND a.name = ?
             AND a.prompt_key = CASE WHEN s.uses_prompt THEN c.prompt_key ELSE '' END
            ORDER BY c.system, c.prompt_id, c.sample
        """
        rows = self._db.execute(query, (scorer_id, name)).fetchall()
        return pd.DataFrame(
            [
                (system, pid, sample, np.frombuffer(data, dtype=np.float32).reshape(json.loads(shape)))
                for system, pid, sample, shape, data in rows
            ],
            columns=["system", "prompt_id", "sample", "array"],
        )

    def has_artefacts(self, scorer_id: str, name: str) -> bool:
        """Whether any clip has this artefact of this scorer (without reading the arrays)."""
        row = self._db.execute(
            "SELECT 1 FROM artefacts WHERE scorer_id=? AND name=? LIMIT 1", (scorer_id, name)
        ).fetchone()
        return row is not None

    def done(self, scorer_id: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which (clip key, prompt key) pairs already have a successful result for this scorer."""
        keys = list(dict.fromkeys(keys))
        found: set[tuple[str, str]] = set()
        for start in range(0, len(keys), 400):
            chunk = keys[start : start + 400]
            where = " OR ".join(["(clip_key=? AND prompt_key=?)"] * len(chunk))
            rows = self._db.execute(
                f"SELECT clip_key, prompt_key FROM results WHERE scorer_id=? AND ok=1 AND ({where})",
                [scorer_id, *[v for k in chunk for v in k]],
            )
            found.update((a, b) for a, b in rows)
        return found

    def artefact(self, clip_key: str, prompt_key: str, scorer_id: str, name: str) -> np.ndarray | None:
        row = self._db.execute(
            "SELECT shape, data FROM artefacts WHERE clip_key=? AND prompt_key=? AND scorer_id=? AND name=?",
            (clip_key, prompt_key, scorer_id, name),
        ).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[1], dtype=np.float32).reshape(json.loads(row[0]))

    def runs(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT * FROM runs ORDER BY id")
        cols = [c[0] for c in cur.description]
        out = []
        for row in cur:
            rec = dict(zip(cols, row))
            for k in ("config", "versions", "scorer_ids"):
                rec[k] = json.loads(rec[k])
            out.append(rec)
        return out

    def scorers(self) -> pd.DataFrame:
        frame = pd.read_sql_query("SELECT * FROM scorers ORDER BY label", self._db)
        frame["metrics"] = frame["metrics"].map(json.loads)
        return frame

    def systems(self) -> pd.DataFrame:
        """The generated systems: system, the generator spec, its identity (JSON)."""
        return pd.read_sql_query("SELECT * FROM systems ORDER BY system", self._db)

    def prompts(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM prompts ORDER BY prompt_id", self._db)

    def prompt_groups(self, by: str) -> pd.Series:
        """prompt_id -> the prompt's value of ``by``: ``dimension`` or any attribute (``event_count``,
        ``event_relation``, ``perturbation_type``, ...); prompts without it get ``"–"``."""
        prompts = self.prompts()
        if by == "dimension":
            values = prompts["dimension"]
        else:
            attrs = prompts["attributes"].map(json.loads)
            known = sorted(
                {k for a in attrs for k, v in a.items() if isinstance(v, str | int | float | bool)}
            )
            if by not in known:
                raise ValueError(
                    f"no prompt attribute {by!r}; group by dimension or one of: {', '.join(known)}"
                )
            values = attrs.map(lambda a: a.get(by, "–"))
        return pd.Series(values.map(str).to_numpy(), index=prompts["prompt_id"].to_numpy(), name=by)

    def clips(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM clips ORDER BY system, prompt_id, sample", self._db)

    def scores(self) -> pd.DataFrame:
        """Long table: one row per clip, scorer and metric: the value, its status (ok, failed, n/a)
        and, for NaN, the reason."""
        query = """
            SELECT c.system, c.prompt_id, c.sample, s.label AS scorer, s.scorer_id, v.metric, v.value,
                   v.error, v.status
            FROM clips c
            JOIN scorers s
            JOIN metric_values v
              ON v.clip_key = c.clip_key AND v.scorer_id = s.scorer_id
             AND v.prompt_key = CASE WHEN s.uses_prompt THEN c.prompt_key ELSE '' END
            ORDER BY c.system, c.prompt_id, c.sample, s.label, v.metric
        """
        frame = pd.read_sql_query(query, self._db)
        frame["value"] = frame["value"].astype(float)
        return frame


def _text(value: str | None) -> str | None:
    """Text SQLite can store: what UTF-8 cannot encode (surrogates) as backslash escapes."""
    return None if value is None else value.encode("utf-8", "backslashreplace").decode("utf-8")


def package_versions() -> dict[str, str]:
    """Versions that can change the numbers: Python and the packages on the scoring path."""
    versions = {"python": platform.python_version()}
    for pkg in ("ttaeval", "numpy", "scipy", "soundfile", "soxr", "pyloudnorm", "torch", "transformers"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    """The ttaeval source tree's commit (with '+dirty' for local changes), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None
