"""FAD, FAD-inf and KAD on hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest

from ttaeval.metrics.formulas import fad, fad_inf, kad, kernel_bandwidth


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


def test_kl_directions_on_a_hand_computed_pair():
    from ttaeval.metrics.formulas import kl_audioldm, kl_divergence, kl_sam

    ref = np.log([[0.5, 0.5]])
    gen = np.log([[0.9, 0.1]])
    ref_gen = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)  # KL(ref || gen) = 0.5108
    gen_ref = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)  # KL(gen || ref) = 0.3681
    assert kl_audioldm(gen, ref) == pytest.approx(ref_gen, abs=1e-5)  # audioldm-eval: KL(ref || gen)
    assert kl_sam(gen, ref) == pytest.approx(gen_ref, abs=1e-5)  # stable-audio-metrics: KL(gen || ref)
    # sigmoid per class: logits 0 -> 0.5, ln 9 -> 0.9, -ln 9 -> 0.1; sum over classes of p log p/q
    assert kl_audioldm(np.array([[np.log(9), -np.log(9)]]), np.zeros((1, 2)), "sigmoid") == pytest.approx(
        ref_gen, abs=1e-5
    )
    # mean over pairs; a zero target probability contributes nothing
    assert kl_divergence(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[0.5, 0.5], [0.5, 0.5]]), eps=0)[
        0
    ] == pytest.approx(np.log(2))


def test_inception_score_splits_by_hand():
    from ttaeval.metrics.formulas import inception_score

    confident = [[50.0, 0.0], [0.0, 50.0]]  # two sure, different classes: IS = 2
    undecided = [[0.0, 0.0], [0.0, 0.0]]  # uniform posteriors: IS = 1
    result = inception_score(np.array(confident + undecided), splits=2, shuffle_seed=None)
    assert result.splits == pytest.approx((2.0, 1.0), abs=1e-9)
    assert (result.mean, result.std) == pytest.approx((1.5, 0.5), abs=1e-9)
    # shuffling is RandomState(seed).permutation, as audioldm-eval
    logits = np.random.default_rng(0).standard_normal((40, 5))
    perm = np.random.RandomState(2020).permutation(40)
    shuffled = inception_score(logits, splits=10, shuffle_seed=2020)
    assert shuffled.splits == inception_score(logits[perm], splits=10, shuffle_seed=None).splits
    with pytest.raises(ValueError, match="at least 10 clips"):
        inception_score(logits[:5])


def test_per_clip_fad_is_each_clips_frames_against_the_reference():
    import warnings

    from ttaeval.metrics.formulas import fad, fad_per_clip

    rng = np.random.default_rng(3)
    reference = rng.standard_normal((400, 3))
    clips = [rng.standard_normal((50, 3)), rng.standard_normal((50, 3)) + 2.0, rng.standard_normal((1, 3))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = fad_per_clip(clips, reference)
    assert scores[0] == pytest.approx(fad(clips[0], reference))
    assert scores[1] > 10 * scores[0]  # shifted by 2 in each of 3 dims: about 12
    assert np.isnan(scores[2])  # one frame has no covariance


def test_singular_covariances_are_one_summary_warning_not_one_per_row(tmp_path):
    import warnings

    from ttaeval.metrics.set_metrics import evaluate_set_metrics
    from ttaeval.runner import RunConfig, run
    from ttaeval.store import RunStore

    systems = {"a": "synth", "b": "synth,degrade=noise,strength=2", "ref": "synth,seed_offset=1"}
    run(RunConfig(out=tmp_path / "run", systems=systems, suite="synth:demo", scorers=["clap:mini"],
                  reference="ref"))  # fmt: skip
    with RunStore(tmp_path / "run") as store, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = evaluate_set_metrics(store, reference="ref", specs=["fad:clap"], by="dimension")
    singular = [str(w.message) for w in caught if "singular covariances" in str(w.message)]
    assert len(table) == 6 and len(singular) == 1  # 2 systems x 3 dimensions, one line
    assert "(and 5 more)" in singular[0] and "system 'a' in group 'accuracy'" in singular[0]
