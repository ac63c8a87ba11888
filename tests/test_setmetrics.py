"""FAD, FAD-inf and KAD on hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest

from ttaeval.setmetrics import fad, fad_inf, kad, kernel_bandwidth


def test_fad_of_shifted_isotropic_gaussians_is_the_squared_shift():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000, 4))
    assert fad(x + np.array([1.0, 0, 0, 0]), x) == pytest.approx(1.0, abs=1e-9)
    assert fad(x, x) == 0.0


def test_fad_inf_recovers_the_infinite_set_limit():
    """Two sets from the same distribution: FAD -> 0 as N grows; FAD-inf extrapolates there."""
    rng = np.random.default_rng(1)
    d = 16
    ref = rng.standard_normal((50_000, d))
    gen = rng.standard_normal((4_000, d))
    result = fad_inf(gen, ref, min_size=500, steps=8, seed=0)
    assert result.fads[0] > result.fads[-1] > 0  # finite-N bias shrinks with N
    assert abs(result.value) < 0.2 * result.fads[-1]
    assert result.slope > 0
    again = fad_inf(gen, ref, min_size=500, steps=8, seed=0)
    assert again == result  # seeded


def test_fad_inf_refuses_too_few_embeddings():
    with pytest.raises(ValueError, match="more than min_size"):
        fad_inf(np.zeros((100, 2)), np.zeros((100, 2)), min_size=500)


def test_kad_matches_a_hand_computed_mmd():
    x = np.array([[0.0], [1.0], [3.0]])
    y = np.array([[0.0], [2.0]])
    h = 2.0
    k = lambda a, b: np.exp(-((a - b) ** 2) / (2 * h * h))  # noqa: E731
    kxx = (2 * (k(0, 1) + k(0, 3) + k(1, 3))) / 6
    kyy = 2 * k(0, 2) / 2
    kxy = np.mean([k(a, b) for a in (0, 1, 3) for b in (0, 2)])
    assert kad(x, y, bandwidth=h) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-12)


def test_kad_bandwidth_comes_from_the_reference():
    y = np.array([[0.0], [1.0], [3.0]])  # pairwise distances 1, 3, 2 -> median 2
    assert kernel_bandwidth(y) == 2.0
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((300, 3))
    wide = rng.standard_normal((300, 3)) * 10
    assert kad(wide, ref) == pytest.approx(kad(wide, ref, bandwidth=kernel_bandwidth(ref)))
    assert kad(wide, ref) != pytest.approx(kad(wide, ref, bandwidth=kernel_bandwidth(wide)))


def test_kad_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((400, 8))
    same = kad(rng.standard_normal((400, 8)), ref)
    shifted = kad(rng.standard_normal((400, 8)) + 1.0, ref)
    assert abs(same) < 0.01 < shifted
