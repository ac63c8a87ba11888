"""``ttaeval verify``: check a run store and repair what can be repaired.

Two kinds of damage: pages SQLite cannot read (a torn disk, a copied-while-writing file), found by
``PRAGMA integrity_check``; and cached results that are marked done but whose values are gone
(rows deleted by hand or lost with a damaged page), which a resume would otherwise never recompute.
``repair`` copies every readable row of a damaged store into a fresh one (the damaged file is kept
beside it) and drops incomplete results, so the next ``ttaeval run`` recomputes exactly those.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ttaeval.store import _SCHEMA, STORE_NAME, RunStore

_TABLES = ("meta", "runs", "scorers", "prompts", "systems", "clips", "results", "metric_values", "artefacts")


@dataclass
class Verification:
    """What ``verify`` found (and did)."""

    corrupt: list[str] = field(default_factory=list)
    """SQLite's integrity problems (empty when the file is sound)."""
    salvaged: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per table, (rows kept, rows lost) when a damaged store was rebuilt."""
    incomplete: int = 0
    """Results marked done whose values or artefacts are missing."""
    repaired: bool = False
    backup: Path | None = None

    @property
    def sound(self) -> bool:
        return not self.corrupt and not self.incomplete


def verify(run_dir: str | Path, repair: bool = False) -> Verification:
    """Check the store of ``run_dir``; with ``repair``, rebuild a damaged file from its readable rows
    and drop incomplete results (recomputed by the next run)."""
    path = Path(run_dir) / STORE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no {STORE_NAME})")
    out = Verification()
    db = sqlite3.connect(path)
    try:
        out.corrupt = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
    except sqlite3.DatabaseError as exc:
        out.corrupt = [str(exc)]
    finally:
        db.close()
    if out.corrupt:
        if not repair:
            return out
        out.backup, out.salvaged = _rebuild(path)
    with RunStore(run_dir) as store:
        db = store._db
        incomplete = _incomplete_results(db)
        out.incomplete = len(incomplete)
        if repair and incomplete:
            with store.transaction():
                for key in incomplete:
                    for table in ("results", "metric_values", "artefacts"):
                        db.execute(
                            f"DELETE FROM {table} WHERE clip_key=? AND prompt_key=? AND scorer_id=?", key
                        )
    out.repaired = repair and bool(out.corrupt or out.incomplete)
    return out


def _incomplete_results(db) -> list[tuple[str, str, str]]:
    """(clip, prompt, scorer) keys of ok results missing a metric value, or, for scorers that
    return only artefacts, every artefact."""
    metrics = {sid: len(json.loads(m)) for sid, m in db.execute("SELECT scorer_id, metrics FROM scorers")}
    counts = {
        (c, p, s): n
        for c, p, s, n in db.execute(
            "SELECT clip_key, prompt_key, scorer_id, COUNT(*) FROM metric_values GROUP BY 1, 2, 3"
        )
    }
    with_artefacts = {
        tuple(r) for r in db.execute("SELECT DISTINCT clip_key, prompt_key, scorer_id FROM artefacts")
    }
    bad = []
    for key in db.execute("SELECT clip_key, prompt_key, scorer_id FROM results WHERE ok=1"):
        key = tuple(key)
        wanted = metrics.get(key[2], 0)
        if (wanted and counts.get(key, 0) < wanted) or (not wanted and key not in with_artefacts):
            bad.append(key)
    return bad


def _rebuild(path: Path) -> tuple[Path, dict[str, tuple[int, int]]]:
    """Copy the readable rows of the damaged store at ``path`` into a new file that takes its place;
    the damaged file is kept as ``run.sqlite.damaged-TIME``."""
    fresh = path.with_name(path.name + ".rebuilt")
    fresh.unlink(missing_ok=True)
    new = sqlite3.connect(fresh)
    new.executescript(_SCHEMA)
    old = sqlite3.connect(path)
    counts = {}
    for table in _TABLES:
        kept = lost = 0
        try:
            last = old.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
        except sqlite3.DatabaseError:
            last = 0
        columns = None
        for rowid in range(1, last + 1):  # row by row: one damaged page loses only its rows
            try:
                row = old.execute(f"SELECT * FROM {table} WHERE rowid=?", (rowid,)).fetchone()
            except sqlite3.DatabaseError:
                lost += 1
                continue
            if row is None:
                continue
            columns = columns or ",".join("?" * len(row))
            new.execute(f"INSERT OR REPLACE INTO {table} VALUES ({columns})", row)
            kept += 1
        counts[table] = (kept, lost)
    new.commit()
    new.close()
    old.close()
    backup = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(backup)
    for suffix in ("-wal", "-shm"):  # kept with the damaged file they belong to
        if (side := path.with_name(path.name + suffix)).exists():
            side.rename(backup.with_name(backup.name + suffix))
    fresh.rename(path)
    return backup, counts
