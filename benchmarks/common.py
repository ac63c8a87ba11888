"""What every benchmark script shares: timing (a warm-up, then repeats: median and min–max), the
machine's description, and the rows it saves for ``RESULTS.md`` (``benchmarks/results/NAME.json``;
``benchmarks/make_results.py`` assembles them)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
REPEATS = 5

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # helpers: tiny tokenizers


@dataclass
class Timing:
    """Seconds over repeated runs."""

    median: float
    low: float
    high: float
    repeats: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Timing:
        return cls(statistics.median(seconds), min(seconds), max(seconds), len(seconds))

    def __str__(self) -> str:
        return f"{_num(self.median)} ({_num(self.low)}–{_num(self.high)})"


def _num(s: float) -> str:
    return f"{s:.3g}" if s < 100 else f"{s:.0f}"


def timed(*fns: Callable[[], Any], repeats: int = REPEATS, warmup: bool = True) -> list[tuple[Any, Timing]]:
    """Time each function: one warm-up call each, then ``repeats`` rounds that call them in turn (so
    drift in the machine's speed touches every side alike). Returns each one's last value and timing."""
    if warmup:
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    values: list[Any] = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            values[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [(v, Timing.of(t)) for v, t in zip(values, times)]


@dataclass
class Row:
    """One comparison of RESULTS.md's summary.

    ``ratio`` is ours / anchor (time, or time share); ``target`` says which ratio passes, ``met``
    whether this run's does; ``note`` how the anchor was run, or by how much and why it misses."""

    comparison: str
    ours: Timing
    anchor: Timing | None
    anchor_name: str
    ratio: float
    target: str
    met: bool
    note: str = ""


def reference_package(name: str):
    """Import a published package an anchor runs (``make test`` installs them); a clear exit if absent."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise SystemExit(
            f"{name} is not installed ({exc}); `make test` installs the reference packages"
        ) from None


def machine() -> str:
    import numpy
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    except OSError:
        pass
    where = f"CUDA ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__} "
        f"on {where}, numpy {numpy.__version__}"
    )


def save(
    name: str, title: str, rows: Sequence[Row], details: str, figures: Sequence[str] = (), script: str = ""
) -> Path:
    """Write ``results/NAME.json``: the rows, a Markdown section of details, figure file names
    (``script``: the command that wrote it, if not ``benchmarks/bench_NAME.py``)."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    record = {
        "title": title,
        "script": script or f"benchmarks/bench_{name}.py",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "rows": [asdict(r) for r in rows],
        "details": details.strip(),
        "figures": list(figures),
    }
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"# {title}\n")
    for r in rows:
        print(f"- {r.comparison}: ours {r.ours}, anchor {r.anchor}, ours/anchor {r.ratio:.3g} -> "
              f"{'met' if r.met else 'MISSED'} ({r.target})")  # fmt: skip
    return out
