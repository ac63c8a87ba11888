"""The runner's cost curves: wall time and peak memory of ``ttaeval run`` against the number of clips,
and the cost of re-running a finished run.

Each size runs in a fresh process (``ttaeval.runner.run`` on ``synth:all``, 700 prompts, with more
samples per prompt for more clips; 1 s clips from the ``synth`` generator; the ``signal`` scorer, so
the runner's own costs — generating, writing, planning, committing — are what is measured), which
reports its own peak resident memory (``ru_maxrss``). Expected: time linear in clips, memory flat.
Then the largest run is started again: it must compute nothing, in a small fraction of the time.

Run: ``python benchmarks/bench_runner.py`` (``make bench``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import common

SAMPLES = (1, 2, 4, 8)  # x 700 prompts: 700 ... 5,600 clips
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
        largest = Path(tmp) / f"run{SAMPLES[-1]}"
        reruns = [one_run(largest, SAMPLES[-1]) for _ in range(1 + common.REPEATS)][1:]  # first: warm-up
    first = rows[-1]
    t_rerun = common.Timing.of([r["seconds"] for r in reruns])
    t_first = common.Timing.of([first["seconds"]])
    share = t_rerun.median / t_first.median
    computed = sum(r["computed"] + r["generated"] for r in reruns)
    result = common.Row(
        f"Re-running a finished `ttaeval run` ({first['clips']} clips)", t_rerun, t_first,
        "the first run (once)", share, "≤ 0.05", share <= 0.05 and computed == 0,
        f"{100 * share:.1f}% of the first run; {computed} clips generated or scored again",
    )  # fmt: skip
    table = ["| clips | wall s | ms / clip | peak RSS MiB |", "|---|---|---|---|"]
    table += [
        f"| {r['clips']} | {r['seconds']:.1f} | {1000 * r['seconds'] / r['clips']:.2f} | {r['peak_mib']:.0f} |"  # noqa: E501
        for r in rows
    ]
    details = f"""One fresh process per row (`ttaeval.runner.run`): `synth:all` (700 prompts) x samples
per prompt, 1 s clips from the `synth` generator, the `signal` scorer (so the runner's own costs —
generating, writing, planning, committing — are what is measured), batch 64; peak memory is the
process's `ru_maxrss`. Expected: time linear in clips, memory flat. The re-run row starts the largest
finished run again {1 + common.REPEATS} times (the first is the warm-up).

""" + "\n".join(table)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2))
    a, b = fig.subplots(1, 2)
    clips = [r["clips"] for r in rows]
    a.plot(clips, [r["seconds"] for r in rows], marker="o")
    a.set_xlabel("clips")
    a.set_ylabel("wall time (s)")
    a.set_ylim(bottom=0)
    b.plot(clips, [r["peak_mib"] for r in rows], marker="o")
    b.set_xlabel("clips")
    b.set_ylabel("peak RSS (MiB)")
    b.set_ylim(bottom=0)
    fig.suptitle("ttaeval run: time and peak memory vs number of clips")
    fig.tight_layout()
    fig.savefig(common.RESULTS / "runner.png", dpi=90)
    common.save(
        "runner", "ttaeval run: cost vs number of clips, and re-running", [result], details, ["runner.png"]
    )


if __name__ == "__main__":
    main()
