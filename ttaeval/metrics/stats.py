"""Confidence intervals over prompts and paired comparisons between systems.

The unit of resampling is the prompt: several samples of one prompt are averaged first, so a
system is not credited with extra precision for drawing more samples of the same prompts. Failed
clips (NaN) are left out and counted, never scored as 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


def _scipy_stats():
    """``scipy.stats``, imported when first needed: it is a third of the CLIs' start-up time."""
    import scipy.stats

    return scipy.stats


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
    values: np.ndarray,
    *,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    statistic: Callable[..., np.ndarray] = np.mean,
) -> Estimate:
    """Mean (or another ``statistic`` taking ``axis``, such as ``np.median``) and its
    percentile-bootstrap CI of ``values`` (one per prompt); NaNs are dropped.

    Resampling is seeded, so the same values give the same interval. With fewer than two values the
    interval is undefined (NaN bounds).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, level)
    mean = float(statistic(x))
    if x.size < 2 or np.ptp(x) == 0:
        lo = hi = mean if x.size >= 2 else math.nan
        return Estimate(mean, lo, hi, int(x.size), level)
    res = _scipy_stats().bootstrap(
        (x,),
        statistic,
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
        test = _scipy_stats().permutation_test(
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


CORRELATIONS = {
    "LCC": lambda x, y: _scipy_stats().pearsonr(x, y).statistic,
    "SRCC": lambda x, y: _scipy_stats().spearmanr(x, y).statistic,
    "KTAU": lambda x, y: _scipy_stats().kendalltau(x, y).statistic,
}
"""Pearson (linear), Spearman (rank) and Kendall (tau-b) correlation, the names reward-validation
papers (Resonate against RELATE's ratings) report."""


def correlation(
    x: np.ndarray,
    y: np.ndarray,
    kind: str,
    *,
    level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """Correlation ``kind`` (LCC, SRCC, KTAU) of paired values with a seeded percentile-bootstrap CI
    over pairs. Pairs with a NaN on either side are dropped; ``n`` counts the pairs used."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same shape, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    stat = CORRELATIONS[kind]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        value = float(stat(a, b)) if a.size >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0 else math.nan
        return Estimate(value, math.nan, math.nan, int(a.size), level)
    # percentile bootstrap over pairs; resamples whose statistic is undefined (a constant side,
    # likely with few pairs) are left out rather than turning the interval into NaN
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_resamples, a.size))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draws = np.array([stat(a[i], b[i]) for i in idx], dtype=float)
    draws = draws[np.isfinite(draws)]
    alpha = (1 - level) / 2
    low, high = (
        (float(q) for q in np.quantile(draws, [alpha, 1 - alpha])) if draws.size else (math.nan, math.nan)
    )
    return Estimate(float(stat(a, b)), low, high, int(a.size), level)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (family-wise error control without
    independence): the k-th smallest of m is multiplied by m - k + 1, then made monotone and capped
    at 1. NaN p-values (no data) stay NaN and do not count towards m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m, running = len(finite), 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
