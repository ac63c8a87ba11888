"""Confidence intervals over prompts and paired comparisons between systems.

The unit of resampling is the prompt: several samples of one prompt are averaged first, so a
system is not credited with extra precision for drawing more samples of the same prompts. Failed
clips (NaN) are left out and counted, never scored as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A mean with its percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n}


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over prompts both systems have, its CI, and a two-sided p-value."""

    mean: float
    low: float
    high: float
    p_value: float
    n: int
    level: float = 0.95

    def to_dict(self) -> dict[str, float | int]:
        return {
            "diff": self.mean,
            "ci_low": self.low,
            "ci_high": self.high,
            "p_value": self.p_value,
            "n": self.n,
        }


def per_prompt_means(values: pd.Series, prompt_ids: pd.Series) -> pd.Series:
    """Average the finite values of each prompt (samples of one prompt count once)."""
    frame = pd.DataFrame({"prompt": prompt_ids.to_numpy(), "value": values.to_numpy(dtype=float)})
    frame = frame[np.isfinite(frame["value"])]
    return frame.groupby("prompt", sort=True)["value"].mean()


def bootstrap_ci(
    values: np.ndarray, *, level: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Estimate:
    """Mean and percentile-bootstrap CI of ``values`` (one per prompt); NaNs are dropped.

    Resampling is seeded, so the same values give the same interval. With fewer than two values the
    interval is undefined (NaN bounds).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, level)
    mean = float(x.mean())
    if x.size < 2 or np.ptp(x) == 0:
        lo = hi = mean if x.size >= 2 else math.nan
        return Estimate(mean, lo, hi, int(x.size), level)
    res = scipy.stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=level,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
        vectorized=True,
    )
    return Estimate(
        mean, float(res.confidence_interval.low), float(res.confidence_interval.high), int(x.size), level
    )


def paired_difference(
    a: pd.Series,
    b: pd.Series,
    *,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> PairedDifference:
    """Compare two systems on the prompts both have a finite value for.

    Args:
        a, b: per-prompt values indexed by prompt id.

    Returns:
        mean(a - b), its percentile-bootstrap CI over prompts, and the two-sided p-value of a paired
        sign-flip permutation test (H0: a and b are exchangeable within each prompt).
    """
    joined = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").dropna()
    d = (joined["a"] - joined["b"]).to_numpy(dtype=float)
    if d.size == 0:
        return PairedDifference(math.nan, math.nan, math.nan, math.nan, 0, level)
    est = bootstrap_ci(d, level=level, n_resamples=n_resamples, seed=seed)
    if np.all(d == 0):
        p = 1.0
    else:
        test = scipy.stats.permutation_test(
            (d,),
            np.mean,
            permutation_type="samples",
            n_resamples=n_resamples,
            alternative="two-sided",
            rng=np.random.default_rng(seed),
            vectorized=True,
        )
        p = float(test.pvalue)
    return PairedDifference(est.mean, est.low, est.high, p, int(d.size), level)
