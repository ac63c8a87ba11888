"""The runner's cost curves: wall time and peak memory of ``ttaeval run`` against the number of clips,
and the cost of re-running a finished run.

Each size runs in a fresh process (``ttaeval.runner.run`` on ``synth:all``, 700 prompts, with more
samples per prompt for more clips; 1 s clips from the ``synth`` generator; the ``signal`` scorer, so
the runner's own costs — generating, writing, planning, committing — are what is measured), which
reports its own peak resident memory (``ru_maxrss``). Expected: time linear in clips, memory flat.
Then the largest run is started again: it must compute nothing, in a small fraction of the time.

Run: ``python benchmarks/bench_runner.py``; writes benchmarks/results/runner.md and runner.png.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
SAMPLES = (1, 3, 7, 14)  # x 700 prompts: 700 ... 9,800 clips
CHILD = """
import json, resource, sys, time
from ttaeval.runner import RunConfig, run
cfg = RunConfig(out=sys.argv[1], systems={"s": "synth"}, suite="synth:all", scorers=["signal"],
                samples_per_prompt=int(sys.argv[2]), duration=1.0, batch_size=64)
start = time.perf_counter()
summary = run(cfg, command="bench")
print(json.dumps({"seconds": time.perf_counter() - start, "generated": summary.generated,
                  "computed": summary.scoring.computed, "skipped": summary.skipped,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def one_run(out: Path, samples: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), str(samples)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in SAMPLES:
            res = one_run(Path(tmp) / f"run{k}", k)
            rows.append({"clips": 700 * k, **res})
            print(rows[-1], flush=True)
        rerun = one_run(Path(tmp) / f"run{SAMPLES[-1]}", SAMPLES[-1])
    first = rows[-1]
    ratio = rerun["seconds"] / first["seconds"]
    OUT.mkdir(exist_ok=True)
    lines = [
        "# ttaeval run: cost against the number of clips",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Command: `python benchmarks/bench_runner.py` "
        f"({time.strftime('%Y-%m-%d')}). One fresh process per row; `synth:all` (700 prompts) x samples, "
        "1 s clips, `signal` scorer, batch 64.",
        "",
        "| clips | wall s | ms / clip | peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for r in rows:
        per_clip = 1000 * r["seconds"] / r["clips"]
        lines.append(f"| {r['clips']} | {r['seconds']:.1f} | {per_clip:.2f} | {r['peak_mib']:.0f} |")
    lines += [
        "",
        f"Re-running the finished {first['clips']}-clip run: {rerun['seconds']:.2f} s, "
        f"{rerun['computed']} scores computed, {rerun['generated']} clips generated, "
        f"{rerun['skipped']} already complete -> **{100 * ratio:.1f}%** of the first run's time "
        "(target ≤ 5%).",
        "",
        "![cost curves](runner.png)",
        "",
    ]
    (OUT / "runner.md").write_text("\n".join(lines))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2))
    a, b = fig.subplots(1, 2)
    clips = [r["clips"] for r in rows]
    a.plot(clips, [r["seconds"] for r in rows], marker="o")
    a.set_xlabel("clips")
    a.set_ylabel("wall time (s)")
    b.plot(clips, [r["peak_mib"] for r in rows], marker="o")
    b.set_xlabel("clips")
    b.set_ylabel("peak RSS (MiB)")
    b.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(OUT / "runner.png", dpi=90)
    print((OUT / "runner.md").read_text())


if __name__ == "__main__":
    main()
