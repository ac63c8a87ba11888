"""Set-level metrics on embeddings: FAD, FAD-inf and KAD, as pure typed functions.

Embeddings are ``(n, dim)`` arrays (one row per clip or per frame); statistics are float64.
The embedders that make them live in ``ttaeval.embedders``; these functions only do the math.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.spatial.distance

from ttaeval.frechet import GaussianStats


def _check(x: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be (n, dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} holds NaN/Inf")
    return arr


def fad(embeddings: np.ndarray, reference: np.ndarray | GaussianStats) -> float:
    """Frechet distance between the Gaussian fits of two embedding sets."""
    ref = (
        reference
        if isinstance(reference, GaussianStats)
        else GaussianStats.from_embeddings(_check(reference, "reference"))
    )
    return GaussianStats.from_embeddings(_check(embeddings, "embeddings")).frechet_distance(ref)


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
