"""Assemble ``benchmarks/RESULTS.md`` from the rows the benchmark scripts saved
(``benchmarks/results/*.json``): one summary table (ours/anchor ratio and target for every
comparison), then each benchmark's details and figures. Run by ``make bench`` after the scripts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ORDER = ["frechet", "clap_laion", "fad_folder", "judge", "runner", "grpo", "profiles"]


def _timing(t: dict | None) -> str:
    if t is None:
        return "–"
    num = lambda s: f"{s:.3g}" if s < 100 else f"{s:.0f}"  # noqa: E731
    return f"{num(t['median'])} ({num(t['low'])}–{num(t['high'])}), n={t['repeats']}"


def main(total_seconds: float | None = None, script_seconds: dict[str, int] | None = None) -> str:
    found = {p.stem: json.loads(p.read_text()) for p in (HERE / "results").glob("*.json")}
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    machines = sorted({found[n]["machine"] for n in names})
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (each `benchmarks/bench_*.py`, then `benchmarks/make_results.py`). "
        "Times are seconds: the median of the repeats after a warm-up, min–max in brackets, n = repeats. "
        "**ours/anchor** < 1 means ours is faster (for the re-run and the GRPO rows it is a share of "
        "another time of ours, named in the row).",
        "",
        "Machine: " + "; ".join(machines) + ".",
    ]
    if total_seconds:
        each = ", ".join(f"{name} {s} s" for name, s in (script_seconds or {}).items())
        lines.append(
            f"`make bench` took {total_seconds / 60:.1f} min ({time.strftime('%Y-%m-%d')})"
            + (f": {each}." if each else ".")
        )
    lines += [
        "",
        "| comparison | ours, s | anchor | anchor, s | ours/anchor | target | met | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        for r in found[n]["rows"]:
            lines.append(
                f"| {r['comparison']} | {_timing(r['ours'])} | {r['anchor_name']} | {_timing(r['anchor'])} | "
                f"{r['ratio']:.3g} | {r['target']} | {'yes' if r['met'] else '**no**'} | {r['note']} |"
            )
    for n in names:
        rec = found[n]
        lines += ["", f"## {rec['title']}", "", f"`python {rec['script']}` ({rec['date']}).", ""]
        lines.append(rec["details"])
        lines += [f"\n![{fig}](results/{fig})" for fig in rec["figures"]]
    device_check = HERE / "results" / "device_check.md"  # recorded by hand: it runs on a GPU machine
    if device_check.is_file():
        lines += ["", device_check.read_text(encoding="utf-8").rstrip("\n")]
    text = "\n".join(lines) + "\n"
    (HERE / "RESULTS.md").write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    # make bench: TOTAL_SECONDS [SCRIPT=SECONDS ...]
    scripts = {k: int(v) for k, v in (a.split("=", 1) for a in sys.argv[2:])}
    print(main(float(sys.argv[1]) if len(sys.argv) > 1 else None, scripts))
