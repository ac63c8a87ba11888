"""Frechet distance: agreement with the sqrtm formula, edge cases, streaming statistics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from ttaeval import GaussianStats, frechet_distance


def sqrtm_reference(mu1, s1, mu2, s2) -> float:
    """The formula of audioldm_eval / frechet-audio-distance / fadtk, in float64."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def gaussian_set(rng, n, d, shift=0.0, scale=1.0):
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ mix * scale + shift


@pytest.mark.parametrize("d", [8, 64, 256])
def test_agrees_with_the_sqrtm_formula(d):
    rng = np.random.default_rng(d)
    a = gaussian_set(rng, 4 * d, d)
    b = gaussian_set(rng, 4 * d, d, shift=0.3, scale=1.5)
    sa, sb = GaussianStats.from_embeddings(a), GaussianStats.from_embeddings(b)
    ours = frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov)
    ref = sqrtm_reference(sa.mean, sa.cov, sb.mean, sb.cov)
    assert ours == pytest.approx(ref, rel=1e-6)


def test_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 2.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    # |mu|^2 + sum (sqrt(a) - sqrt(b))^2 = 9 + (1 + 0 + 4)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(14.0, abs=1e-12)


def test_a_set_against_itself_is_exactly_zero():
    rng = np.random.default_rng(0)
    s = GaussianStats.from_embeddings(gaussian_set(rng, 300, 32))
    assert frechet_distance(s.mean, s.cov, s.mean, s.cov) == 0.0


def test_singular_covariances_work_and_warn():
    rng = np.random.default_rng(1)
    d = 64
    a, b = gaussian_set(rng, 20, d), gaussian_set(rng, 30, d, shift=0.5)
    with pytest.warns(UserWarning, match="n <= d"):
        sa, sb = GaussianStats.from_embeddings(a).cov, GaussianStats.from_embeddings(b).cov
    value = frechet_distance(a.mean(0), sa, b.mean(0), sb)
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(sqrtm_reference(a.mean(0), sa, b.mean(0), sb), rel=1e-5)


def test_from_samples_with_fewer_samples_than_dimensions_equals_the_sqrtm_formula():
    """formulas.fad's path for n <= d (PANNs' 2048-d embeddings of a few hundred clips): the distance
    from the samples, no d x d matrix, equal to the formula on the two covariances."""
    from ttaeval.metrics import formulas
    from ttaeval.metrics.frechet import frechet_distance_of_samples

    rng = np.random.default_rng(2)
    d = 64
    a, b = gaussian_set(rng, 20, d), gaussian_set(rng, 30, d, shift=0.5, scale=1.3)
    with pytest.warns(UserWarning, match="n <= d"):
        sa, sb = GaussianStats.from_embeddings(a).cov, GaussianStats.from_embeddings(b).cov
        ref = sqrtm_reference(a.mean(0), sa, b.mean(0), sb)
        assert frechet_distance_of_samples(a, b) == pytest.approx(ref, rel=1e-6)
        assert formulas.fad(a, b) == pytest.approx(ref, rel=1e-6)
        assert formulas.fad(a, a) == 0.0
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance_of_samples(a, b[:, :8])


def test_float16_input_is_promoted_before_summing():
    rng = np.random.default_rng(2)
    x = gaussian_set(rng, 500, 16).astype(np.float16)
    stats = GaussianStats.from_embeddings(x)
    assert stats.total.dtype == np.float64
    np.testing.assert_allclose(stats.cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)


def test_streaming_and_merged_statistics_equal_one_pass():
    rng = np.random.default_rng(3)
    x = gaussian_set(rng, 1000, 24, shift=2.0)
    streamed = GaussianStats(24)
    for chunk in np.array_split(x, 7):
        streamed.update(chunk)
    left, right = GaussianStats.from_embeddings(x[:333]), GaussianStats.from_embeddings(x[333:])
    merged = left.merge(right)
    for stats in (streamed, merged):
        assert stats.count == 1000
        np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_bad_shapes_and_values_are_refused():
    with pytest.raises(ValueError, match="must have 2 dimension"):
        GaussianStats.from_embeddings(np.zeros(10))
    with pytest.raises(ValueError, match="dimension 3, these statistics 4"):
        GaussianStats(4).update(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan, 0]), np.eye(2), np.zeros(2), np.eye(2))
