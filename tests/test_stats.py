"""Bootstrap confidence intervals over prompts and paired comparisons."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ttaeval.metrics.stats import bootstrap_ci, paired_difference, per_prompt_means


def test_bootstrap_ci_matches_a_hand_computed_percentile_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.normal(0.4, 0.1, 200)
    est = bootstrap_ci(x, n_resamples=20_000, seed=1)
    boot = x[np.random.default_rng(7).integers(0, x.size, (20_000, x.size))].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    assert est.mean == pytest.approx(x.mean())
    assert est.low == pytest.approx(low, abs=0.002)
    assert est.high == pytest.approx(high, abs=0.002)
    half_width = 1.96 * x.std(ddof=1) / math.sqrt(x.size)  # normal theory, for scale
    assert est.high - est.low == pytest.approx(2 * half_width, rel=0.1)


def test_bootstrap_is_reproducible_and_drops_nan():
    x = np.array([0.1, 0.5, np.nan, 0.3, 0.9, 0.2])
    a, b = bootstrap_ci(x, seed=3), bootstrap_ci(x, seed=3)
    assert a == b
    assert a.n == 5
    assert a.mean == pytest.approx(0.4)


def test_degenerate_inputs():
    assert bootstrap_ci(np.array([])).n == 0
    one = bootstrap_ci(np.array([0.7]))
    assert one.mean == 0.7 and math.isnan(one.low)
    const = bootstrap_ci(np.full(10, 0.5))
    assert (const.low, const.high) == (0.5, 0.5)


def test_samples_of_one_prompt_count_once():
    values = pd.Series([1.0, 3.0, 10.0, np.nan])
    prompts = pd.Series(["a", "a", "b", "c"])
    means = per_prompt_means(values, prompts)
    assert means.to_dict() == {"a": 2.0, "b": 10.0}


def test_paired_test_finds_a_planted_difference():
    rng = np.random.default_rng(4)
    base = pd.Series(rng.normal(0.5, 0.2, 300), index=[f"p{i}" for i in range(300)])
    better = base + 0.03 + rng.normal(0, 0.05, 300)
    diff = paired_difference(better, base)
    assert diff.p_value < 0.01
    assert diff.low > 0 and diff.mean == pytest.approx(0.03, abs=0.01)


def test_paired_test_finds_nothing_between_identical_systems():
    rng = np.random.default_rng(5)
    a = pd.Series(rng.normal(0.5, 0.2, 100), index=[f"p{i}" for i in range(100)])
    diff = paired_difference(a, a.copy())
    assert diff.mean == 0 and diff.p_value == 1.0


def test_paired_test_false_positive_rate_is_near_the_level():
    rng = np.random.default_rng(6)
    hits = 0
    for _ in range(100):
        a = pd.Series(rng.normal(0, 1, 40))
        b = pd.Series(rng.normal(0, 1, 40))
        hits += paired_difference(a, b, n_resamples=500).p_value < 0.05
    assert hits <= 12  # 5% expected; binomial(100, 0.05) exceeds 12 with p < 0.001


def test_paired_difference_uses_only_shared_prompts():
    a = pd.Series([1.0, 2.0, 3.0], index=["x", "y", "z"])
    b = pd.Series([0.0, np.nan, 1.0, 5.0], index=["x", "y", "z", "w"])
    diff = paired_difference(a, b)
    assert diff.n == 2 and diff.mean == pytest.approx(1.5)


def test_correlations_drop_nan_pairs_and_are_seeded():
    import math

    import scipy.stats

    from ttaeval.metrics.stats import correlation

    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan, 7.0, 8.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 6.0, 5.0, np.nan, 9.0])
    keep = np.isfinite(x) & np.isfinite(y)
    est = correlation(x, y, "KTAU", seed=1)
    assert est.n == 6 and est.mean == pytest.approx(scipy.stats.kendalltau(x[keep], y[keep]).statistic)
    assert est == correlation(x, y, "KTAU", seed=1)  # same seed, same interval
    assert est.low <= est.mean <= est.high
    assert math.isnan(correlation(x, np.ones_like(x), "LCC").mean)  # a constant side has no correlation


def test_holm_adjusts_step_down_and_leaves_missing_p_values_out():
    from ttaeval.metrics.stats import holm

    adjusted = holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])  # m = 4: the NaN is not a test
    assert np.isnan(adjusted[4])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]
    assert holm([]).shape == (0,)
