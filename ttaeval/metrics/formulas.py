"""Set-level metrics on embeddings: FAD, FAD-inf and KAD, as pure typed functions.

Embeddings are ``(n, dim)`` arrays (one row per clip or per frame); statistics are float64.
The embedders that make them live in ``ttaeval.embedders``, the registered set metrics that read
them from a run store in ``ttaeval.metrics.set_metrics``; these functions only do the math.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.spatial.distance

from ttaeval.metrics.frechet import GaussianStats, frechet_distance_of_samples


def _check(x: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be (n, dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds NaN/Inf")
    return arr


def fad(embeddings: np.ndarray, reference: np.ndarray | GaussianStats) -> float:
    """Frechet distance between the Gaussian fits of two embedding sets. When both are arrays of no
    more samples than dimensions (singular covariances: e.g. a few hundred 2048-d PANNs embeddings),
    it is computed from the samples (``frechet.frechet_distance_of_samples``, O(n1 n2 d)), not from two
    d x d covariances (O(d^3): seconds for each distance at d = 2048)."""
    if isinstance(reference, GaussianStats):
        return GaussianStats.from_embeddings(_check(embeddings, "embeddings")).frechet_distance(reference)
    ref, gen = _check(reference, "reference"), _check(embeddings, "embeddings")
    if gen.shape[1] == ref.shape[1] and max(len(gen), len(ref)) <= gen.shape[1]:
        return frechet_distance_of_samples(gen, ref)
    return GaussianStats.from_embeddings(gen).frechet_distance(GaussianStats.from_embeddings(ref))


def fad_per_clip(frames: list[np.ndarray], reference: np.ndarray | GaussianStats) -> np.ndarray:
    """Per-clip FAD (fadtk's per-song score): each clip's own frame statistics against the
    reference set's. A clip needs at least two frames (a covariance); NaN otherwise."""
    ref = (
        reference
        if isinstance(reference, GaussianStats)
        else GaussianStats.from_embeddings(_check(reference, "reference"))
    )
    out = np.full(len(frames), np.nan)
    for i, f in enumerate(frames):
        if len(f) >= 2:
            out[i] = GaussianStats.from_embeddings(_check(f, f"clip {i} frames")).frechet_distance(ref)
    return out


@dataclass(frozen=True)
class FadInf:
    """FAD extrapolated to an infinite evaluation set: the intercept of FAD against 1/N."""

    value: float
    slope: float
    sizes: tuple[int, ...]
    fads: tuple[float, ...]


def fad_inf(
    embeddings: np.ndarray,
    reference: np.ndarray | GaussianStats,
    *,
    steps: int = 15,
    min_size: int = 500,
    seed: int = 0,
) -> FadInf:
    """FAD-inf as fadtk defines it: FAD of ``steps`` random subsets of sizes evenly spaced from
    ``min_size`` to n (drawn without replacement, seeded), a least-squares line of FAD against 1/N,
    and its value at 1/N = 0. FAD is biased upwards at finite N; this removes the 1/N term.
    """
    x = _check(embeddings, "embeddings")
    n = x.shape[0]
    if n < 2 or min_size >= n:
        raise ValueError(f"FAD-inf needs more than min_size={min_size} embeddings, got {n}")
    ref = (
        reference
        if isinstance(reference, GaussianStats)
        else GaussianStats.from_embeddings(_check(reference, "reference"))
    )
    rng = np.random.default_rng(seed)
    sizes = tuple(int(s) for s in np.linspace(min_size, n, steps).astype(int))
    fads = tuple(fad(x[rng.choice(n, size, replace=False)], ref) for size in sizes)
    slope, intercept = np.polyfit(1.0 / np.array(sizes, dtype=float), np.array(fads), 1)
    return FadInf(float(intercept), float(slope), sizes, fads)


def kernel_bandwidth(reference: np.ndarray) -> float:
    """Median pairwise Euclidean distance of the reference set (the kernel's bandwidth).

    Taken from the reference set, so that every system is measured with the same kernel (kadtk
    takes it from the evaluated set, against its own README).
    """
    ref = _check(reference, "reference")
    return float(np.median(scipy.spatial.distance.pdist(ref)))


def kad(embeddings: np.ndarray, reference: np.ndarray, *, bandwidth: float | None = None) -> float:
    """Kernel audio distance: the unbiased MMD^2 with a Gaussian kernel exp(-|a-b|^2 / (2 h^2)).

    ``bandwidth`` h defaults to ``kernel_bandwidth(reference)``. Unbiased: diagonal terms are left
    out of the within-set means, so the value can be slightly negative for equal distributions.
    Reported unscaled (kadtk multiplies by 1000).
    """
    x, y = _check(embeddings, "embeddings"), _check(reference, "reference")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("KAD needs at least 2 embeddings in each set")
    h = kernel_bandwidth(y) if bandwidth is None else float(bandwidth)
    gamma = 1.0 / (2.0 * h * h)

    def mean_kernel(a: np.ndarray, b: np.ndarray, same: bool) -> float:
        k = np.exp(-gamma * scipy.spatial.distance.cdist(a, b, "sqeuclidean"))
        if same:
            m = a.shape[0]
            return float((k.sum() - np.trace(k)) / (m * (m - 1)))
        return float(k.mean())

    return mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2.0 * mean_kernel(x, y, False)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def kl_divergence(target: np.ndarray, prediction: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Per-row ``sum p (log p - log(q + eps))`` with ``0 log 0 = 0`` — torch's ``kl_div(log(q + eps),
    p, reduction="sum")`` per row, the form both audioldm-eval and stable-audio-metrics use."""
    p = np.asarray(target, dtype=np.float64)
    q = np.asarray(prediction, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"paired posteriors must be two (n, classes) arrays, got {p.shape} and {q.shape}")
    p_log_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.sum(p_log_p - p * np.log(q + eps), axis=1)


def kl_audioldm(generated_logits: np.ndarray, reference_logits: np.ndarray, kind: str = "softmax") -> float:
    """audioldm-eval's KL: mean over pairs of KL(ref || gen) on PANNs logits made posteriors by
    ``softmax`` (its "KL") or ``sigmoid`` per class (its "KL_Sigmoid"). Rows are paired by clip."""
    squash = {"softmax": _softmax, "sigmoid": _sigmoid}[kind]
    return float(np.mean(kl_divergence(squash(reference_logits), squash(generated_logits))))


def kl_sam(generated_logits: np.ndarray, reference_logits: np.ndarray) -> float:
    """stable-audio-metrics' KL: mean over pairs of KL(gen || ref) on softmax posteriors (PaSST logits
    averaged over windows before the softmax)."""
    return float(np.mean(kl_divergence(_softmax(generated_logits), _softmax(reference_logits))))


@dataclass(frozen=True)
class InceptionScore:
    """Inception score over ``splits`` chunks: their mean and standard deviation."""

    mean: float
    std: float
    splits: tuple[float, ...]


def inception_score(logits: np.ndarray, splits: int = 10, shuffle_seed: int | None = 2020) -> InceptionScore:
    """IS as audioldm-eval computes it: rows shuffled by ``RandomState(shuffle_seed).permutation``
    (None: kept in order), softmax in float64, then per chunk ``i*N//splits : (i+1)*N//splits``
    ``exp(mean_x KL(p(y|x) || p(y)))`` with p(y) the chunk's mean posterior."""
    z = _check(logits, "logits")
    n = len(z)
    if n < splits:
        raise ValueError(f"inception score with {splits} splits needs at least {splits} clips, got {n}")
    if shuffle_seed is not None:
        z = z[np.random.RandomState(shuffle_seed).permutation(n)]
    log_p = z - z.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        chunk = slice(i * n // splits, (i + 1) * n // splits)
        marginal = p[chunk].mean(axis=0, keepdims=True)
        kl = np.sum(p[chunk] * (log_p[chunk] - np.log(marginal)), axis=1)
        scores.append(float(np.exp(kl.mean())))
    return InceptionScore(float(np.mean(scores)), float(np.std(scores)), tuple(scores))
