"""Frechet distance: ours (Cholesky + symmetric eigenvalues, float64) vs the scipy.linalg.sqrtm formula.

The anchor is the formula that audioldm_eval, frechet-audio-distance and fadtk use:
``sqrtm(S1 @ S2)``, real part, trace. Both run on the same float64 statistics in this process; we
report the median of 5 timed repeats after one warm-up, and the relative difference of the results.
Run: ``python benchmarks/bench_frechet.py`` (or ``make bench``); writes benchmarks/results/frechet.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg

from ttaeval.frechet import GaussianStats, frechet_distance

REPEATS = 5


def sqrtm_formula(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def timed(fn, *args) -> tuple[float, list[float]]:
    fn(*args)  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        value = fn(*args)
        times.append(time.perf_counter() - start)
    return value, times


def stats_for(d: int, seed: int):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    a = GaussianStats.from_embeddings(rng.standard_normal((3 * d, d)) @ mix)
    b = GaussianStats.from_embeddings(rng.standard_normal((3 * d, d)) @ mix * 1.3 + 0.2)
    return a.mean, a.cov, b.mean, b.cov


def main() -> str:
    rows = [
        "| d | ours median s (min–max) | sqrtm median s (min–max) | speed-up | rel. difference |",
        "|---|---|---|---|---|",
    ]
    for d in (128, 512, 2048):
        args = stats_for(d, d)
        ours, t_ours = timed(frechet_distance, *args)
        ref, t_ref = timed(sqrtm_formula, *args)
        m_ours, m_ref = statistics.median(t_ours), statistics.median(t_ref)
        rel = abs(ours - ref) / abs(ref)
        rows.append(
            f"| {d} | {m_ours:.4f} ({min(t_ours):.4f}–{max(t_ours):.4f}) | {m_ref:.4f} "
            f"({min(t_ref):.4f}–{max(t_ref):.4f}) | {m_ref / m_ours:.1f}x | {rel:.1e} |"
        )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}"
    )
    text = "\n".join(
        [
            "# Frechet distance: ours vs sqrtm formula",
            "",
            f"Machine: {machine}; {REPEATS} repeats after a warm-up.",
            "",
            *rows,
            "",
        ]
    )
    out = Path(__file__).parent / "results" / "frechet.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    return text


if __name__ == "__main__":
    print(main())
